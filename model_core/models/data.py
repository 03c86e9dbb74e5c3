"""Training data as the models see it, and padded tensor batches.

:class:`SeqData` is the one shape every model trains on: per-user int32 item-index arrays
(oldest first, 0 = unknown, dropped here), optionally aligned uint8 action ids and int64
timestamps, plus an optional item -> category table. :func:`as_seqdata` adapts what callers
hand over (plain arrays, :class:`~model_core.predictor.SequenceBatch`, or record objects with
``items`` / ``actions`` / ``timestamps_ms`` attributes) so the model code never depends on
the data-loading modules.

Padding convention everywhere in ``model_core.models``: **right padding** — row ``b`` holds
its ``lengths[b]`` events in positions ``0 .. lengths[b]-1`` and zeros after. Causal models
(GRU, causal attention) are then padding-invariant by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: Time-gap buckets: 0 = no previous event / unknown, then ``1 + floor(log2(1 + gap_s))``
#: capped at ``N_GAP_BUCKETS - 1`` (about 2^22 s ~ 48 days for the last one).
N_GAP_BUCKETS = 24


@dataclass(slots=True)
class SeqData:
    items: list[np.ndarray]  # int32, 0 entries already dropped
    actions: list[np.ndarray] | None = None  # uint8 class ids of schemas.ACTIONS
    timestamps_ms: list[np.ndarray] | None = None  # int64
    item_categories: np.ndarray | None = None  # [n_items + 1] int64 category index, 0 = none
    n_categories: int = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_events(self) -> int:
        return int(sum(len(s) for s in self.items))


def _get(obj, *names):
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return v
    return None


def as_seqdata(data, item_categories: np.ndarray | None = None) -> SeqData:
    """Adapt sequences from any caller to :class:`SeqData` (dropping unknown items).

    Accepts a :class:`SeqData`, a :class:`~model_core.predictor.SequenceBatch`, an object or
    dict with ``items`` (and optional ``actions``, ``timestamps_ms``), or an iterable of
    per-user arrays or per-user records with those attributes.
    """
    if isinstance(data, SeqData):
        if item_categories is not None and data.item_categories is None:
            data.item_categories = np.asarray(item_categories, dtype=np.int64)
            data.n_categories = int(data.item_categories.max(initial=0))
        return data
    items = _get(data, "items") if not isinstance(data, (list, tuple)) else None
    if isinstance(items, list) and (not items or isinstance(items[0], (np.ndarray, list))):
        raw_items = items
        raw_actions = _get(data, "actions")
        raw_ts = _get(data, "timestamps_ms", "timestamps")
    else:
        raw_items, raw_actions, raw_ts = [], [], []
        for rec in data if isinstance(data, Iterable) else []:
            if isinstance(rec, (np.ndarray, list, tuple)):
                raw_items.append(rec)
                raw_actions.append(None)
                raw_ts.append(None)
            else:
                raw_items.append(_get(rec, "items"))
                raw_actions.append(_get(rec, "actions"))
                raw_ts.append(_get(rec, "timestamps_ms", "timestamps"))
        if all(a is None for a in raw_actions):
            raw_actions = None
        if all(t is None for t in raw_ts):
            raw_ts = None
    out_items, out_actions, out_ts = [], [], []
    for u, it in enumerate(raw_items):
        it = np.asarray(it, dtype=np.int64)
        keep = it > 0
        out_items.append(it[keep].astype(np.int32))
        if raw_actions is not None:
            a = raw_actions[u]
            a = np.zeros(len(it), np.uint8) if a is None else np.asarray(a, dtype=np.uint8)
            out_actions.append(a[keep])
        if raw_ts is not None:
            t = raw_ts[u]
            t = np.zeros(len(it), np.int64) if t is None else np.asarray(t, dtype=np.int64)
            out_ts.append(t[keep])
    cats = _get(data, "item_categories") if item_categories is None else item_categories
    cats = None if cats is None else np.asarray(cats, dtype=np.int64)
    return SeqData(
        items=out_items,
        actions=out_actions if raw_actions is not None else None,
        timestamps_ms=out_ts if raw_ts is not None else None,
        item_categories=cats,
        n_categories=int(cats.max(initial=0)) if cats is not None else 0,
    )


def by_start_time(data: SeqData) -> SeqData:
    """The sequences of ``data`` ordered by their first timestamp (stable; unchanged order
    without timestamps). Sessions then come in the order GRU4Rec's session-parallel
    mini-batches visit them."""
    if data.timestamps_ms is None:
        return data
    first = np.array([t[0] if len(t) else np.iinfo(np.int64).max for t in data.timestamps_ms],
                     dtype=np.int64)
    order = np.argsort(first, kind="stable")

    def pick(xs):
        return None if xs is None else [xs[i] for i in order]

    return SeqData(items=pick(data.items), actions=pick(data.actions),
                   timestamps_ms=pick(data.timestamps_ms), item_categories=data.item_categories,
                   n_categories=data.n_categories)


def gap_buckets(timestamps_ms: np.ndarray) -> np.ndarray:
    """Bucket of the time since the previous event, per event (first event -> 0)."""
    t = np.asarray(timestamps_ms, dtype=np.int64)
    out = np.zeros(len(t), dtype=np.int64)
    if len(t) > 1:
        gap_s = np.maximum(np.diff(t), 0) / 1000.0
        out[1:] = np.minimum(1 + np.floor(np.log2(1.0 + gap_s)), N_GAP_BUCKETS - 1)
    return out


def gap_bucket_of(gap_ms: np.ndarray) -> np.ndarray:
    """Bucket of given gaps in ms (negative = no previous event -> 0)."""
    g = np.asarray(gap_ms, dtype=np.float64)
    b = np.minimum(1 + np.floor(np.log2(1.0 + np.maximum(g, 0) / 1000.0)), N_GAP_BUCKETS - 1)
    return np.where(g < 0, 0, b).astype(np.int64)


@dataclass(slots=True)
class Padded:
    """A right-padded batch of model inputs (all int64 tensors on one device)."""

    items: torch.Tensor  # [B, L]
    lengths: torch.Tensor  # [B], >= 1 (an empty history is one padding step)
    actions: torch.Tensor | None = None  # [B, L] action id + 1 (0 = padding / unknown)
    gaps: torch.Tensor | None = None  # [B, L] gap bucket (0 = first / unknown)

    def features(self) -> dict:
        return {"actions": self.actions, "gaps": self.gaps}


def pad_batch(items: Sequence[np.ndarray], actions: Sequence[np.ndarray] | None,
              timestamps_ms: Sequence[np.ndarray] | None, max_len: int,
              device: torch.device | str = "cpu", use_actions: bool = False,
              use_gaps: bool = False) -> Padded:
    """Drop index-0 items, keep the last ``max_len`` events, right-pad to the longest row."""
    rows, arows, grows = [], [], []
    for b, it in enumerate(items):
        it = np.asarray(it, dtype=np.int64)
        keep = it > 0
        it = it[keep]
        if use_actions:
            a = actions[b] if actions is not None else None
            a = (np.asarray(a, dtype=np.int64)[keep] + 1) if a is not None else np.zeros(len(it), np.int64)
            arows.append(a[-max_len:])
        if use_gaps:
            t = timestamps_ms[b] if timestamps_ms is not None else None
            g = gap_buckets(np.asarray(t)[keep]) if t is not None else np.zeros(len(it), np.int64)
            grows.append(g[-max_len:])
        rows.append(it[-max_len:])
    n = len(rows)
    lens = np.array([max(1, len(r)) for r in rows], dtype=np.int64)
    width = int(lens.max(initial=1))
    mat = np.zeros((n, width), dtype=np.int64)
    amat = np.zeros((n, width), dtype=np.int64) if use_actions else None
    gmat = np.zeros((n, width), dtype=np.int64) if use_gaps else None
    for b, r in enumerate(rows):
        mat[b, : len(r)] = r
        if use_actions:
            amat[b, : len(r)] = arows[b]
        if use_gaps:
            gmat[b, : len(r)] = grows[b]
    dev = torch.device(device)
    return Padded(
        items=torch.from_numpy(mat).to(dev),
        lengths=torch.from_numpy(lens).to(dev),
        actions=torch.from_numpy(amat).to(dev) if use_actions else None,
        gaps=torch.from_numpy(gmat).to(dev) if use_gaps else None,
    )


@dataclass(slots=True)
class ParallelStep:
    """One step of session-parallel mini-batches: lane ``b`` reads ``inputs[b]`` and predicts
    ``targets[b]``; its recurrent state continues row ``prev[b]`` of the previous step's state,
    or starts from zero where ``prev[b] == -1`` (a new sequence took the lane)."""

    inputs: np.ndarray  # [B] int64
    targets: np.ndarray  # [B] int64
    prev: np.ndarray  # [B] int64


def session_parallel_steps(items: Sequence[np.ndarray], batch_size: int) -> list[ParallelStep]:
    """GRU4Rec's session-parallel mini-batches over ``items`` (in the order given).

    ``batch_size`` lanes each run through one sequence, one event per step; a lane whose
    sequence ends takes the next unread sequence (its state reset to zero); once none are
    left, finished lanes close and the batch shrinks. Sequences with fewer than two events
    give no target and are skipped. Every (event, next event) pair is one target, once.
    """
    seqs = [np.asarray(s, dtype=np.int64) for s in items if len(s) >= 2]
    steps: list[ParallelStep] = []
    nxt = 0
    lanes: list[list] = []  # [sequence, position]
    prev_rows: list[int] = []
    while nxt < len(seqs) and len(lanes) < batch_size:
        lanes.append([seqs[nxt], 0])
        prev_rows.append(-1)
        nxt += 1
    while lanes:
        steps.append(ParallelStep(
            inputs=np.array([s[p] for s, p in lanes], dtype=np.int64),
            targets=np.array([s[p + 1] for s, p in lanes], dtype=np.int64),
            prev=np.array(prev_rows, dtype=np.int64)))
        new_lanes, prev_rows = [], []
        for row, (s, p) in enumerate(lanes):
            if p + 2 < len(s):  # the lane's sequence has another target
                new_lanes.append([s, p + 1])
                prev_rows.append(row)
            elif nxt < len(seqs):
                new_lanes.append([seqs[nxt], 0])
                prev_rows.append(-1)
                nxt += 1
        lanes = new_lanes
    return steps
