"""How late an event loop runs what is ready: a probe that sleeps and measures its delay.

A coroutine sleeps ``interval_s`` again and again; each wake-up's delay beyond the interval
is how long a ready callback (an HTTP request that arrived, a batch of events) waited for
the loop: the loop busy with other work, or its thread without a core or the GIL. The
worker feeds the delays to ``seqstream_event_loop_lag_seconds`` (Prometheus); the serving
benchmark's client keeps its own (:meth:`LoopLag.percentiles_ms`), so that the latency it
measures can be told apart from its own delays.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from model_core.metrics import percentiles


class LoopLag:
    """The delays of the loop :meth:`run` runs on: the last ``keep`` of them, and handed
    to ``sink`` (seconds, a list at a time: every ``flush_every`` wake-ups)."""

    def __init__(self, interval_s: float = 0.01, keep: int = 20_000,
                 sink: Callable[[list[float]], None] | None = None,
                 flush_every: int = 100) -> None:
        self.interval_s = interval_s
        self.delays_s: deque[float] = deque(maxlen=keep)
        self.sink = sink
        self.flush_every = flush_every

    async def run(self) -> None:
        interval, pending = self.interval_s, []
        while True:
            t = time.perf_counter()
            await asyncio.sleep(interval)
            delay = max(0.0, time.perf_counter() - t - interval)
            self.delays_s.append(delay)
            if self.sink is not None:
                pending.append(delay)
                if len(pending) >= self.flush_every:
                    self.sink(pending)
                    pending = []

    def percentiles_ms(self) -> dict[str, float | None]:
        """p50, p99 and the largest delay kept, in ms (None before the first wake-up)."""
        d = np.asarray(self.delays_s, dtype=np.float64) * 1000.0
        p50, p99 = percentiles(d, (50, 99))
        return {"p50": None if p50 is None else round(p50, 2),
                "p99": None if p99 is None else round(p99, 2),
                "max": round(float(d.max()), 2) if len(d) else None}


__all__ = ["LoopLag"]
