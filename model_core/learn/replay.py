"""A bounded replay buffer of older sequences, filled by reservoir sampling.

Every sequence offered has the same chance ``capacity / offered`` of being in the buffer
(Vitter's Algorithm R, ACM TOMS 1985), whatever the length of the stream, and the buffer never
holds more than ``capacity``. Mixing draws from it into each online update is the classic
answer to catastrophic forgetting in continual learning ("experience replay"; for session
recommenders: Mi, Lin & Faltings, ADER, RecSys 2020, who replay exemplars of older sessions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Snippet:
    """One sequence window: item indices, action ids and event times, oldest first."""

    items: np.ndarray  # int64
    actions: np.ndarray  # int64 action class ids
    timestamps_ms: np.ndarray  # int64


class ReplayBuffer:
    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = int(capacity)
        self.rng = np.random.default_rng([seed, 7])
        self.items: list[Snippet] = []
        self.offered = 0

    def __len__(self) -> int:
        return len(self.items)

    def offer(self, snippet: Snippet) -> None:
        """Algorithm R: keep the first ``capacity``; then the n-th offer replaces a random
        slot with probability ``capacity / n``."""
        self.offered += 1
        if self.capacity <= 0:
            return
        if len(self.items) < self.capacity:
            self.items.append(snippet)
            return
        j = int(self.rng.integers(self.offered))
        if j < self.capacity:
            self.items[j] = snippet

    def sample(self, n: int) -> list[Snippet]:
        """``n`` snippets drawn without replacement (all of them when fewer are held)."""
        if n <= 0 or not self.items:
            return []
        if n >= len(self.items):
            return list(self.items)
        pick = self.rng.choice(len(self.items), n, replace=False)
        return [self.items[i] for i in np.sort(pick)]

    def drop_item(self, slot: int) -> None:
        """Remove item index ``slot`` from every held sequence (its slot went to another
        item); sequences left shorter than two events are dropped."""
        kept = []
        for s in self.items:
            keep = s.items != slot
            if not keep.all():
                s = Snippet(s.items[keep], s.actions[keep], s.timestamps_ms[keep])
            if len(s.items) >= 2:
                kept.append(s)
        self.items = kept


__all__ = ["ReplayBuffer", "Snippet"]
