"""The validation gate: a new version is published only if it does not do worse, by more
than a margin, than the version served, on the newest events — events it has not learned.

The learner computes version k from the events up to update k; the events after it, up to
the next update, are the held-out window. Before learning them, both models rank each
window event's item from its user's preceding events (the learner's own sequences, then the
window's earlier events), and HR@K over the window (``window`` newest events at most)
decides: the version is published when ``hr(candidate) >= hr(served) - margin``. The cost: a
version is published one micro-batch later than without the gate, and the window is scored
twice. Each model ranks with its own vocabulary (an item the served version lacks is a miss
for it: that is what serving it would do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model_core.predictor import SequenceBatch
from schemas.actions import action_index


@dataclass(frozen=True)
class GateResult:
    candidate_hr: float
    served_hr: float
    n: int  # window events scored (those whose user had a preceding event)
    margin: float

    @property
    def passed(self) -> bool:
        return self.n == 0 or self.candidate_hr >= self.served_hr - self.margin


def window_prefixes(users: dict, vocab, events: Sequence, max_len: int
                    ) -> tuple[list[tuple[list[str], list[int], list[int]]], list[str]]:
    """For each event of ``events`` whose user has a preceding event: that user's preceding
    events (item ids, action ids, times; at most ``max_len``) and the event's item id.

    ``users``: the learner's sequences (item indices of ``vocab``), as they stood before
    ``events``; the window's own events extend them as it goes."""
    seqs: dict[str, tuple[list[str], list[int], list[int]]] = {}
    prefixes, targets = [], []
    for ev in events:
        seq = seqs.get(ev.user_id)
        if seq is None:
            held = users.get(ev.user_id)
            seq = ((vocab.item_ids(held.items), list(held.actions), list(held.ts))
                   if held is not None else ([], [], []))
            seqs[ev.user_id] = seq
        if seq[0]:
            prefixes.append((seq[0][-max_len:], seq[1][-max_len:], seq[2][-max_len:]))
            targets.append(ev.item_id)
        seq[0].append(ev.item_id)
        seq[1].append(action_index(ev.action))
        seq[2].append(ev.timestamp_ms)
    return prefixes, targets


def hit_rate(model, prefixes: list, targets: list[str], k: int, exclude_history: bool = False,
             batch_size: int = 512) -> float:
    """HR@k of ``model`` predicting each target from its prefix (its own vocabulary)."""
    if not targets:
        return float("nan")
    index = model.vocab.indices
    hits = 0
    for lo in range(0, len(targets), batch_size):
        part = prefixes[lo:lo + batch_size]
        batch = SequenceBatch(
            items=[index(p[0]).astype(np.int32) for p in part],
            actions=[np.asarray(p[1], np.uint8) for p in part],
            timestamps_ms=[np.asarray(p[2], np.int64) for p in part])
        top = model.predict_topk(batch, k, exclude_history=exclude_history).items
        want = index(targets[lo:lo + batch_size]).astype(np.int64)
        hits += int(((top == want[:, None]) & (want[:, None] > 0)).any(axis=1).sum())
    return hits / len(targets)


def check(candidate, served, users: dict, events: Sequence, k: int, margin: float,
          window: int, max_len: int, exclude_history: bool = False) -> GateResult:
    """Score ``candidate`` and ``served`` on the newest ``window`` of ``events``."""
    events = list(events)[-window:] if window else list(events)
    prefixes, targets = window_prefixes(users, candidate.vocab, events, max_len)
    return GateResult(hit_rate(candidate, prefixes, targets, k, exclude_history),
                      hit_rate(served, prefixes, targets, k, exclude_history),
                      len(targets), margin)


__all__ = ["GateResult", "check", "hit_rate", "window_prefixes"]
