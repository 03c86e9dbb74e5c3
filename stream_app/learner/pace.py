"""Keeping up with the stream: how far behind the learner is, and what it does about it.

The lag is the number of events between the learner's position and the end of the events
topic (summed over partitions), measured by the service about once a second. Up to
``max_lag`` (0 = no bound) every event is learned. Beyond it, by ``policy``:

- ``subsample``: each event is learned with probability ``max_lag / lag``, chosen by a hash
  of its event id (deterministic: a replay of the same log drops the same events), so the
  learner's work shrinks in proportion until it is back within the bound;
- ``skip``: the learner jumps to the end of the topic; the events jumped over are counted;
- ``alert``: every event is still learned.

Each way, a ``learner_lag`` alert goes out when the learner first falls beyond the bound
(again only after it was back within it), and the events not learned are counted
(``skipped``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

POLICIES = ("subsample", "skip", "alert")


@dataclass
class LagPolicy:
    max_lag: int = 0
    policy: str = "subsample"
    behind: bool = False  # beyond the bound at the last observation
    episodes: int = 0  # times it fell beyond the bound

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"lag policy must be one of {', '.join(POLICIES)}, "
                             f"got {self.policy!r}")

    def observe(self, lag: int) -> bool:
        """Take a lag measurement; True when it starts an episode beyond the bound (alert)."""
        was = self.behind
        self.behind = bool(self.max_lag) and lag > self.max_lag
        if self.behind and not was:
            self.episodes += 1
            return True
        return False

    def share(self, lag: int) -> float:
        """Share of events to learn at this lag (1.0 within the bound)."""
        if not self.max_lag or lag <= self.max_lag or self.policy != "subsample":
            return 1.0
        return self.max_lag / lag

    def must_skip(self, lag: int) -> bool:
        return self.policy == "skip" and bool(self.max_lag) and lag > self.max_lag


def keep_event(event_id: str, share: float) -> bool:
    """Whether a subsample of ``share`` keeps ``event_id`` (by a hash of it)."""
    if share >= 1.0:
        return True
    return zlib.crc32(event_id.encode()) % 100_000 < share * 100_000


__all__ = ["LagPolicy", "POLICIES", "keep_event"]
