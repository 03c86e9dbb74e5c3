"""Per-user state expires after a time without events (``SEQSTREAM_STATE_RETENTION_S``).

Event time, not wall clock: a user whose last event is more than the retention older than the
newest event this worker has seen (its watermark) is expired — the state leaves the table and
a tombstone goes to its changelog partition, so recovery does not bring it back. A replayed
log of last year then expires what it would have expired then.

:class:`RetentionIndex` is the pure part: the last event time of every user state the worker
holds, by input partition (the changelog partition a tombstone must go to). It learns keys from
the worker's own writes and from changelog records the table applies (recovery, standbys);
a key learnt from the changelog has its time read from the state itself on the first sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class RetentionIndex:
    """Last event time (ms) of each held state, by input partition; see the module doc."""

    def __init__(self, retention_ms: int, sweep_every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if retention_ms <= 0:
            raise ValueError("retention_ms must be positive")
        self.retention_ms = retention_ms
        self.sweep_every_s = sweep_every_s
        self._clock = clock
        self._next_sweep = clock() + sweep_every_s
        self.parts: dict[int, dict[bytes, int | None]] = {}
        self.expired_total = 0

    def touch(self, partition: int, key: bytes, last_event_ms: int) -> None:
        self.parts.setdefault(partition, {})[key] = last_event_ms

    def learn(self, partition: int, key: bytes, present: bool) -> None:
        """A changelog record applied to the table: a value (time read later) or a tombstone."""
        if present:
            self.parts.setdefault(partition, {})[key] = None
        else:
            self.forget(partition, key)

    def forget(self, partition: int, key: bytes) -> None:
        keys = self.parts.get(partition)
        if keys is not None:
            keys.pop(key, None)

    def due(self) -> bool:
        """True once per ``sweep_every_s``."""
        now = self._clock()
        if now < self._next_sweep:
            return False
        self._next_sweep = now + self.sweep_every_s
        return True

    def expired(self, watermark_ms: int, partitions: Iterable[int],
                last_event_ms: Callable[[int, bytes], int | None]) -> dict[int, list[bytes]]:
        """Keys of ``partitions`` whose last event lies more than the retention before
        ``watermark_ms``, by partition; removed from the index. ``last_event_ms(partition,
        key)`` reads a state's last event time (None: no state held) for keys learnt from
        the changelog."""
        cutoff = watermark_ms - self.retention_ms
        out: dict[int, list[bytes]] = {}
        for p in partitions:
            keys = self.parts.get(p)
            if not keys:
                continue
            gone = []
            for key, last in keys.items():
                if last is None:
                    last = last_event_ms(p, key)
                    if last is None:
                        gone.append(key)
                        continue
                    keys[key] = last
                if last < cutoff:
                    gone.append(key)
                    out.setdefault(p, []).append(key)
            for key in gone:
                del keys[key]
        self.expired_total += sum(len(v) for v in out.values())
        return out
