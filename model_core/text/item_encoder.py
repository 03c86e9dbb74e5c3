"""New items at run time: metadata records -> text vectors -> recommendable by the loaded model.

An :class:`ItemEncoder` wraps a loaded text/fused GRU4Rec or SASRec model. Records arrive from
an ``items`` topic (JSON bytes) or a file (dicts); :meth:`ItemEncoder.submit` parses them
(cheap, any thread: the event loop) and queues them; :meth:`ItemEncoder.flush` encodes the
queue in one batch and grows the model's vocabulary + text table
(:func:`model_core.text.fusion.grow_items`). Call ``flush`` on the thread that runs the model
(the agent's single scoring worker), between two scoring batches: it swaps tensors the
scorer reads. After it returns, the new items are scored and can be recommended; no
retraining. An item already known gets its text vector refreshed when its text changed.

    enc = ItemEncoder(model, id_field="item_id", text_fields=["title", "category"])
    res = enc.submit(raw_values)             # SubmitResult: accepted, rejected [(raw, reason)]
    grow = enc.flush()                       # GrowResult: added ids, updated ids, timings
    enc.stats                                # counters for the metrics/monitor views
    enc.rebind(new_model)                    # after a hot model swap: re-install, no re-encode

Rejected records (not JSON, not an object, no id, no text) are returned with the reason, for
the dead-letter topic; they never raise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model_core.text.cache import TextVectorCache
from model_core.text.encoder import TextEncoder, load_text_encoder
from model_core.text.fusion import (
    GrowResult,
    TextFusionError,
    add_metadata_items,
    item_embedding_of,
)
from model_core.text.items import parse_item_record, read_item_metadata, split_columns

__all__ = ["ItemEncoder", "SubmitResult"]


@dataclass(slots=True)
class SubmitResult:
    accepted: int = 0
    unchanged: int = 0  # same id and same text as already installed: nothing to do
    rejected: list[tuple[object, str]] = field(default_factory=list)  # (raw record, reason)


class ItemEncoder:
    """Encode new item metadata in batches and add it to a loaded model.

    ``model``: a loaded GRU4Rec/SASRec checkpoint trained with ``--text-mode text|fused``.
    ``encoder``: any :class:`~model_core.text.encoder.TextEncoder`; default the offline
    all-MiniLM-L6-v2 (needs ``seqstream[text]``) on ``device``. ``id_field`` /
    ``text_fields``: record fields (default: every field but the id, in record order).
    ``cache_path``: optional text-vector cache file (e.g. the checkpoint's
    ``text_vectors.safetensors``) so restarts do not re-encode.
    """

    def __init__(self, model, encoder: TextEncoder | None = None, id_field: str = "item_id",
                 text_fields: Sequence[str] | str | None = None,
                 cache_path: str | Path | None = None, batch_size: int = 64,
                 device: str = "auto") -> None:
        self.encoder = encoder if encoder is not None else load_text_encoder(device=device)
        self._check(model)
        self.model = model
        self.id_field = id_field
        self.text_fields = split_columns(text_fields) or None
        self.batch_size = batch_size
        self.cache = TextVectorCache(cache_path, self.encoder.fingerprint, self.encoder.dim,
                                     self.encoder.name)
        self._pending: dict[str, str] = {}
        self._installed: dict[str, str] = {}  # id -> text installed by us (for rebind)
        self._lock = threading.Lock()
        self.stats = {"received": 0, "rejected": 0, "unchanged": 0, "added": 0, "updated": 0,
                      "encoded": 0, "cached": 0, "flushes": 0, "encode_s": 0.0, "flush_s": 0.0}

    def _check(self, model) -> None:
        emb = item_embedding_of(model)
        if emb.mode == "id":
            raise TextFusionError("the loaded model uses ID embeddings only: new items need a "
                                  "model trained with --text-mode text or fused")
        if self.encoder.dim != emb.text_dim:
            raise TextFusionError(f"encoder gives {self.encoder.dim}-d vectors but the model was "
                                  f"trained on {emb.text_dim}-d text vectors")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def rebind(self, model) -> GrowResult:
        """Switch to a newly loaded model (hot swap) and install every item added so far
        into it — from the vector cache, without encoding again. Call on the model thread."""
        self._check(model)
        with self._lock:
            installed = dict(self._installed)
        self.model = model
        if not installed:
            return GrowResult([], [], len(model.vocab))
        return add_metadata_items(model, installed, self.encoder, self.cache,
                                  batch_size=self.batch_size)

    def submit(self, records: Iterable) -> SubmitResult:
        """Parse and queue records (dicts, or JSON bytes/str of one object each)."""
        out = SubmitResult()
        parsed: list[tuple[str, str]] = []
        for raw in records:
            try:
                rec = parse_item_record(raw, self.id_field, self.text_fields)
            except ValueError as e:
                out.rejected.append((raw, str(e)))
                continue
            if rec is None:
                out.rejected.append((raw, f"no {self.id_field!r} or no text"))
                continue
            parsed.append(rec)
        self._queue(parsed, out)
        with self._lock:
            self.stats["rejected"] += len(out.rejected)
            self.stats["received"] += len(out.rejected)
        return out

    def _queue(self, pairs: Iterable[tuple[str, str]], out: SubmitResult) -> None:
        with self._lock:
            for item_id, text in pairs:
                self.stats["received"] += 1
                if self._installed.get(item_id) == text and item_id not in self._pending:
                    out.unchanged += 1
                    self.stats["unchanged"] += 1
                    continue
                self._pending[item_id] = text
                out.accepted += 1

    def flush(self, max_items: int | None = None) -> GrowResult:
        """Encode what is queued (at most ``max_items``, oldest first; the rest stays
        pending) and install it in the model. Call on the model thread."""
        with self._lock:
            if max_items is None or len(self._pending) <= max_items:
                batch, self._pending = self._pending, {}
            else:
                keys = list(self._pending)
                batch = {k: self._pending.pop(k) for k in keys[:max(0, int(max_items))]}
        if not batch:
            return GrowResult([], [], len(self.model.vocab))
        t0 = time.perf_counter()
        res = add_metadata_items(self.model, batch, self.encoder, self.cache,
                                 batch_size=self.batch_size)
        with self._lock:
            self._installed.update(batch)
            s = self.stats
            s["flushes"] += 1
            s["added"] += len(res.added)
            s["updated"] += len(res.updated)
            s["encoded"] += res.n_encoded
            s["cached"] += res.n_cached
            s["encode_s"] += res.encode_seconds
            s["flush_s"] += time.perf_counter() - t0
        return res

    def add(self, records: Iterable) -> tuple[SubmitResult, GrowResult]:
        """:meth:`submit` then :meth:`flush` (single-threaded use, tests, files)."""
        sub = self.submit(records)
        return sub, self.flush()

    def add_file(self, path: str | Path, fmt: str = "auto") -> GrowResult:
        """Add every item of a metadata file (CSV/TSV, JSONL, RecBole ``.item``)."""
        meta = read_item_metadata(path, self.id_field, self.text_fields, fmt)
        self._queue(zip(meta.ids, meta.texts, strict=True), SubmitResult())
        return self.flush()
