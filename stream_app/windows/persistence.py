"""Crash-safe online metrics windows: one aggregator per input partition, kept in the table.

Why: windows held only in memory lose, in a crash, the events that were processed but whose
input offsets were not yet committed (the redelivered events are recognised as duplicates by
the user state and not counted again), and windows published just before the crash could be
published again with other counts.

How (at-least-once input, idempotent effects):

- Windows are aggregated **per input partition** (one :class:`~stream_app.windows.aggregation.WindowAggregator`
  each). Its whole state, plus the highest input offset it has accounted
  (``applied_offset``), is written once per batch to the ``user-state`` table under a reserved
  key (``\\x00seqstream/windows/<partition>``), *before* that partition's user states, in the
  same changelog partition. The changelog keeps produce order within a partition, so a
  persisted user state implies the window record of its batch is persisted too.
- A redelivered record is accounted in the windows only if its offset is above
  ``applied_offset``: each input record counts exactly once, whatever the user state says.
  (If the window record survived but some user states of its batch did not, those events are
  processed again from the same state, give the same scores, and are not counted twice.)
- Closed windows are published *before* the window record that no longer holds them is
  written, keyed ``<kind>/<window_start_ms>/p<partition>``. A window can therefore be
  published more than once (after a crash, or a clean stop that flushed it while still open),
  always with the latest key's value complete: **consumers of the metrics topic keep the
  latest record per key**, latest by emission time (:func:`latest_windows`).

**Size.** A window record holds no user ids: distinct users and recommended items are
sketches (:mod:`stream_app.windows.distinct_sketch`), latencies a histogram, so it does not
grow with the number of users or events (with 200,000 users in a window, a few KB); the exact
exposure counts behind its Gini are bounded by ``exposure_cap`` distinct items (4,096: about
10 KB compressed) and dropped past it. Apache Kafka
refuses records over ``message.max.bytes`` (1 MiB by default), so every record is kept under
``max_record_bytes`` as well: should a partition's record still exceed it (many hopping
windows open at once), its oldest open windows are published early, one at a time, until it
fits — an event that later falls into such a window is counted as late in the next one, so
totals stay exact (``PartitionWindows.forced_closes`` counts them).

Limits: the idle timer closes windows by wall clock; a window it closed and published, then
re-opened after a crash by a replay that had no idle gap, can count a late event twice
(once as late in another window). Distinct-user counts, coverage and latency percentiles are
per partition (sum ``events``/``scored``; do not sum ``users``).

The record is :meth:`WindowAggregator.snapshot <stream_app.windows.aggregation.WindowAggregator.snapshot>`
(typed dataclasses with a version) as JSON: no pickle, no code execution, and no tie to the
aggregator's attribute names. Records of snapshot version 4 (windows without beyond-accuracy
sums) are read with empty sums, and those of versions 4 and 5 (windows without exposure
counts) with none: those windows publish no ``gini@K``. Records of formats 1 to 3 (before snapshots) are read by
:mod:`stream_app.windows.legacy_records`; a record of any other version is refused with the
version found and the one expected (:class:`WindowRecordVersionError`).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterable, Sequence

import orjson

from schemas.exceptions import SeqstreamError
from stream_app.windows.aggregation import (
    SNAPSHOT_VERSION,
    AggregatorSnapshot,
    WindowAggregator,
    WindowSnapshot,
)
from stream_app.windows.distinct_sketch import DistinctState
from stream_app.windows.latency_sketch import LatencyState
from stream_app.windows.legacy_records import LEGACY_FORMATS, read_legacy

WINDOW_KEY_PREFIX = b"\x00seqstream/windows/"
#: snapshot versions decoded as snapshots (4: before the windows' beyond-accuracy sums;
#: 5: before their exposure counts)
SNAPSHOT_VERSIONS_READ = (4, 5, SNAPSHOT_VERSION)
DEFAULT_MAX_RECORD_BYTES = 512 * 1024


def window_key(partition: int) -> bytes:
    """Table key of a partition's window record (user ids cannot start with NUL... in
    practice: such a user id would be read as a window record and rejected by its format)."""
    return WINDOW_KEY_PREFIX + str(partition).encode()


def is_window_key(key: bytes) -> bool:
    return key.startswith(WINDOW_KEY_PREFIX)


def metrics_key(kind: str, start_ms: int, partition: int) -> bytes:
    return f"{kind}/{start_ms}/p{partition}".encode()


# --------------------------------------------------------------------------- codec
class WindowRecordVersionError(SeqstreamError, ValueError):
    """A window record of a snapshot version this worker does not read."""


def encode_record(agg: WindowAggregator, applied_offset: int) -> bytes:
    """``{"format": <snapshot version>, "applied_offset": n, "aggregator": <snapshot>}``.

    ``applied_offset`` stays at the top level: :mod:`stream_app.kafka.monotonic` orders
    window records by it without decoding the rest.
    """
    snap = dataclasses.asdict(agg.snapshot())
    version = snap.pop("version")
    return orjson.dumps({"format": version, "applied_offset": applied_offset,
                         "aggregator": snap}, default=_bytes_b64)


def decode_record(raw: bytes) -> tuple[WindowAggregator, int]:
    d = orjson.loads(raw)
    found = d.get("format") if isinstance(d, dict) else None
    if found not in SNAPSHOT_VERSIONS_READ and found not in LEGACY_FORMATS:
        raise WindowRecordVersionError(
            f"window record of snapshot version {found!r}, expected version "
            f"{SNAPSHOT_VERSION} (or a format {LEGACY_FORMATS[0]} to {LEGACY_FORMATS[-1]} "
            "record, read by stream_app.windows.legacy_records): it was written by another "
            "seqstream version; run that version, or reset the worker's state")
    try:
        snap = (_aggregator(d["aggregator"], found) if found in SNAPSHOT_VERSIONS_READ
                else read_legacy(d["aggregator"], found))
        return WindowAggregator.restore(snap), int(d["applied_offset"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed window record (version {found}): {exc!r}") from exc


def _bytes_b64(o):
    if isinstance(o, bytes):
        return base64.b64encode(o).decode()
    raise TypeError(f"a window snapshot holds a {type(o).__qualname__}")


def _fields(cls, d: dict) -> dict:
    """``d`` checked to hold exactly the fields of dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    if set(d) != names:
        raise ValueError(f"{cls.__name__} fields {sorted(d)}, expected {sorted(names)}")
    return d


def _distinct(d: dict) -> DistinctState:
    d = _fields(DistinctState, d)
    return DistinctState(
        hashes=tuple(d["hashes"]) if d["hashes"] is not None else None,
        registers=base64.b64decode(d["registers"]) if d["registers"] is not None else None)


def _latency(d: dict) -> LatencyState:
    d = _fields(LatencyState, d)
    return LatencyState(accuracy=float(d["accuracy"]), floor_ms=float(d["floor_ms"]),
                        zeros=int(d["zeros"]),
                        buckets=tuple((int(b), int(k)) for b, k in d["buckets"]))


def _window(d: dict, version: int) -> WindowSnapshot:
    if version == 4 and isinstance(d, dict):  # before beyond-accuracy sums
        d = {**d, "list_sums": {}}
    if version in (4, 5) and isinstance(d, dict):  # before exposure counts
        d = {**d, "exposure": None}
    d = _fields(WindowSnapshot, d)
    return WindowSnapshot(**{
        **d, "confusion": tuple(tuple(row) for row in d["confusion"]),
        "exposure": base64.b64decode(d["exposure"]) if d["exposure"] is not None else None,
        "users": _distinct(d["users"]), "items": _distinct(d["items"]),
        "latency": _latency(d["latency"])})


def _aggregator(d: dict, version: int) -> AggregatorSnapshot:
    d = _fields(AggregatorSnapshot, {**d, "version": SNAPSHOT_VERSION})
    return AggregatorSnapshot(**{**d, "ks": tuple(d["ks"]),
                                 "windows": tuple(_window(w, version) for w in d["windows"])})


# --------------------------------------------------------------------------- per partition
@dataclasses.dataclass
class _Part:
    agg: WindowAggregator
    applied_offset: int = -1


class PartitionWindows:
    """The worker's windows: one aggregator per input partition, loaded lazily from the table.

    ``table_get(key) -> bytes | None`` reads the table; call :meth:`forget` on a rebalance so
    a partition that moved away and back is read again from the (recovered) table.
    """

    def __init__(self, factory: Callable[[], WindowAggregator],
                 table_get: Callable[[bytes], bytes | None],
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self._factory = factory
        self._get = table_get
        self._event_marks: dict[int, int | None] = {}  # watermark at the last batch
        self._parts: dict[int, _Part] = {}
        first = factory()
        self.model_version = first.model_version
        self.item_counts = first.item_counts  # not in the saved state: set on restore
        self.categories = None  # an ItemCategories the worker learns (set_item_categories)
        self.total_late = 0
        self.max_record_bytes = max_record_bytes
        self.forced_closes = 0  # windows published early to keep a record under the limit

    # ------------------------------------------------------------------ state
    def part(self, partition: int) -> _Part:
        p = self._parts.get(partition)
        if p is None:
            raw = self._get(window_key(partition))
            if raw:
                agg, applied = decode_record(raw)
                agg.set_item_counts(self.item_counts)
                p = _Part(agg, applied)
            else:
                p = _Part(self._factory())
            if self.categories is not None:
                p.agg.set_item_categories(self.categories.codes)
            self._parts[partition] = p
        return p

    def forget(self) -> None:
        self._parts.clear()
        self._event_marks.clear()

    def record(self, partition: int) -> bytes:
        p = self._parts[partition]
        return encode_record(p.agg, p.applied_offset)

    def _bounded_record(self, partition: int, now_ms: int,
                        closed: list[tuple[bytes, bytes]]) -> bytes:
        """The partition's record, under ``max_record_bytes``: while it is over, its oldest
        open window is published early (appended to ``closed``)."""
        raw = self.record(partition)
        agg = self._parts[partition].agg
        while len(raw) > self.max_record_bytes and agg.open_windows():
            closed.extend(self._keyed(partition, agg.close_oldest(now_ms)))
            self.forced_closes += 1
            raw = self.record(partition)
        if len(raw) > self.max_record_bytes:
            raise RecordTooLarge(f"window record of partition {partition} is {len(raw)} bytes "
                                 f"with no window open (max_record_bytes="
                                 f"{self.max_record_bytes})")
        return raw

    def set_model_version(self, version: str) -> None:
        self.model_version = version
        for p in self._parts.values():
            p.agg.model_version = version

    def set_item_counts(self, counts) -> None:
        """A new model's training counts (beyond-accuracy sums of the windows from now on)."""
        self.item_counts = counts
        for p in self._parts.values():
            p.agg.set_item_counts(counts)

    def set_item_categories(self, categories) -> None:
        """The worker's :class:`~stream_app.windows.categories.ItemCategories` (None: no
        ILD): it learns from each batch's events before their lists are accounted."""
        self.categories = categories
        for p in self._parts.values():
            p.agg.set_item_categories(None if categories is None else categories.codes)

    @property
    def watermark_ms(self) -> int | None:
        marks = [p.agg.watermark_ms for p in self._parts.values() if p.agg.watermark_ms is not None]
        return max(marks) if marks else None

    def open_windows(self) -> int:
        return sum(p.agg.open_windows() for p in self._parts.values())

    # ------------------------------------------------------------------ feeding
    def account(self, partitions: Sequence[int], offsets: Sequence[int], events: Sequence,
                positions: Sequence[int], result, latencies_ms: Sequence[float],
                now_ms: int) -> tuple[list[tuple[bytes, bytes]], list[tuple[int, bytes]]]:
        """Account one batch; return (closed windows as keyed metrics records,
        [(partition, window record to write to the table)]).

        ``partitions[i]`` / ``offsets[i]`` describe input record ``i``; ``events[j]`` is the
        valid record at ``positions[j]`` and row ``j`` of ``result``. Records at or below a
        partition's ``applied_offset`` were accounted before a crash and are skipped.
        """
        if self.categories is not None and events:
            self.categories.learn(events)
            for p in self._parts.values():  # the table may have grown into a new array
                p.agg.set_item_categories(self.categories.codes)
        dead_by_part: dict[int, int] = {}
        max_off: dict[int, int] = {}
        n_valid = len(positions)
        valid_at = iter(positions)
        next_valid = next(valid_at, -1)
        for i, (part, off) in enumerate(zip(partitions, offsets, strict=True)):
            is_valid = i == next_valid
            if is_valid:
                next_valid = next(valid_at, -1)
            if off > max_off.get(part, -1):
                max_off[part] = off
            if not is_valid and off > self.part(part).applied_offset:
                dead_by_part[part] = dead_by_part.get(part, 0) + 1
        # the rows (valid events) of each partition not accounted before a crash
        rows_by_part: dict[int, list[int]] = {part: [] for part in max_off}
        applied = {part: self.part(part).applied_offset for part in max_off}
        for j in range(n_valid):
            pos = positions[j]
            part = partitions[pos]
            if offsets[pos] > applied[part]:
                rows_by_part[part].append(j)
        closed: list[tuple[bytes, bytes]] = []
        for part, rows in rows_by_part.items():
            p = self._parts[part]
            late0 = p.agg.total_late
            if rows:
                p.agg.add_batch(events, result, latencies_ms, now_ms, rows=rows)
            if dead_by_part.get(part):
                p.agg.add_dead_letters(dead_by_part[part], now_ms)
            self.total_late += p.agg.total_late - late0
            p.applied_offset = max(p.applied_offset, max_off[part])
            self._event_marks[part] = p.agg.watermark_ms  # event time of its last event
            closed.extend(self._keyed(part, p.agg.close_until(now_ms)))
        # encoded now: a rebalance during the caller's awaits may forget() the partitions
        records = [(part, self._bounded_record(part, now_ms, closed)) for part in rows_by_part]
        return closed, records

    def close_idle(self, idle_ms: int, now_ms: int) -> list[tuple[bytes, bytes]]:
        """Idle timer: move each partition's event time ``idle_ms`` past the time of its own
        last event, and close what that ends.

        Each partition by its own clock: partitions run at different points of event time (a
        partition taken over after a rebalance works through a backlog hours behind the
        others), and moving one to another's time would close its windows before its backlog
        is counted (those events would become late and go to other windows)."""
        out = []
        for part, p in self._parts.items():
            mark = self._event_marks.get(part, p.agg.watermark_ms)
            if mark is not None:
                p.agg.advance_watermark(mark + idle_ms)
            out.extend(self._keyed(part, p.agg.close_until(now_ms)))
        return out

    def flush(self, now_ms: int) -> list[tuple[bytes, bytes]]:
        out = []
        for part, p in self._parts.items():
            out.extend(self._keyed(part, p.agg.flush(now_ms)))
        return out

    @staticmethod
    def _keyed(part: int, windows: Iterable) -> list[tuple[bytes, bytes]]:
        return [(metrics_key(w.window_kind, w.window_start_ms, part), w.to_json())
                for w in windows]


def latest_windows(messages: Iterable) -> list:
    """Metrics topic messages (with ``.key``/``.value``) -> the latest window per key.

    Latest by ``emitted_at_ms`` (the wall time the worker emitted it; the later in the topic
    on a tie), not by topic order: a worker that froze with a window in its producer's
    buffer sends it when it resumes, after the partition's new owner published the same
    window with more of its events. Unkeyed messages (older workers) are all kept.
    """
    from schemas import MetricsWindow

    latest: dict[bytes, MetricsWindow] = {}
    unkeyed: list = []
    for m in messages:
        w = MetricsWindow.from_json(m.value)
        if m.key is None:
            unkeyed.append(w)
            continue
        held = latest.get(m.key)
        if held is None or w.emitted_at_ms >= held.emitted_at_ms:
            latest[m.key] = w
    return [*latest.values(), *unkeyed]


class RecordTooLarge(SeqstreamError):
    """A record the worker would write is over ``max_record_bytes``."""


__all__ = ["PartitionWindows", "RecordTooLarge", "WindowRecordVersionError", "decode_record", "encode_record", "is_window_key",
           "latest_windows", "metrics_key", "window_key"]
