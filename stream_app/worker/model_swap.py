"""Hot model swap: workers switch models between micro-batches, without a restart.

Two ways to publish a new checkpoint (both may be used):

- **A watched directory** (``SEQSTREAM_MODEL_WATCH_DIR``): :func:`publish_checkpoint` copies a
  checkpoint directory into it as ``<model_version>/`` and then atomically replaces the file
  ``LATEST`` (one line: that subdirectory's name). Workers poll ``LATEST``
  (``SEQSTREAM_MODEL_POLL_S``); a half-copied checkpoint is never named there.
- **The control topic** (``settings.topic("control")``): a signed JSON message
  ``{"command": "load_model", "path": "/models/v2", "issued_at_ms": ..., "hmac": ...}``
  (:func:`send_load_model`, ``seqstream publish-model``). Anyone who can write one Kafka topic
  must not choose the model served, so a worker acts on a control record only when
  ``SEQSTREAM_CONTROL_KEY_FILE`` is set and the record's HMAC-SHA256 (over command, path and
  issue time) verifies with that key, the record is newer than the last one applied and at
  most ``SEQSTREAM_CONTROL_MAX_AGE_S`` old, and the path resolves inside
  ``SEQSTREAM_MODEL_ROOT``. Every worker reads the topic without a consumer group (each sees
  every record), from its end at start: a restarted worker starts from
  ``SEQSTREAM_MODEL_PATH`` (or the watched directory's ``LATEST``), never from an old record.

Every model named either way is loaded and then verified with a trial batch
(:func:`model_core.verify.verify_model`: shapes, index ranges, finite values) before it is
applied; one that fails to load or verify is never applied: the worker keeps its model,
logs the reason and publishes a critical alert (``model_swap``) on the alerts topic.

Loading runs off the event loop (a thread); the loaded model is *applied* by the agent at
the start of the next batch (:meth:`ModelSwapper.apply_pending`), so each batch is scored by
one model, every prediction names the ``model_version`` that made it, and no event is dropped
or scored twice by the swap (offsets and state are untouched).

**Vocabulary.** User state holds item *indices*, tagged with the vocabulary they refer to
(``UserState.vocab_tag``, 28 bits of the vocabulary fingerprint; 0 = untagged, read as the
vocabulary the worker started with). When the new model's vocabulary differs, a state read
with an old tag is **remapped** through the item ids of that old vocabulary (kept in memory
for every model this worker has loaded): items the new vocabulary lacks become index 0
(unknown), the stored last prediction is remapped the same way. A state whose tag is unknown
to this worker (its old model was loaded only by a worker that has since died) cannot be
remapped: its items are set to 0 (the sequence restarts for the model, event-id hashes are
kept so redeliveries are still recognised) and its last prediction is dropped, so its next
event is not scored. Both cases are counted (``remapped`` / ``reset``).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_core.sequence_state import UserState
from stream_app.kafka.security import kafka_python_kwargs

log = logging.getLogger("seqstream.model_swap")

SWAP_MARK = "seqstream model swapped"
LATEST = "LATEST"


def vocab_tag(vocab) -> int:
    """28-bit non-zero tag of a vocabulary (from its fingerprint)."""
    return int(vocab.fingerprint()[:7], 16) or 1


def publish_checkpoint(checkpoint_dir: str | Path, watch_dir: str | Path,
                       name: str | None = None) -> Path:
    """Copy a checkpoint into ``watch_dir/<name>`` and point ``LATEST`` at it (atomically)."""
    from model_core.checkpoint import read_meta

    src = Path(checkpoint_dir)
    name = name or str(read_meta(src).get("model_version") or src.name)
    dst_root = Path(watch_dir)
    dst_root.mkdir(parents=True, exist_ok=True)
    dst = dst_root / name
    if not dst.exists():
        tmp = dst_root / f".{name}.incoming"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        os.replace(tmp, dst)
    pointer = dst_root / f".{LATEST}.tmp"
    pointer.write_text(name + "\n")
    os.replace(pointer, dst_root / LATEST)
    return dst


def control_key(settings) -> bytes | None:
    """The control records' HMAC key (``SEQSTREAM_CONTROL_KEY_FILE``), or None when unset."""
    from schemas.exceptions import SeqstreamError

    path = settings.control_key_file
    if not path:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as e:
        raise SeqstreamError(f"SEQSTREAM_CONTROL_KEY_FILE={path}: cannot read it ({e.strerror})"
                             ) from None
    if len(key) < 16:
        raise SeqstreamError(f"SEQSTREAM_CONTROL_KEY_FILE={path}: the key must be at least 16 "
                             "bytes (e.g. `head -c 32 /dev/urandom | base64 > FILE`)")
    return key


def sign_control(key: bytes, command: str, path: str, issued_at_ms: int) -> str:
    import hashlib
    import hmac

    msg = f"{command}\n{path}\n{issued_at_ms}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def check_control(record: dict, key: bytes, newer_than_ms: int, now_ms: int,
                  max_age_s: float) -> str | None:
    """The reason a control record is refused, or None when it may be acted on."""
    import hmac

    command, path = record.get("command"), record.get("path")
    issued = record.get("issued_at_ms")
    if command != "load_model" or not isinstance(path, str) or not path:
        return "not a load_model record with a path"
    if not isinstance(issued, int) or isinstance(issued, bool):
        return "no issued_at_ms"
    sig = record.get("hmac")
    if not isinstance(sig, str) or not hmac.compare_digest(
            sig, sign_control(key, command, path, issued)):
        return "its HMAC does not verify with this worker's control key"
    if issued <= newer_than_ms:
        return "not newer than the last control record applied"
    if now_ms - issued > max_age_s * 1000:
        return f"issued {(now_ms - issued) / 1000:.0f} s ago (limit {max_age_s:.0f} s)"
    return None


def inside_root(path: str | Path, root: str | Path | None) -> bool:
    """``path`` (links resolved) lies inside ``root`` (links resolved)."""
    if not root:
        return False
    p, r = Path(path).resolve(), Path(root).resolve()
    return p == r or r in p.parents


def send_load_model(settings, path: str | Path, now_ms: int | None = None) -> None:
    """Ask every worker (control topic) to load the checkpoint at ``path`` (a signed record:
    needs ``SEQSTREAM_CONTROL_KEY_FILE``, the same key the workers have)."""
    import time

    import orjson

    from schemas.exceptions import SeqstreamError
    from stream_app.kafka.replay import make_producer
    from stream_app.kafka.topics import ensure_topics

    key = control_key(settings)
    if key is None:
        raise SeqstreamError("control records are signed: set SEQSTREAM_CONTROL_KEY_FILE to the "
                             "key file the workers use")
    issued = int(time.time() * 1000) if now_ms is None else now_ms
    record = {"command": "load_model", "path": str(path), "issued_at_ms": issued}
    record["hmac"] = sign_control(key, "load_model", str(path), issued)
    ensure_topics(settings, ("control",))
    producer = make_producer(settings)
    try:
        producer.send(settings.topic("control"), key=b"model", value=orjson.dumps(record))
        producer.flush()
    finally:
        producer.close()


@dataclass
class SwapStats:
    swaps: int = 0
    remapped: int = 0
    reset: int = 0
    failed_loads: int = 0
    refused_controls: int = 0


class ModelSwapper:
    """Polls for a new checkpoint, loads it in a thread, applies it between batches."""

    def __init__(self, settings, processor, on_swap=None) -> None:
        self.settings = settings
        self.processor = processor
        self.on_swap = on_swap  # called with the new model after it is applied
        model = processor.model
        self.tag = vocab_tag(model.vocab)
        self.initial_tag = self.tag
        self._vocabs = {self.tag: model.vocab}
        self._maps: dict[tuple[int, int], np.ndarray] = {}
        self._pending = None
        self._lock = threading.Lock()
        self._loaded_name: str | None = (str(Path(settings.model_path).resolve())
                                         if settings.model_path else None)
        self._last_watched: Path | None = None
        self._control = None
        self._control_failed = False
        self._control_key = control_key(settings) if hasattr(settings, "control_key_file") \
            else None
        self._last_control_ms = 0
        self.failures: list[str] = []  # reasons not yet published as alerts (agent side)
        self.stats = SwapStats()

    # ------------------------------------------------------------------ polling (thread)
    def poll(self) -> None:
        """Check the watched directory and the control topic; load a new model if named.

        Blocking (file and Kafka reads, checkpoint load): run it in a thread.
        """
        # a change of LATEST, or a control message, names a model (the newest one wins)
        path = None
        watched = self._watched_path()
        if watched is not None and watched != self._last_watched:
            self._last_watched = path = watched
        for p in self._control_paths():
            path = p
        if path is None:
            return
        key = str(Path(path).resolve())
        if key == self._loaded_name:
            return
        self._loaded_name = key
        try:
            from model_core.checkpoint import load_model
            from model_core.verify import verify_model

            model = load_model(path, device=self.settings.device)
            verify_model(model, self.settings.top_k, str(path))
        except Exception as e:  # a bad checkpoint must not stop the worker
            self.stats.failed_loads += 1
            self._fail(f"model swap to {path} refused, the current model stays: {e}")
            return
        with self._lock:
            self._pending = model

    def _fail(self, reason: str) -> None:
        log.error("%s", reason)
        with self._lock:
            self.failures.append(reason)

    def take_failures(self) -> list[str]:
        with self._lock:
            out, self.failures = self.failures, []
        return out

    def _watched_path(self) -> Path | None:
        d = self.settings.model_watch_dir
        if not d:
            return None
        pointer = Path(d) / LATEST
        try:
            name = pointer.read_text().strip()
        except OSError:
            return None
        return Path(d) / name if name else None

    def _control_paths(self) -> list[str]:
        import time

        import orjson

        if self._control_failed:
            return []
        try:
            if self._control is None:
                self._control = _control_consumer(self.settings)
            out = []
            for recs in self._control.poll(timeout_ms=100, max_records=1000).values():
                for r in recs:
                    try:
                        msg = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        msg = None
                    path = self._accept_control(msg, int(time.time() * 1000), r.offset)
                    if path is not None:
                        out.append(path)
            return out
        except Exception as e:
            self._control_failed = True
            log.error("control topic unavailable, swaps only through the watched directory: "
                      "%s", e)
            return []

    def _accept_control(self, msg, now_ms: int, offset: int = -1) -> str | None:
        """The path of an acceptable control record, else None (the refusal logged and
        queued as an alert)."""
        where = f"control record at offset {offset}"
        if not isinstance(msg, dict):
            reason = "not a JSON object"
        elif self._control_key is None:
            reason = "no SEQSTREAM_CONTROL_KEY_FILE is set, so control records are ignored"
        else:
            reason = check_control(msg, self._control_key, self._last_control_ms, now_ms,
                                   self.settings.control_max_age_s)
            if reason is None and not inside_root(msg["path"], self.settings.model_root):
                reason = (f"{msg['path']} is not inside SEQSTREAM_MODEL_ROOT "
                          f"({self.settings.model_root or 'unset'})")
        if reason is not None:
            self.stats.refused_controls += 1
            self._fail(f"{where} refused: {reason}")
            return None
        self._last_control_ms = msg["issued_at_ms"]
        return str(msg["path"])

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    # ------------------------------------------------------------------ agent side
    def apply_pending(self) -> bool:
        """Switch to a loaded model (call between batches, on the agent's task)."""
        with self._lock:
            model, self._pending = self._pending, None
        if model is None:
            return False
        s = self.settings
        self.processor.set_model(model, max_len=s.max_seq_len, k=s.top_k,
                                 exclude_history=s.exclude_history)
        self.tag = vocab_tag(model.vocab)
        self._vocabs[self.tag] = model.vocab
        self.stats.swaps += 1
        if self.on_swap is not None:
            self.on_swap(model)
        print(f"{SWAP_MARK} to {model.version}", flush=True)
        log.info("model swapped to %s", model.version)
        return True

    def adapt(self, st: UserState) -> UserState:
        """A state read from the table, with its item indices in the current vocabulary."""
        tag = st.vocab_tag or self.initial_tag
        if tag == self.tag:
            st.vocab_tag = self.tag
            return st
        old = self._vocabs.get(tag)
        if old is None:
            st.items = np.zeros_like(st.items)
            st.last_pred_items = np.zeros(0, dtype=np.int32)
            st.last_pred_action = -1
            self.stats.reset += 1
        else:
            m = self._map(tag, old)
            st.items = m[st.items]
            st.last_pred_items = m[st.last_pred_items]
            self.stats.remapped += 1
        st.vocab_tag = self.tag
        return st

    def _map(self, tag: int, old) -> np.ndarray:
        m = self._maps.get((tag, self.tag))
        if m is None:
            new = self._vocabs[self.tag]
            m = np.zeros(len(old), dtype=np.int32)
            for i in range(1, len(old)):
                m[i] = new.index(old.item_id(i))
            self._maps[(tag, self.tag)] = m
        return m

    def tag_states(self, states) -> None:
        for st in states:
            st.vocab_tag = self.tag


def _control_consumer(settings):
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic("control")
    c = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                      enable_auto_commit=False, **kafka_python_kwargs(settings))
    parts = c.partitions_for_topic(topic) or set()
    if not parts:
        c.close()
        raise RuntimeError(f"control topic {topic} has no partitions")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    c.assign(tps)
    c.seek_to_end(*tps)  # only records published from now on: old ones never come back
    for tp in tps:
        c.position(tp)  # resolve the end now, before a record published meanwhile
    return c


__all__ = ["ModelSwapper", "SWAP_MARK", "check_control", "control_key", "inside_root",
           "publish_checkpoint", "send_load_model", "sign_control", "vocab_tag"]
