"""Crash-safe online metrics windows: one aggregator per input partition, kept in the table.

Why: a worker's event-time windows used to live only in memory. After a crash, windows of
events that were processed but whose input offsets were not yet committed were lost (the
redelivered events are recognised as duplicates by the user state and not counted again), and
windows published just before the crash could be published again with other counts.

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

**Size.** A window record holds no ids: distinct users and recommended items are sketches
(:mod:`stream_app.windows.distinct_sketch`), latencies a histogram, so it does not grow with the
number of users, events or items (with 200,000 users in a window, a few KB). Apache Kafka
refuses records over ``message.max.bytes`` (1 MiB by default), so every record is kept under
``max_record_bytes`` as well: should a partition's record still exceed it (many hopping
windows open at once), its oldest open windows are published early, one at a time, until it
fits — an event that later falls into such a window is counted as late in the next one, so
totals stay exact (``PartitionWindows.forced_closes`` counts them).

Limits: the idle timer closes windows by wall clock; a window it closed and published, then
re-opened after a crash by a replay that had no idle gap, can count a late event twice
(once as late in another window). Distinct-user counts, coverage and latency percentiles are
per partition (sum ``events``/``scored``; do not sum ``users``).

The encoding is plain JSON of a whitelisted object graph (no pickle, no code execution).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import orjson

from model_core.metrics import RankingAccumulator
from schemas.exceptions import SeqstreamError
from stream_app.windows import aggregation as online
from stream_app.windows.aggregation import WindowAggregator
from stream_app.windows.distinct_sketch import DistinctSketch
from stream_app.windows.latency_sketch import LatencyHistogram

WINDOW_KEY_PREFIX = b"\x00seqstream/windows/"
#: 3: distinct users and items are sketches; 2: a set of user ids and an item bitmap;
#: 1: sets of user ids and items and a latency list. 1 and 2 are upgraded on read.
_FORMAT = 3
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
def _classes() -> dict[str, type]:
    out = {"WindowAggregator": WindowAggregator, "RankingAccumulator": RankingAccumulator,
           "LatencyHistogram": LatencyHistogram, "DistinctSketch": DistinctSketch}
    w = getattr(online, "_Window", None)
    if w is not None:
        out["_Window"] = w
    return out


def _enc(o):
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        if o.dtype == np.bool_:  # bitmaps: 1 bit per entry, base64
            return {"__nd__": "|b1", "shape": list(o.shape),
                    "bits": base64.b64encode(np.packbits(o.ravel())).decode()}
        if o.dtype == np.uint8:  # sketch registers: base64
            return {"__nd__": "|u1", "shape": list(o.shape),
                    "b64": base64.b64encode(o.tobytes()).decode()}
        return {"__nd__": o.dtype.str, "shape": list(o.shape), "data": o.ravel().tolist()}
    if isinstance(o, (set, frozenset)):
        return {"__set__": _enc_items(o)}
    if isinstance(o, tuple):
        return {"__tuple__": _enc_items(o)}
    if isinstance(o, list):
        return _enc_items(o)
    if isinstance(o, dict):
        if set(map(type, o)) <= _PLAIN and set(map(type, o.values())) <= _PLAIN:
            return {"__map__": [[k, v] for k, v in o.items()]}
        return {"__map__": [[_enc(k), _enc(v)] for k, v in o.items()]}
    name = type(o).__name__
    if name not in _classes():
        raise TypeError(f"window state holds a {type(o).__qualname__}, which the window codec "
                        "does not know; add it to stream_app.windows.persistence._classes")
    if hasattr(o, "__dict__"):
        attrs = vars(o)
    else:
        attrs = {s: getattr(o, s) for s in type(o).__slots__ if hasattr(o, s)}
    return {"__obj__": name, "attrs": {k: _enc(v) for k, v in attrs.items()}}


_PLAIN = frozenset((str, int, float))


def _enc_items(items) -> list:
    # windows hold large collections of plain values (users, items, latencies): copy those
    # as they are (one C-level type scan) instead of one _enc call per element
    if set(map(type, items)) <= _PLAIN:
        return list(items)
    return [_enc(x) for x in items]


def _dec(o, classes: dict[str, type]):
    if isinstance(o, list):
        return o if set(map(type, o)) <= _PLAIN else [_dec(x, classes) for x in o]
    if not isinstance(o, dict):
        return o
    if "__nd__" in o:
        if "bits" in o:
            n = int(np.prod(o["shape"]))
            bits = np.frombuffer(base64.b64decode(o["bits"]), dtype=np.uint8)
            return np.unpackbits(bits, count=n).astype(bool).reshape(o["shape"])
        if "b64" in o:
            raw = base64.b64decode(o["b64"])
            return np.frombuffer(raw, dtype=np.uint8).copy().reshape(o["shape"])
        return np.asarray(o["data"], dtype=np.dtype(o["__nd__"])).reshape(o["shape"])
    if "__set__" in o:
        return set(_dec(o["__set__"], classes))
    if "__tuple__" in o:
        return tuple(_dec(o["__tuple__"], classes))
    if "__map__" in o:
        return {_hashable(_dec(k, classes)): _dec(v, classes) for k, v in o["__map__"]}
    if "__obj__" in o:
        cls = classes.get(o["__obj__"])
        if cls is None:
            raise ValueError(f"unknown class {o['__obj__']!r} in a window record")
        obj = cls.__new__(cls)
        for k, v in o["attrs"].items():
            object.__setattr__(obj, k, _dec(v, classes))
        return obj
    raise ValueError("malformed window record")


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


def encode_record(agg: WindowAggregator, applied_offset: int) -> bytes:
    return orjson.dumps({"format": _FORMAT, "applied_offset": applied_offset,
                         "aggregator": _enc(agg)})


def decode_record(raw: bytes) -> tuple[WindowAggregator, int]:
    d = orjson.loads(raw)
    if d.get("format") not in (1, 2, _FORMAT):
        raise ValueError(f"unknown window record format {d.get('format')!r}")
    agg = _dec(d["aggregator"], _classes())
    if not isinstance(agg, WindowAggregator):
        raise ValueError("window record does not hold a WindowAggregator")
    if d["format"] < _FORMAT:
        _upgrade(agg, d["format"])
    return agg, int(d["applied_offset"])


def _upgrade(agg: WindowAggregator, fmt: int) -> None:
    """Windows written in an older format: their sets of user ids and items (format 1), or
    set of user ids and item bitmap (format 2), become sketches; format 1's latency list a
    histogram."""
    for w in agg._open.values():
        attrs = vars(w)
        if fmt == 1:
            items = attrs.pop("predicted_items", set())
            items = np.fromiter(items, dtype=np.int64, count=len(items))
            w.latency = LatencyHistogram()
            w.latency.add_many(attrs.pop("latencies_ms", []))
        else:
            items = np.flatnonzero(attrs.pop("items_seen", np.zeros(0, dtype=bool)))
        w.items = DistinctSketch()
        w.mark_items(items)
        users = attrs.pop("users", set())
        w.users = DistinctSketch()
        w.users.add_strings(sorted(users))


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
        self.model_version = factory().model_version
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
                p = _Part(agg, applied)
            else:
                p = _Part(self._factory())
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
        others), and moving one to another's time closed its windows before its backlog
        was counted (those events became late and went to other windows)."""
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


__all__ = ["PartitionWindows", "RecordTooLarge", "decode_record", "encode_record", "is_window_key",
           "latest_windows", "metrics_key", "window_key"]
