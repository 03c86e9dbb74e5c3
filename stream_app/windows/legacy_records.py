"""Window records of formats 1 to 3, read into today's :class:`AggregatorSnapshot`.

Those formats wrote the aggregator's object graph as tagged JSON (``__obj__`` with its
attributes, ``__map__``, ``__tuple__``, ``__set__``, ``__nd__``). The attribute names read here
are the names *in those records*, frozen with the format: renaming anything in
:mod:`stream_app.windows.aggregation` does not change them. Only the classes those formats
held are accepted (no object is built from a record: tagged objects become dicts).

- format 3: distinct users and items are sketches, latencies a histogram;
- format 2: a set of user ids and a bitmap of recommended items;
- format 1: sets of user ids and of recommended items, and a list of latencies.
"""

from __future__ import annotations

import base64

import numpy as np

from model_core.metrics import Coverage
from stream_app.windows.aggregation import SNAPSHOT_VERSION, AggregatorSnapshot, WindowSnapshot
from stream_app.windows.distinct_sketch import DistinctSketch, DistinctState
from stream_app.windows.latency_sketch import LatencyHistogram, LatencyState

LEGACY_FORMATS = (1, 2, 3)
_CLASSES = frozenset({"WindowAggregator", "_Window", "RankingAccumulator", "LatencyHistogram",
                      "DistinctSketch"})


def _plain(o):
    """Tagged JSON -> plain values; an ``__obj__`` becomes ``{"__class__": name, **attrs}``."""
    if isinstance(o, list):
        return [_plain(x) for x in o]
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
        return set(_plain(o["__set__"]))
    if "__tuple__" in o:
        return tuple(_plain(o["__tuple__"]))
    if "__map__" in o:
        return {_key(_plain(k)): _plain(v) for k, v in o["__map__"]}
    if "__obj__" in o:
        if o["__obj__"] not in _CLASSES:
            raise ValueError(f"unknown class {o['__obj__']!r} in a window record")
        return {"__class__": o["__obj__"], **{k: _plain(v) for k, v in o["attrs"].items()}}
    raise ValueError("malformed window record")


def _key(k):
    return tuple(k) if isinstance(k, list) else k


def _distinct(o) -> DistinctState:
    """A format-3 sketch as it was saved."""
    if o.get("registers") is not None:
        return DistinctState(hashes=None, registers=np.asarray(o["registers"], np.uint8).tobytes())
    return DistinctState(hashes=tuple(sorted(int(h) for h in o["sparse"])), registers=None)


def _users(w: dict) -> DistinctState:
    users = w["users"]
    if isinstance(users, dict):
        return _distinct(users)
    sketch = DistinctSketch()
    sketch.add_strings(sorted(users))
    return sketch.snapshot()


def _items(w: dict, fmt: int) -> DistinctState:
    if fmt == 3:
        return _distinct(w["items"])
    if fmt == 2:
        items = np.flatnonzero(w.get("items_seen", np.zeros(0, dtype=bool)))
    else:
        got = w.get("predicted_items", set())
        items = np.fromiter(got, dtype=np.int64, count=len(got))
    cov = Coverage(0, DistinctSketch())
    cov.update(items)
    return cov.distinct.snapshot()


def _latency(w: dict) -> LatencyState:
    if "latency" not in w:  # format 1: every latency
        hist = LatencyHistogram()
        hist.add_many(w.get("latencies_ms", []))
        return hist.snapshot()
    h = w["latency"]
    return LatencyState(accuracy=float(h["accuracy"]), floor_ms=float(h["floor_ms"]),
                        zeros=int(h["zeros"]), buckets=tuple(sorted(h["counts"].items())))


def _window(w: dict, fmt: int) -> WindowSnapshot:
    ranking = w["ranking"]
    return WindowSnapshot(
        kind=w["kind"], start_ms=int(w["start_ms"]), end_ms=int(w["end_ms"]),
        events=int(w["events"]), predictions=int(w["predictions"]),
        late_events=int(w["late_events"]), dead_letters=int(w["dead_letters"]),
        busy_ms=float(w.get("busy_ms", 0.0)), scored=int(ranking["n"]),
        ranking_sums={k: float(v) for k, v in ranking["sums"].items()},
        confusion=tuple(tuple(row) for row in np.asarray(w["confusion"]).tolist()),
        users=_users(w), items=_items(w, fmt), latency=_latency(w))


def read_legacy(aggregator: dict, fmt: int) -> AggregatorSnapshot:
    """The ``aggregator`` of a format ``fmt`` (1 to 3) record as a current snapshot."""
    a = _plain(aggregator)
    if not isinstance(a, dict) or a.get("__class__") != "WindowAggregator":
        raise ValueError("window record does not hold a WindowAggregator")
    return AggregatorSnapshot(
        version=SNAPSHOT_VERSION, ks=tuple(a["ks"]), window_ms=int(a["window_ms"]),
        lateness_ms=int(a["lateness_ms"]), hop_ms=int(a["hop_ms"]),
        hop_window_ms=int(a["hop_window_ms"]), n_items=int(a["n_items"]),
        model_version=a["model_version"], watermark_ms=a["watermark_ms"],
        closed_until=dict(a["_closed_until"]), total_late=int(a.get("total_late", 0)),
        pending_dead=int(a.get("_pending_dead", 0)), last_wall_ms=a.get("_last_wall_ms"),
        windows=tuple(_window(w, fmt) for _, w in sorted(a["_open"].items())))


__all__ = ["LEGACY_FORMATS", "read_legacy"]
