"""Online evaluation windows: prequential scores aggregated in event-time windows.

Pure logic (no Kafka, no wall clock read here: every time is an argument). The worker feeds
each processed batch (:meth:`WindowAggregator.add_batch`) and asks for closed windows
(:meth:`WindowAggregator.close_until`) to publish them on the ``metrics`` topic.

Windows are tumbling (``window_s``) and, optionally, hopping (``hop_window_s`` every
``hop_s``). A window ``[start, end)`` closes once the watermark (the highest event time seen,
or the idle-advance clock) passes ``end + allowed_lateness``. An event for a window that has
already been published is *late*: the published window is never reopened or changed; the event
is counted in ``late_events`` of the oldest open window of that kind, and its scores go there
too, so totals over all windows stay exact (:func:`aggregate_windows` equals the prequential
totals over the same events). ``WindowAggregator.total_late`` counts late events overall.

Dead letters carry no trusted event time: they are counted in the window(s) of the watermark.

A window's size does not depend on its traffic (it is written to the changelog every batch):
distinct users and distinct recommended items are :class:`~stream_app.windows.distinct_sketch.DistinctSketch`
counts (exact up to 128 values, then HyperLogLog with a 1.6 % standard error), so ``users``
and ``coverage`` of a busy window are estimates; latencies are a log-bucket histogram.

Beyond accuracy, of the top-K lists each window counts in ``coverage`` (one per new event),
by the functions ``evaluate`` uses (:mod:`model_core.beyond`), so a window's figure is the
offline figure of the same lists; its record holds them as ``beyond`` and what each is a mean
over as ``beyond_n`` (so that means over windows and partitions stay exact):

- ``novelty@K``, ``arp@K``, ``aplt@K`` from additive sums (:func:`~model_core.beyond.list_metric_sums`),
  given the model's training counts (``item_counts``, by vocabulary index: the counting
  models and the GRU4Rec / SASRec checkpoints saved since they store them);
- ``ild@K`` from additive sums (:func:`~model_core.beyond.ild_sums`), given each item's
  category (:meth:`set_item_categories`; the worker learns them from the events'
  ``category_id``, :mod:`stream_app.windows.categories`);
- ``gini@K``, the Gini of exposure over the catalogue (``n_items`` plus the items added at
  run time), from the window's exact per-item exposure counts
  (:func:`~model_core.beyond.gini_of_exposure`). They are bounded: a window keeps them for
  up to ``exposure_cap`` distinct recommended items (4,096 by default, a few KB compressed
  in the record); a window that recommends more drops them and has no ``gini@K`` (an exact
  figure or none, never an estimate). Gini is not a mean: ``beyond_n`` has no weight for it
  and merged windows of several partitions leave it out.

Counts and categories are not part of the saved state: the worker hands them to every
aggregator it creates or restores (:meth:`set_item_counts`, :meth:`set_item_categories`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from model_core.beyond import (
    add_sums,
    exposure_counts,
    gini_of_exposure,
    ild_sums,
    list_metric_sums,
    metrics_from_sums,
    short_head,
    weights_from_sums,
)
from model_core.metrics import Coverage, RankingAccumulator, report_from_confusion
from model_core.prequential import BatchResult
from schemas.actions import ACTIONS, N_ACTIONS
from schemas.event import Event
from schemas.metrics import MetricsWindow
from stream_app.windows.distinct_sketch import DistinctSketch, DistinctState, hash_strings
from stream_app.windows.latency_sketch import LatencyHistogram, LatencyState

#: version of :class:`AggregatorSnapshot`; raise it with any change to the snapshot records
SNAPSHOT_VERSION = 6  # 6: windows hold exposure counts; 5: list_sums; 4 and 5 are read too
#: distinct recommended items a window keeps exact exposure counts for (its ``gini@K``)
EXPOSURE_CAP = 4096


@dataclass(frozen=True)
class WindowSnapshot:
    """One open window as data (:meth:`WindowAggregator.snapshot`)."""

    kind: str
    start_ms: int
    end_ms: int
    events: int
    predictions: int
    late_events: int
    dead_letters: int
    busy_ms: float
    scored: int  # cases in the ranking sums
    ranking_sums: dict[str, float]  # metric name -> sum over the scored cases
    confusion: tuple[tuple[int, ...], ...]  # [true action][predicted action]
    users: DistinctState
    items: DistinctState
    latency: LatencyState
    #: sums behind novelty / ARP / APLT / ILD (:mod:`model_core.beyond`)
    list_sums: dict[str, float] = field(default_factory=dict)
    #: per-item exposure counts at each K (:func:`pack_exposure`); None: not kept (over the
    #: cap, or a window restored from a version-4/5 record, which had none)
    exposure: bytes | None = None


@dataclass(frozen=True)
class AggregatorSnapshot:
    """A :class:`WindowAggregator` as data: its settings, clocks and open windows.

    The record the worker saves per input partition (:mod:`stream_app.windows.persistence`);
    its fields are the contract of that saved state, independent of the aggregator's
    attribute names. ``version`` is :data:`SNAPSHOT_VERSION` when it was taken.
    """

    version: int
    ks: tuple[int, ...]
    window_ms: int
    lateness_ms: int
    hop_ms: int
    hop_window_ms: int
    n_items: int
    model_version: str
    watermark_ms: int | None
    closed_until: dict[str, int]  # kind -> end of the last published window of that kind
    total_late: int
    pending_dead: int  # dead letters held until the first valid event
    last_wall_ms: int | None
    windows: tuple[WindowSnapshot, ...]


def pack_exposure(items: np.ndarray, counts: np.ndarray) -> bytes:
    """Exposure counts as compact bytes for the saved record: the ascending item indices as
    gaps, then each K's counts, as little-endian uint32, zlib-compressed."""
    gaps = np.diff(np.asarray(items, np.int64), prepend=0)
    flat = np.concatenate([gaps, np.asarray(counts, np.int64).T.ravel()])
    return zlib.compress(flat.astype("<u4").tobytes(), 1)


def unpack_exposure(raw: bytes, n_ks: int) -> tuple[np.ndarray, np.ndarray]:
    """(items, [items, n_ks] counts) of :func:`pack_exposure`."""
    flat = np.frombuffer(zlib.decompress(raw), dtype="<u4").astype(np.int64)
    n = len(flat) // (1 + n_ks)
    if n * (1 + n_ks) != len(flat):
        raise ValueError(f"exposure of {len(flat)} values is not items and {n_ks} counts each")
    return np.cumsum(flat[:n]), flat[n:].reshape(n_ks, n).T.copy()


@dataclass
class _Window:
    start_ms: int
    end_ms: int
    kind: str
    ks: tuple[int, ...]
    n_items: int
    events: int = 0
    predictions: int = 0
    late_events: int = 0
    dead_letters: int = 0
    # bounded whatever the window's traffic and catalogue (it is written to the changelog
    # every batch): distinct users and recommended items as sketches, a latency histogram
    users: DistinctSketch = field(default_factory=DistinctSketch)
    ranking: RankingAccumulator = field(init=False)
    confusion: np.ndarray = field(
        default_factory=lambda: np.zeros((N_ACTIONS, N_ACTIONS), dtype=np.int64))
    items: Coverage = field(init=False)  # of a DistinctSketch: bounded, see Coverage
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    busy_ms: float = 0.0  # wall time attributed to this window's events (see add_batch)
    list_sums: dict[str, float] = field(default_factory=dict)  # beyond-accuracy sums
    # exact exposure: recommended items (ascending) and [items, len(ks)] counts; None: dropped
    exposed: np.ndarray | None = field(default_factory=lambda: np.zeros(0, np.int64))
    exposure: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ranking = RankingAccumulator(self.ks)
        self.items = Coverage(self.n_items, DistinctSketch())
        if self.exposed is not None and self.exposure is None:
            self.exposure = np.zeros((len(self.exposed), len(self.ks)), np.int64)

    def add_exposure(self, top: np.ndarray, cap: int) -> None:
        """The lists' per-item exposure at each K added; dropped past ``cap`` items."""
        if self.exposed is None:
            return
        parts = [exposure_counts(top, k) for k in self.ks]
        items = np.concatenate([self.exposed, *(p[0] for p in parts)])
        known, at = np.unique(items, return_inverse=True)
        if len(known) > cap:
            self.exposed = self.exposure = None
            return
        counts = np.zeros((len(known), len(self.ks)), np.int64)
        n = len(self.exposed)
        np.add.at(counts, at[:n], self.exposure)
        for j, (_, c) in enumerate(parts):
            np.add.at(counts[:, j], at[n:n + len(c)], c)
            n += len(c)
        self.exposed, self.exposure = known, counts

    def gini(self, n_items: int) -> dict[str, float]:
        """``gini@K`` of the exposure over a catalogue of ``n_items`` (and any item added
        after, recommended here); empty when the exposure was dropped."""
        if self.exposed is None or not n_items:
            return {}
        n = max(n_items, int(self.exposed.max(initial=0)))
        return {f"gini@{k}": gini_of_exposure(self.exposed, self.exposure[:, j], n)
                for j, k in enumerate(self.ks)}

    def snapshot(self) -> WindowSnapshot:
        return WindowSnapshot(
            kind=self.kind, start_ms=self.start_ms, end_ms=self.end_ms, events=self.events,
            predictions=self.predictions, late_events=self.late_events,
            dead_letters=self.dead_letters, busy_ms=float(self.busy_ms),
            scored=self.ranking.n, ranking_sums=dict(self.ranking.sums),
            confusion=tuple(tuple(row) for row in self.confusion.tolist()),
            users=self.users.snapshot(), items=self.items.distinct.snapshot(),
            latency=self.latency.snapshot(), list_sums=dict(self.list_sums),
            exposure=(None if self.exposed is None
                      else pack_exposure(self.exposed, self.exposure)))

    @classmethod
    def restore(cls, s: WindowSnapshot, ks: tuple[int, ...], n_items: int) -> _Window:
        w = cls(s.start_ms, s.end_ms, s.kind, ks, n_items, events=s.events,
                predictions=s.predictions, late_events=s.late_events,
                dead_letters=s.dead_letters, users=DistinctSketch.restore(s.users),
                latency=LatencyHistogram.restore(s.latency), busy_ms=s.busy_ms,
                list_sums=dict(s.list_sums))
        if s.exposure is None:
            w.exposed = w.exposure = None
        else:
            w.exposed, w.exposure = unpack_exposure(s.exposure, len(ks))
        w.items.distinct = DistinctSketch.restore(s.items)
        if set(s.ranking_sums) != set(w.ranking.sums):
            raise ValueError(f"window snapshot holds ranking sums {sorted(s.ranking_sums)}, "
                             f"expected {sorted(w.ranking.sums)}")
        w.ranking.n = s.scored
        w.ranking.sums.update(s.ranking_sums)
        confusion = np.asarray(s.confusion, dtype=np.int64)
        if confusion.shape != w.confusion.shape:
            raise ValueError(f"window snapshot holds a {confusion.shape} confusion matrix, "
                             f"expected {w.confusion.shape}")
        w.confusion = confusion
        return w


class WindowAggregator:
    def __init__(self, ks: Sequence[int] = (10, 20), window_s: int = 60,
                 allowed_lateness_s: int = 5, hop_s: int = 0, hop_window_s: int = 300,
                 n_items: int = 0, model_version: str = "",
                 item_counts: np.ndarray | None = None,
                 item_categories: np.ndarray | None = None,
                 exposure_cap: int = EXPOSURE_CAP) -> None:
        self.ks = tuple(ks)
        self.window_ms = window_s * 1000
        self.lateness_ms = allowed_lateness_s * 1000
        self.hop_ms = hop_s * 1000
        self.hop_window_ms = hop_window_s * 1000
        self.n_items = n_items
        self.model_version = model_version
        self.watermark_ms: int | None = None  # highest event time seen
        self._open: dict[tuple[str, int], _Window] = {}
        self._closed_until: dict[str, int] = {}  # kind -> end of the last published window
        self.total_late = 0  # late events (tumbling windows), over the aggregator's life
        self._pending_dead = 0
        self._last_wall_ms: int | None = None
        self.exposure_cap = exposure_cap
        self.set_item_counts(item_counts)
        self.set_item_categories(item_categories)

    def set_item_counts(self, counts: np.ndarray | None) -> None:
        """The model's training counts by vocabulary index (None: no beyond-accuracy sums
        from now on); windows keep the sums they hold."""
        c = None if counts is None else np.asarray(counts, dtype=np.float64)
        if c is not None and (c.ndim != 1 or c.size < 2):
            c = None
        self._counts = c
        self._head = short_head(c) if c is not None else None

    @property
    def item_counts(self) -> np.ndarray | None:
        return self._counts

    def set_item_categories(self, categories: np.ndarray | None) -> None:
        """Each item's category by vocabulary index (-1: none; an item past its end has
        none), for ``ild@K`` from now on (None: no ILD sums); windows keep the sums they
        hold. Read, not copied: the worker's table may fill in between batches."""
        self._categories = categories

    def _add_lists(self, w: _Window, top: np.ndarray) -> None:
        if not len(top):
            return
        w.add_exposure(top, self.exposure_cap)
        if self._categories is not None:
            add_sums(w.list_sums, ild_sums(top, self._categories, self.ks))
        if self._counts is None:
            return
        c, head = self._counts, self._head
        grow = int(top.max()) + 1 - c.size  # items added at run time: never seen in training
        if grow > 0:
            c, head = np.r_[c, np.zeros(grow)], np.r_[head, np.zeros(grow, dtype=bool)]
        add_sums(w.list_sums, list_metric_sums(top, c, self.ks, head))

    # ------------------------------------------------------------------ saved state
    def snapshot(self) -> AggregatorSnapshot:
        """The aggregator's whole state as a typed record (see :meth:`restore`)."""
        return AggregatorSnapshot(
            version=SNAPSHOT_VERSION, ks=self.ks, window_ms=self.window_ms,
            lateness_ms=self.lateness_ms, hop_ms=self.hop_ms, hop_window_ms=self.hop_window_ms,
            n_items=self.n_items, model_version=self.model_version,
            watermark_ms=self.watermark_ms, closed_until=dict(self._closed_until),
            total_late=self.total_late, pending_dead=self._pending_dead,
            last_wall_ms=self._last_wall_ms,
            windows=tuple(w.snapshot() for _, w in sorted(self._open.items())))

    @classmethod
    def restore(cls, s: AggregatorSnapshot) -> WindowAggregator:
        """The aggregator :meth:`snapshot` described: it goes on as the original would."""
        if s.version != SNAPSHOT_VERSION:
            raise ValueError(f"window snapshot version {s.version}, expected {SNAPSHOT_VERSION}")
        agg = cls(ks=s.ks, n_items=s.n_items, model_version=s.model_version)
        agg.window_ms, agg.lateness_ms = s.window_ms, s.lateness_ms
        agg.hop_ms, agg.hop_window_ms = s.hop_ms, s.hop_window_ms
        agg.watermark_ms = s.watermark_ms
        agg._closed_until = dict(s.closed_until)
        agg.total_late = s.total_late
        agg._pending_dead = s.pending_dead
        agg._last_wall_ms = s.last_wall_ms
        for ws in s.windows:
            agg._open[(ws.kind, ws.start_ms)] = _Window.restore(ws, agg.ks, agg.n_items)
        return agg

    # ------------------------------------------------------------------ windows of a time
    def _starts(self, ts: int) -> Iterable[tuple[str, int, int]]:
        start = ts - ts % self.window_ms
        yield "tumbling", start, start + self.window_ms
        if self.hop_ms:
            last = ts - ts % self.hop_ms
            s = last
            while s > ts - self.hop_window_ms:
                yield "hopping", s, s + self.hop_window_ms
                s -= self.hop_ms

    def _window(self, kind: str, start: int, end: int) -> _Window:
        w = self._open.get((kind, start))
        if w is None:
            w = self._open[(kind, start)] = _Window(start, end, kind, self.ks, self.n_items)
        return w

    def _windows_for(self, ts: int) -> tuple[list[_Window], bool]:
        """The open windows an event at ``ts`` is accounted in, and whether it is late.

        Per kind: the event goes into each of its windows that is still open. When some of
        them were already published, it is *late* (counted once, in ``late_events`` of the
        first window it goes to); when all of them were published, it goes to the oldest
        open window of that kind instead, so that totals over windows stay exact. A published
        window is never reopened or changed. Lateness is reported for the tumbling kind.
        """
        out: list[_Window] = []
        late_tumbling = False
        for kind, bounds, closed_until in self._bounds_by_kind(ts):
            open_bounds = [(s, e) for s, e in bounds if e > closed_until]
            late = len(open_bounds) < len(bounds)
            if open_bounds:
                ws = [self._window(kind, s, e) for s, e in sorted(open_bounds)]
            else:
                ws = [self._oldest_open(kind) or self._window(
                    kind, *self._bounds(kind, max(self.watermark_ms or ts, closed_until)))]
            if late:
                ws[0].late_events += 1
                if kind == "tumbling":
                    late_tumbling = True
            out.extend(ws)
        if late_tumbling:
            self.total_late += 1
        return out, late_tumbling

    def _bounds_by_kind(self, ts: int) -> list[tuple[str, list[tuple[int, int]], int]]:
        """Per window kind: the (start, end) of each window of time ``ts``, and the end of
        that kind's last published window."""
        by_kind: dict[str, list[tuple[int, int]]] = {}
        for kind, start, end in self._starts(ts):
            by_kind.setdefault(kind, []).append((start, end))
        return [(kind, bounds, self._closed_until.get(kind, -(1 << 62)))
                for kind, bounds in by_kind.items()]

    def _bounds(self, kind: str, ts: int) -> tuple[int, int]:
        size = self.window_ms if kind == "tumbling" else self.hop_window_ms
        step = self.window_ms if kind == "tumbling" else self.hop_ms
        start = ts - ts % step
        return start, start + size

    def _oldest_open(self, kind: str) -> _Window | None:
        cands = [w for (k, _), w in self._open.items() if k == kind]
        return min(cands, key=lambda w: w.start_ms) if cands else None

    # ------------------------------------------------------------------ feeding
    def add_batch(self, events: Sequence[Event], result: BatchResult,
                  latencies_ms: Sequence[float], wall_ms: int,
                  rows: Sequence[int] | None = None) -> None:
        """Account one processed batch (``latencies_ms[i]`` for ``events[i]``).

        ``rows``: account only these rows of the batch (in order; default all).

        Throughput: the batch's wall time (since the previous batch was accounted; for the
        first batch, the oldest event's latency) is shared among the windows in proportion
        to their events in the batch, and a window's ``events_per_s`` is its events over its
        share. Live, that is the arrival rate; in a fast replay, the processing rate.
        """
        if rows is None:
            rows = range(len(events))
        rows = list(rows)
        if not rows:
            self._share_wall(wall_ms, latencies_ms, rows, {}, 0)
            return
        ts = [events[i].timestamp_ms for i in rows]
        groups = self._groups_if_on_time(ts)
        if groups is None:  # a late event: its windows depend on the events before it
            self._add_rows_in_order(events, result, latencies_ms, wall_ms, rows)
            return
        # every event goes to the open windows of its time: one pass per window, not per event
        n = len(rows)
        dup = set(result.duplicates)
        is_new = np.fromiter((i not in dup for i in rows), dtype=bool, count=n)
        user_hashes = None  # computed once per batch, when a window has new events
        rows_arr = np.asarray(rows, dtype=np.int64)
        pos_of = {r: j for j, r in enumerate(rows)}
        scores = (result.scores if n == len(events)
                  else [s for s in result.scores if s.index in pos_of])
        s_pos = np.fromiter((pos_of[s.index] for s in scores), dtype=np.int64,
                            count=len(scores))
        s_true = np.fromiter((s.action_true for s in scores), dtype=np.int64, count=len(scores))
        s_pred = np.fromiter((s.action_pred for s in scores), dtype=np.int64, count=len(scores))
        s_rank = [s.rank for s in scores]
        member: dict[int, tuple[_Window, np.ndarray]] = {}  # id(window) -> (window, mask)
        for sig_mask, windows in groups:
            for w in windows:
                got = member.get(id(w))
                member[id(w)] = (w, sig_mask if got is None else (got[1] | sig_mask))
        if self._pending_dead:
            # dead letters seen before any valid event: they join the first event's windows
            first = [w for w, mask in member.values() if mask[0]]
            for w in first:
                w.dead_letters += self._pending_dead
            self._pending_dead = 0
        lat = np.asarray(latencies_ms, dtype=np.float64)
        top = result.topk.items
        counted: list[tuple[_Window, np.ndarray]] = []
        for w, mask in member.values():
            w.predictions += int(mask.sum())
            new_rows = np.flatnonzero(mask & is_new)
            if len(new_rows):
                w.events += len(new_rows)
                if user_hashes is None:
                    user_hashes = hash_strings(events[i].user_id for i in rows)
                w.users.add_hashes(user_hashes[new_rows])
                counted.append((w, new_rows))
            if len(s_pos):
                sel = mask[s_pos]
                if sel.any():
                    w.ranking.update_many([r for r, m in zip(s_rank, sel.tolist(),
                                                             strict=True) if m])
                    sel &= s_pred >= 0
                    if sel.any():
                        np.add.at(w.confusion, (s_true[sel], s_pred[sel]), 1)
        for w, new_rows in counted:
            batch_rows = rows_arr[new_rows]
            w.latency.add_many(lat[batch_rows])
            w.items.update(top[batch_rows])
            self._add_lists(w, top[batch_rows])
        top_ts = max(ts)
        if self.watermark_ms is None or top_ts > self.watermark_ms:
            self.watermark_ms = top_ts
        self._share_wall(wall_ms, latencies_ms, rows,
                         {id(w): (w, len(r)) for w, r in counted}, int(is_new.sum()))

    def _groups_if_on_time(self, ts: list[int]) -> list[tuple[np.ndarray, list[_Window]]] | None:
        """Events grouped by the windows of their time: [(mask over ``ts``, windows)], or
        None when one of them is late (some of its windows were published already)."""
        t = np.asarray(ts, dtype=np.int64)
        # an event's windows follow from its tumbling window and (if any) its hop slot: both
        # are fixed within a slot of gcd(window, hop)
        step = math.gcd(self.window_ms, self.hop_ms) if self.hop_ms else self.window_ms
        _, first, inverse = np.unique(t // step, return_index=True, return_inverse=True)
        out = []
        for g, at in enumerate(first.tolist()):
            windows: list[_Window] = []
            for kind, bounds, closed_until in self._bounds_by_kind(ts[at]):
                if any(e <= closed_until for _, e in bounds):
                    return None
                windows.extend(self._window(kind, s, e) for s, e in sorted(bounds))
            out.append((inverse.reshape(-1) == g, windows))
        return out

    def _add_rows_in_order(self, events, result, latencies_ms, wall_ms, rows) -> None:
        """Event by event (a batch with late events): each event's windows in turn."""
        per_event: dict[int, list[_Window]] = {}
        in_batch: dict[int, tuple[_Window, list[int]]] = {}
        top = result.topk.items
        dup = set(result.duplicates)
        for i in rows:
            ev = events[i]
            ws, _late = self._windows_for(ev.timestamp_ms)
            if self._pending_dead:
                # dead letters seen before any valid event: they join the first windows
                for w in ws:
                    w.dead_letters += self._pending_dead
                self._pending_dead = 0
            per_event[i] = ws
            for w in ws:
                w.predictions += 1
                if i in dup:
                    continue
                w.events += 1
                seen = in_batch.get(id(w))
                if seen is None:
                    seen = in_batch[id(w)] = (w, [])
                seen[1].append(i)
            if self.watermark_ms is None or ev.timestamp_ms > self.watermark_ms:
                self.watermark_ms = ev.timestamp_ms
        for s in result.scores:
            for w in per_event.get(s.index, ()):
                w.ranking.update(s.rank)
                if s.action_pred >= 0:
                    w.confusion[s.action_true, s.action_pred] += 1
        lat = np.asarray(latencies_ms, dtype=np.float64)
        for w, idx in in_batch.values():  # per window, once per batch
            w.users.add_strings(events[i].user_id for i in idx)
            w.latency.add_many(lat[idx])
            w.items.update(top[idx])
            self._add_lists(w, top[idx])
        n_new = sum(1 for i in rows if i not in dup)
        self._share_wall(wall_ms, latencies_ms, rows,
                         {k: (w, len(idx)) for k, (w, idx) in in_batch.items()}, n_new)

    def _share_wall(self, wall_ms: int, latencies_ms: Sequence[float], rows: Sequence[int],
                    counts: dict[int, tuple[_Window, int]], n_new: int) -> None:
        """The batch's wall time shared among its windows by their new events."""
        if self._last_wall_ms is not None:
            batch_ms = float(max(0, wall_ms - self._last_wall_ms))
        else:
            batch_ms = float(max((latencies_ms[i] for i in rows), default=0.0))
        self._last_wall_ms = wall_ms
        if n_new and batch_ms > 0:
            for w, n in counts.values():
                w.busy_ms += batch_ms * n / n_new

    def add_dead_letters(self, n: int, wall_ms: int) -> None:
        """Dead letters have no trusted event time: they go to the window(s) of the watermark.

        Before any valid event there is no event time at all: they are held and added to the
        windows of the first valid event.
        """
        if n <= 0:
            return
        if self.watermark_ms is None:
            self._pending_dead += n
            return
        ws, _late = self._windows_for(self.watermark_ms)
        for w in ws:
            w.dead_letters += n

    def advance_watermark(self, ts_ms: int) -> None:
        """Move event time forward without an event (idle timer)."""
        if self.watermark_ms is None or ts_ms > self.watermark_ms:
            self.watermark_ms = ts_ms

    # ------------------------------------------------------------------ closing
    def close_until(self, now_wall_ms: int) -> list[MetricsWindow]:
        """Windows whose end + allowed lateness is at or before the watermark."""
        if self.watermark_ms is None:
            return []
        limit = self.watermark_ms - self.lateness_ms
        done = [key for key, w in self._open.items() if w.end_ms <= limit]
        return self._emit(sorted(done, key=lambda k: (self._open[k].end_ms, k[0])), now_wall_ms)

    def flush(self, now_wall_ms: int) -> list[MetricsWindow]:
        """Close every open window (shutdown)."""
        keys = sorted(self._open, key=lambda k: (self._open[k].end_ms, k[0]))
        return self._emit(keys, now_wall_ms)

    def close_oldest(self, now_wall_ms: int) -> list[MetricsWindow]:
        """Close the open window that ends first (a record over its size limit): later
        events of its time count as late, in the next open window of its kind."""
        if not self._open:
            return []
        key = min(self._open, key=lambda k: (self._open[k].end_ms, k[0]))
        return self._emit([key], now_wall_ms)

    def open_windows(self) -> int:
        return len(self._open)

    def _emit(self, keys, now_wall_ms: int) -> list[MetricsWindow]:
        out = []
        for key in keys:
            w = self._open.pop(key)
            self._closed_until[w.kind] = max(self._closed_until.get(w.kind, 0), w.end_ms)
            out.append(self._record(w, now_wall_ms))
        return out

    def _record(self, w: _Window, now_wall_ms: int) -> MetricsWindow:
        report = (report_from_confusion(w.confusion, ACTIONS) if w.confusion.sum() else None)
        p50, p95, p99 = w.latency.quantiles((50, 95, 99))
        span_s = w.busy_ms / 1000.0
        total = w.events + w.dead_letters
        means = {k: v for k, v in metrics_from_sums(w.list_sums, self.ks).items() if v == v}
        weights = weights_from_sums(w.list_sums, self.ks)
        return MetricsWindow(
            window_start_ms=w.start_ms,
            window_end_ms=w.end_ms,
            window_kind=w.kind,
            events=w.events,
            predictions=w.predictions,
            scored=w.ranking.n,
            users=w.users.count(),
            late_events=w.late_events,
            dead_letters=w.dead_letters,
            dead_letter_rate=(w.dead_letters / total) if total else 0.0,
            metrics=w.ranking.get(),
            action_accuracy=report["accuracy"] if report else None,
            action_macro_f1=report["macro_f1"] if report else None,
            coverage=w.items.result() if self.n_items else None,
            beyond={**means, **w.gini(self.n_items)},
            beyond_n={k: weights[k] for k in means},
            events_per_s=(w.events / span_s) if span_s > 0 else 0.0,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
            model_version=self.model_version,
            emitted_at_ms=now_wall_ms,
        )


def aggregate_beyond(windows: Iterable[MetricsWindow], kind: str = "tumbling") -> dict[str, float]:
    """Beyond-accuracy figures over published windows, each a mean weighted by what it is a
    mean over (``beyond_n``): the figure of all their lists at once. Gini (not a mean) and
    windows of older workers (without ``beyond_n``) are left out."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for w in windows:
        if w.window_kind != kind:
            continue
        for key, n in w.beyond_n.items():
            v = w.beyond.get(key)
            if v is not None and n > 0:
                sums[key] = sums.get(key, 0.0) + v * n
                weights[key] = weights.get(key, 0.0) + n
    return {key: sums[key] / weights[key] for key in sorted(sums)}


def aggregate_windows(windows: Iterable[MetricsWindow], kind: str = "tumbling") -> dict[str, float]:
    """Totals over published windows: scored-weighted means of the ranking metrics."""
    sums: dict[str, float] = {}
    n = 0
    for w in windows:
        if w.window_kind != kind or not w.scored:
            continue
        n += w.scored
        for key, v in w.metrics.items():
            sums[key] = sums.get(key, 0.0) + v * w.scored
    return {key: v / n for key, v in sums.items()} if n else {}


def merge_windows(windows: Iterable[MetricsWindow]) -> list[MetricsWindow]:
    """One window per (kind, start, end) out of several workers' or partitions' windows.

    Counts add up; ranking metrics are ``scored``-weighted means (exact); accuracy and
    macro-F1 ``scored``-weighted means (macro-F1: an approximation); ``beyond`` figures
    means weighted by their ``beyond_n`` (exact; windows of older workers, without it, by
    ``predictions``: an approximation), Gini left out (the partitions' exposure is not in
    the records, and a mean of Ginis is not a Gini); coverage the largest
    share (a lower bound of the union); ``events_per_s`` adds up (partitions run side by
    side); latency p50 is the ``events``-weighted mean and p95/p99 the largest (conservative);
    ``users`` adds up (a user is in one partition). Sorted by (end, kind).
    """
    groups: dict[tuple[str, int, int], list[MetricsWindow]] = {}
    for w in windows:
        groups.setdefault((w.window_kind, w.window_start_ms, w.window_end_ms), []).append(w)
    out = []
    for (kind, start, end), ws in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0])):
        if len(ws) == 1:
            out.append(ws[0])
            continue
        events = sum(w.events for w in ws)
        dead = sum(w.dead_letters for w in ws)
        scored = sum(w.scored for w in ws)

        def wmean(get, weight, ws=ws):
            pairs = [(get(w), weight(w)) for w in ws if get(w) is not None and weight(w) > 0]
            tot = sum(n for _, n in pairs)
            return sum(v * n for v, n in pairs) / tot if tot else None

        keys = sorted({k for w in ws for k in w.metrics})
        metrics = {}
        for key in keys:
            v = wmean(lambda w, key=key: w.metrics.get(key), lambda w: w.scored)
            if v is not None:
                metrics[key] = v
        beyond, beyond_n = {}, {}
        for key in sorted({k for w in ws for k in w.beyond if not k.startswith("gini@")}):
            exact = all(key in w.beyond_n for w in ws if key in w.beyond)
            v = wmean(lambda w, key=key: w.beyond.get(key),
                      (lambda w, key=key: w.beyond_n.get(key, 0.0)) if exact
                      else (lambda w: w.predictions))
            if v is not None:
                beyond[key] = v
                if exact:
                    beyond_n[key] = sum(w.beyond_n.get(key, 0.0) for w in ws)
        cov = [w.coverage for w in ws if w.coverage is not None]
        p95 = [w.latency_p95_ms for w in ws if w.latency_p95_ms is not None]
        p99 = [w.latency_p99_ms for w in ws if w.latency_p99_ms is not None]
        versions = sorted({w.model_version for w in ws if w.model_version})
        out.append(MetricsWindow(
            window_start_ms=start, window_end_ms=end, window_kind=kind, events=events,
            predictions=sum(w.predictions for w in ws), scored=scored,
            users=sum(w.users for w in ws), late_events=sum(w.late_events for w in ws),
            dead_letters=dead, dead_letter_rate=dead / (events + dead) if events + dead else 0.0,
            metrics=metrics,
            action_accuracy=wmean(lambda w: w.action_accuracy, lambda w: w.scored),
            action_macro_f1=wmean(lambda w: w.action_macro_f1, lambda w: w.scored),
            coverage=max(cov) if cov else None, beyond=beyond, beyond_n=beyond_n,
            events_per_s=sum(w.events_per_s for w in ws),
            latency_p50_ms=wmean(lambda w: w.latency_p50_ms, lambda w: w.events),
            latency_p95_ms=max(p95) if p95 else None,
            latency_p99_ms=max(p99) if p99 else None,
            model_version=",".join(versions),
            emitted_at_ms=max(w.emitted_at_ms for w in ws),
        ))
    return out


__all__ = ["EXPOSURE_CAP", "SNAPSHOT_VERSION", "AggregatorSnapshot", "WindowAggregator",
           "WindowSnapshot", "aggregate_beyond", "aggregate_windows", "merge_windows",
           "pack_exposure", "unpack_exposure"]
