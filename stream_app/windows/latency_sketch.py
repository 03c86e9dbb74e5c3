"""Latency percentiles of a window in bounded memory: a log-bucket histogram.

The worker writes each open window to its changelog after every micro-batch (crash-safe
windows, :mod:`stream_app.windows.persistence`), so a window that kept every event's latency
would make each batch cost more as the window fills (at 3,000 events/s into 60 s windows,
180,000 floats re-encoded per batch). This histogram has one counter per bucket of relative width
``2 * accuracy`` (the bucketing of DDSketch, Masson et al., VLDB 2019): a latency between
1 ms and 1 hour needs at most ~760 buckets at 1 %, whatever the number of events, and any
percentile it returns is within ``accuracy`` (relative) of the exact order statistic.

Latencies at or below ``floor_ms`` (including negative ones from producer clocks ahead of
the worker's) are counted as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from model_core.metrics import nearest_rank


@dataclass(frozen=True)
class LatencyState:
    """A :class:`LatencyHistogram` as data: ``buckets`` is ``(bucket, count)`` in bucket
    order; the number of latencies is ``zeros`` plus the counts."""

    accuracy: float
    floor_ms: float
    zeros: int
    buckets: tuple[tuple[int, int], ...]


class LatencyHistogram:
    """Counts per logarithmic bucket; ``quantiles`` with bounded relative error."""

    __slots__ = ("accuracy", "floor_ms", "counts", "zeros", "n")

    def __init__(self, accuracy: float = 0.01, floor_ms: float = 1e-3) -> None:
        if not 0 < accuracy < 1:
            raise ValueError(f"accuracy must be in (0, 1), got {accuracy}")
        self.accuracy = accuracy
        self.floor_ms = floor_ms
        self.counts: dict[int, int] = {}
        self.zeros = 0
        self.n = 0

    @property
    def _log_gamma(self) -> float:
        return math.log((1 + self.accuracy) / (1 - self.accuracy))

    def add_many(self, values: Sequence[float] | np.ndarray) -> None:
        if len(values) == 0:
            return
        x = np.asarray(values, dtype=np.float64)
        low = x <= self.floor_ms
        n_low = int(low.sum())
        self.zeros += n_low
        self.n += len(x)
        if n_low == len(x):
            return
        idx = np.ceil(np.log(x[~low]) / self._log_gamma).astype(np.int64)
        buckets, counts = np.unique(idx, return_counts=True)
        c = self.counts
        for b, k in zip(buckets.tolist(), counts.tolist(), strict=True):
            c[b] = c.get(b, 0) + k

    def merge(self, other: LatencyHistogram) -> None:
        if other.accuracy != self.accuracy:
            raise ValueError("cannot merge latency histograms of different accuracy")
        for b, k in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + k
        self.zeros += other.zeros
        self.n += other.n

    def _value(self, bucket: int) -> float:
        # the point of bucket (gamma^(i-1), gamma^i] closest, relatively, to both ends
        gamma = math.exp(self._log_gamma)
        return 2.0 * gamma ** bucket / (gamma + 1.0)

    def quantiles(self, qs: Iterable[float] = (50, 95, 99)) -> list[float | None]:
        """Percentiles (0-100): the order statistic :func:`model_core.metrics.percentiles`
        gives on the same latencies (:func:`~model_core.metrics.nearest_rank`), within
        ``accuracy``."""
        qs = list(qs)
        if self.n == 0:
            return [None for _ in qs]
        order = sorted(self.counts)
        cum = np.cumsum([self.zeros] + [self.counts[b] for b in order])
        out: list[float | None] = []
        for q in qs:
            rank = nearest_rank(self.n, q)
            pos = int(np.searchsorted(cum, rank, side="right"))
            out.append(0.0 if pos == 0 else self._value(order[pos - 1]))
        return out

    def snapshot(self) -> LatencyState:
        return LatencyState(accuracy=self.accuracy, floor_ms=self.floor_ms, zeros=self.zeros,
                            buckets=tuple(sorted(self.counts.items())))

    @classmethod
    def restore(cls, state: LatencyState) -> LatencyHistogram:
        out = cls(accuracy=state.accuracy, floor_ms=state.floor_ms)
        out.counts = {int(b): int(k) for b, k in state.buckets}
        out.zeros = int(state.zeros)
        out.n = out.zeros + sum(out.counts.values())
        return out
