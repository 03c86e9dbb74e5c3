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
with an old tag is **remapped** through item ids: at each swap the worker computes, once,
the index map from the previous vocabulary to the new one (by item id: an item the new
vocabulary lacks becomes index 0, unknown; so does a slot the learner gave to another item,
``Update.evicted`` in the learner version's ``meta.json``, :func:`learner_evicted`) and composes it into the map it keeps from every earlier
vocabulary to the current one. The stored last prediction is remapped the same way. The maps
are int32 arrays, kept within :data:`MAP_BUDGET_BYTES` (the oldest go first: a learner
publishing a version every minute makes many). A state whose tag has no map here (its old
model was loaded only by a worker that has since died, or its map was dropped) cannot be
remapped: its items are set to 0 (the sequence restarts for the model, event-id hashes are
kept so redeliveries are still recognised) and its last prediction is dropped, so its next
event is not scored. Both cases are counted (``remapped`` / ``reset``).

**Lockstep** (``SEQSTREAM_LEARN_LOCKSTEP=N``, for the demo and tests): with one worker, one
learner (``seqstream learner``, ``learn_schedule`` every=N) and a one-partition events
topic, the worker scores events of offsets ``[kN, (k+1)N)`` with the learner's version
``<start version>+uk`` — the version the offline replay
(:func:`model_core.learn.measure.replay_stream`) uses for those events — and holds an event
past a boundary until that version is loaded (:class:`Lockstep`); it loads those versions by
name and ignores ``LATEST``. So the stream's figures can equal the offline ones. With the
validation gate (the schedule's ``gate``, neural models) version ``+uk`` is decided on the
events after it, so it scores ``[(k+1)N, (k+2)N)`` if it passed; if it was refused (its
marker :func:`refused_marker`) the served version stays.
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
#: Memory for the index maps from earlier vocabularies to the current one (per worker).
MAP_BUDGET_BYTES = 64 * 2**20


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
    point_latest(dst_root, name)
    return dst


def point_latest(watch_dir: str | Path, name: str) -> None:
    """Make ``watch_dir/LATEST`` name ``name`` (atomically: a reader sees the old or the new
    line, never half of one)."""
    pointer = Path(watch_dir) / f".{LATEST}.tmp"
    pointer.write_text(name + "\n")
    os.replace(pointer, Path(watch_dir) / LATEST)


def read_latest(watch_dir: str | Path) -> str | None:
    """The name ``watch_dir/LATEST`` holds, or None (no file, empty)."""
    try:
        name = (Path(watch_dir) / LATEST).read_text().strip()
    except OSError:
        return None
    return name or None


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
        self._vocab = model.vocab
        # tag of an earlier vocabulary -> int32 map of its indices to the current one's
        self._to_current: dict[int, np.ndarray] = {}
        self._pending = None
        self.lockstep = Lockstep.from_settings(settings, model)
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
        watched = self._watched_path() if self.lockstep is None else None
        if watched is not None and watched != self._last_watched:
            self._last_watched = path = watched
        for p in self._control_paths():
            path = p
        if path is None:
            return
        self.load(path)

    def load(self, path: str | Path) -> bool:
        """Load and verify the checkpoint at ``path`` (unless it is the one loaded last) and
        leave it to be applied between batches; False when it was refused (alert queued).
        Blocking: run it in a thread."""
        key = str(Path(path).resolve())
        if key == self._loaded_name:
            return True
        self._loaded_name = key
        try:
            from model_core.checkpoint import load_model
            from model_core.verify import verify_model

            model = load_model(path, device=self.settings.device)
            verify_model(model, self.settings.top_k, str(path))
        except Exception as e:  # a bad checkpoint must not stop the worker
            self.stats.failed_loads += 1
            self._fail(f"model swap to {path} refused, the current model stays: {e}")
            return False
        # the index map from the vocabulary in use now, computed here, off the event loop
        with self._lock:
            tag, vocab = self.tag, self._vocab
            version = str(getattr(self.processor.model, "version", ""))
        step = (tag, vocab_map(vocab, model.vocab, learner_evicted(model, version)))
        with self._lock:
            self._pending = (model, step)
        return True

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
        name = read_latest(d)
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
            pending, self._pending = self._pending, None
        if pending is None:
            return False
        model, (from_tag, step) = pending
        s = self.settings
        self.processor.set_model(model, max_len=s.max_seq_len, k=s.top_k,
                                 exclude_history=s.exclude_history)
        self.switch_vocab(model.vocab, step if from_tag == self.tag else None)
        self.stats.swaps += 1
        if self.on_swap is not None:
            self.on_swap(model)
        print(f"{SWAP_MARK} to {model.version}", flush=True)
        log.info("model swapped to %s", model.version)
        return True

    async def wait_for_update(self, k: int, timeout_s: float) -> None:
        """Lockstep: return once the learner's version k (or a later one of its lineage)
        is applied, loading it by name as soon as its directory is there; after
        ``timeout_s`` go on with the current model (logged)."""
        import asyncio
        import time

        lock = self.lockstep
        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        while True:
            have = lock.update_of(str(self.processor.model.version))
            if k <= 0 or (have is not None and have >= k):
                return
            if lock.refused(k):  # the gate kept it back: the served version stays
                return
            path = lock.path(k)
            if (path / "meta.json").exists():
                await loop.run_in_executor(None, self.load, path)
                if self.apply_pending():
                    continue
            if time.monotonic() > deadline:
                log.error("lockstep: version %s not there after %.0f s; going on with %s",
                          path.name, timeout_s, self.processor.model.version)
                return
            await asyncio.sleep(0.02)

    def adapt(self, st: UserState) -> UserState:
        """A state read from the table, with its item indices in the current vocabulary."""
        tag = st.vocab_tag or self.initial_tag
        if tag == self.tag:
            st.vocab_tag = self.tag
            return st
        m = self._to_current.get(tag)
        if m is None:
            st.items = np.zeros_like(st.items)
            st.last_pred_items = np.zeros(0, dtype=np.int32)
            st.last_pred_action = -1
            self.stats.reset += 1
        else:
            st.items = m[st.items]
            st.last_pred_items = m[st.last_pred_items]
            self.stats.remapped += 1
        st.vocab_tag = self.tag
        return st

    def switch_vocab(self, new, step: np.ndarray | None = None) -> None:
        """The current vocabulary becomes ``new``: every kept map is composed with the map
        from the old current one (``step``, computed here when not given), the oldest maps
        dropped beyond :data:`MAP_BUDGET_BYTES`."""
        new_tag = vocab_tag(new)
        if new_tag != self.tag:
            if step is None:
                step = vocab_map(self._vocab, new)
            maps = {t: step[m] for t, m in self._to_current.items()}
            maps[self.tag] = step
            maps.pop(new_tag, None)  # back to a vocabulary seen before: no map needed
            total = 0
            kept: dict[int, np.ndarray] = {}
            for t in reversed(list(maps)):  # newest first
                total += maps[t].nbytes
                if total > MAP_BUDGET_BYTES and kept:
                    break
                kept[t] = maps[t]
            self._to_current = dict(reversed(list(kept.items())))
        self.tag, self._vocab = new_tag, new

    def tag_states(self, states) -> None:
        for st in states:
            st.vocab_tag = self.tag


def refused_marker(watch_dir: str | Path, version: str) -> Path:
    """Where the learner marks a version its gate refused (never published)."""
    return Path(watch_dir) / ".refused" / f"{version}.json"


def vocab_map(old, new, evicted=()) -> np.ndarray:
    """int32 map of ``old``'s indices to ``new``'s, by item id (0 where ``new`` lacks it),
    and 0 for the ``evicted`` slots of ``old``."""
    m = np.zeros(len(old), dtype=np.int32)
    if len(old) > 1:
        m[1:] = new.indices(old.item_ids(range(1, len(old))))
    drop = [s for s in evicted if 0 < s < len(old)]
    if drop:
        m[drop] = 0
    return m


def learner_evicted(model, current_version: str) -> list[int]:
    """The slots whose items a learner version forgot (``Update.evicted``, in its
    ``meta.json``), when it was learned from ``current_version``: they map to 0, as in the
    offline replay, also for an item that came back within the same update under another
    slot (the learner forgot its past too). Otherwise none: the map goes by item id."""
    meta = (getattr(model, "meta", None) or {}).get("learner") or {}
    if meta.get("parent") != current_version:
        return []
    return [int(s) for s in meta.get("evicted") or ()]


class Lockstep:
    """Which learner version scores which event, in lockstep mode (see the module
    docstring): version ``<start>+uk`` for offsets ``[k*every, (k+1)*every)``."""

    def __init__(self, every: int, start_version: str, watch_dir: str | Path,
                 gated: bool = False) -> None:
        self.every = int(every)
        self.start_version = start_version
        self.watch_dir = Path(watch_dir)
        self.gated = gated  # version k scores one micro-batch later, if it passed

    @classmethod
    def from_settings(cls, settings, model) -> Lockstep | None:
        """From ``learn_lockstep`` and the learner's schedule (gated: the schedule's
        ``gate`` on, as :class:`model_core.learn.gate.Gate` reads it)."""
        every = int(getattr(settings, "learn_lockstep", 0) or 0)
        watch = getattr(settings, "model_watch_dir", None)
        if not (every and watch):
            return None
        from model_core.learn.schedule import LearnSchedule

        schedule = LearnSchedule.parse(getattr(settings, "learn_schedule", "") or "every=1")
        gated = schedule.gate > 0
        return cls(every, str(getattr(model, "version", "")), watch, gated)

    def refused(self, k: int) -> bool:
        """Whether the gate refused version k (so the served one stays for its events)."""
        return refused_marker(self.watch_dir, f"{self.start_version}+u{k}").exists()

    def update_of(self, version: str) -> int | None:
        """k of ``<start>+uk`` (0 for the start version); None for another lineage."""
        if version == self.start_version:
            return 0
        head, _, n = version.rpartition("+u")
        return int(n) if head == self.start_version and n.isdigit() else None

    def path(self, k: int) -> Path:
        return self.watch_dir / f"{self.start_version}+u{k}"

    def pieces(self, offsets: list[int]) -> list[tuple[int, int, int]]:
        """``(start, end, k)``: runs of ``offsets`` (one partition, ascending) that version
        k scores."""
        out: list[tuple[int, int, int]] = []
        for i, off in enumerate(offsets):
            k = off // self.every - (1 if self.gated else 0)
            if out and out[-1][2] == k:
                out[-1] = (out[-1][0], i + 1, k)
            else:
                out.append((i, i + 1, k))
        return out


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


__all__ = ["LATEST", "Lockstep", "MAP_BUDGET_BYTES", "ModelSwapper", "SWAP_MARK",
           "check_control", "control_key", "inside_root", "point_latest", "publish_checkpoint",
           "learner_evicted", "read_latest", "refused_marker", "send_load_model", "sign_control",
           "vocab_map", "vocab_tag"]
