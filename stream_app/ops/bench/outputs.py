"""A variant's output topic read back: what came out when, turned into a drain rate and
end-to-end latencies."""

from __future__ import annotations

import asyncio
import time

import orjson

from stream_app.ops.bench.variants import CEILINGS


class Collector:
    """Reads an output topic from its beginning, as it grows, keeping (timestamp ms, value).

    The parent counts outputs by reading them: the embedded broker's ListOffsets answers the
    base offset of the last *batch* + 1, not the high watermark, so end offsets cannot count
    records there. Variants with one output per event are read once they have drained the
    pre-loaded events (:meth:`wait_until_quiet`), so that reading 100,000 records does not
    take CPU from the variant; the ceilings' few records are read as they come.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[int, bytes]] = []
        self.events = 0  # events the records stand for (a ceiling record holds many)
        self._c = None

    async def start(self, partitions: int) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                   max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
        await self._c.start()
        tps = [TopicPartition(self.topic, p) for p in range(partitions)]
        self._c.assign(tps)
        await self._c.seek_to_beginning(*tps)

    async def stop(self) -> None:
        if self._c is not None:
            await self._c.stop()

    async def wait_until_quiet(self, timeout_s: float, quiet_s: float = 1.0,
                               alive=lambda: True) -> None:
        """Wait, without reading records, until the topic holds records and has not grown for
        ``quiet_s`` (end offsets polled: cheap for the parent, which shares the machine with
        the variant; a downstream consumer would run elsewhere). The embedded broker's end
        offsets lag by a batch, so they tell growth, not the count: :meth:`collect` reads
        (and counts) the records afterwards."""
        tps = list(self._c.assignment())
        deadline = time.monotonic() + timeout_s
        last_total, last_change, grown = None, time.monotonic(), False
        while time.monotonic() < deadline and alive():
            total = sum((await self._c.end_offsets(tps)).values())
            now = time.monotonic()
            if total != last_total:
                grown = grown or last_total is not None or total > 0
                last_total, last_change = total, now
            elif grown and now - last_change >= quiet_s:
                return
            await asyncio.sleep(0.25)

    async def collect(self, expect: int | None, timeout_s: float, idle_s: float = 2.0,
                      alive=lambda: True, busy=lambda: False) -> int:
        """Until ``expect`` events are out or (``expect`` None) none came for ``idle_s``
        after the first one (and ``busy()`` is false)."""
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        start_n = self.events
        while time.monotonic() < deadline:
            got = await self._c.getmany(timeout_ms=200, max_records=50_000)
            for msgs in got.values():
                for m in msgs:
                    self.records.append((m.timestamp, m.value))
                    self.events += _events_in(m.value)
            if got:
                last = time.monotonic()
            if expect is not None and self.events >= expect:
                return self.events
            if (expect is None and self.events > start_n and not busy()
                    and time.monotonic() - last >= idle_s):
                return self.events
            if not alive():
                raise RuntimeError(f"the variant's process exited ({self.events} events out)")
        raise TimeoutError(f"{self.topic}: {self.events} events out after {timeout_s:.0f} s "
                           f"(expected {expect})")


def _events_in(value: bytes) -> int:
    if value[:5] == b'{"n":':
        return int(value[5:value.index(b",")])
    return 1


def _drain_rate(points: list[tuple[int, int]]) -> float | None:
    """points: (output time ms, events in that output). Events after the first output
    instant divided by the time from first to last output."""
    if not points:
        return None
    points.sort()
    t_first, t_last = points[0][0], points[-1][0]
    first = sum(n for t, n in points if t == t_first)
    total = sum(n for _, n in points)
    return (total - first) / ((t_last - t_first) / 1000.0) if t_last > t_first else None


def analyse(name: str, outputs: list[tuple[int, bytes]], drain_ids: set[str] | None,
            paced_sent: dict[str, float], paced_t0_ms: float) -> tuple[float | None, list, int]:
    """(drain rate, half-load latencies ms, outputs seen) from an output topic."""
    drain_pts: list[tuple[int, int]] = []
    lat: list[float] = []
    n = 0
    if name in CEILINGS:
        for ts, val in outputs:
            d = orjson.loads(val)
            n += d["n"]
            old = [t for t in d["ts"] if t < paced_t0_ms]
            if old:
                drain_pts.append((ts, len(old)))
            lat.extend(ts - t for t in d["ts"] if t >= paced_t0_ms)
        return _drain_rate(drain_pts), lat, n
    for ts, val in outputs:
        eid = orjson.loads(val).get("event_id")
        n += 1
        sent = paced_sent.get(eid)
        if sent is not None:
            lat.append(ts - sent)
        elif drain_ids is None or eid in drain_ids:
            drain_pts.append((ts, 1))
    return _drain_rate(drain_pts), lat, n
