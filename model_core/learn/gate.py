"""The validation gate: a new version serves only if it does not do worse, by more than a
margin, than the version served, on the newest events — events it has not learned.

    gate = Gate(learner, k=20)       # schedule.gate = W events, schedule.margin = M
    for batch in micro_batches:      # each scored by gate.served
        gate.decide(batch)           # the held version against the served, on batch
        if learner.learn(batch):     # version k learned from the events up to batch
            gate.hold()              # ... waits for the next batch

The learner computes version k from the events up to update k; the next micro-batch (the
events up to update k + 1), which it has not learned, is the held-out window. Before
learning them, both models rank each of the window's newest ``schedule.gate`` events from
its user's preceding events (the learner's own sequences, then the micro-batch's earlier
events), and HR@K decides: the version serves from then on when ``hr(candidate) >=
hr(served) - margin``; otherwise the served version stays and learning goes on from the
refused one (its later versions are scored against the same served version).

Only users the candidate has not learned since the served version are scored: a session or
a user's run of events that continues across the boundary favours the version that has just
taken its first half in gradient steps, while the version serves the events after the window
(on a YooChoose validation prefix the gate that scored every window event let through the
8-step schedule that lost 0.022 HR@20). A window with no such user passes.

One implementation for both drivers: ``seqstream learner``
(:class:`stream_app.learner.driver.StreamLearner`: the decision is whether a version is
published) and the offline replay (:func:`model_core.learn.measure.replay_stream`: which
version scores the next events), so a gated stream and its replay give the same figures.
The cost: a version serves one micro-batch later than without the gate, and the window is
scored twice. Each model ranks with its own vocabulary (an item the served version lacks is
a miss for it: that is what serving it would do).

Off by default (``gate=0``). It was meant to let the 8-step GRU4Rec schedule (lr 0.005) serve
where it helps (Taobao) and not where it hurts (YooChoose: −0.023 HR@20), but on the
YooChoose validation prefix, gated against the served version alone, 16 of 22 such versions
passed and HR@20 still fell by 0.0225 (each a little worse than the one before, within the
margin), and on the Taobao prefix the one-micro-batch delay halved the gain (+0.0084 →
+0.0048). With the floor against the start version the YooChoose loss fell to −0.0073 (margin
0), still beyond the issue's 0.005 (BENCHMARKS.md "Online learning").
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
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
    start_hr: float | None = None  # the version the learner started from, on the same events

    @property
    def passed(self) -> bool:
        floor = max(self.served_hr, self.start_hr if self.start_hr is not None else 0.0)
        return self.n == 0 or self.candidate_hr >= floor - self.margin

    def to_dict(self) -> dict:
        return {"candidate_hr": self.candidate_hr, "served_hr": self.served_hr,
                "start_hr": self.start_hr, "n": self.n, "margin": self.margin,
                "passed": self.passed}


def window_prefixes(users: dict, vocab, events: Sequence, max_len: int, window: int = 0,
                    skip: frozenset | set = frozenset()
                    ) -> tuple[list[tuple[list[str], list[int], list[int]]], list[str]]:
    """For each of the last ``window`` events of ``events`` (0: all) whose user has a
    preceding event and is not in ``skip``: that user's preceding events (item ids, action
    ids, times; at most ``max_len``) and the event's item id.

    ``users``: the learner's sequences (item indices of ``vocab``), as they stood before
    ``events``; every event of ``events`` extends them as it goes."""
    seqs: dict[str, tuple[list[str], list[int], list[int]]] = {}
    prefixes, targets = [], []
    first = len(events) - window if window else 0
    for i, ev in enumerate(events):
        seq = seqs.get(ev.user_id)
        if seq is None:
            held = users.get(ev.user_id)
            seq = ((vocab.item_ids(held.items), list(held.actions), list(held.ts))
                   if held is not None else ([], [], []))
            seqs[ev.user_id] = seq
        if seq[0] and i >= first and ev.user_id not in skip:
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
          window: int, max_len: int, exclude_history: bool = False,
          skip: frozenset | set = frozenset(), start=None) -> GateResult:
    """Score ``candidate`` and ``served`` (and ``start`` when given) on the newest
    ``window`` of ``events`` (the events of users in ``skip`` left out)."""
    prefixes, targets = window_prefixes(users, candidate.vocab, list(events), max_len, window,
                                        skip)
    return GateResult(hit_rate(candidate, prefixes, targets, k, exclude_history),
                      hit_rate(served, prefixes, targets, k, exclude_history),
                      len(targets), margin,
                      None if start is None or start is served
                      else hit_rate(start, prefixes, targets, k, exclude_history))


class Gate:
    """Which version of ``learner``'s model serves (see the module docstring); with the
    gate off (``schedule.gate`` 0, the default) every version serves at once and
    :attr:`served` is the learner's model itself."""

    def __init__(self, learner, k: int = 20, exclude_history: bool = False) -> None:
        self.learner = learner
        self.k = k
        self.exclude_history = exclude_history
        self.window = int(learner.schedule.gate)
        self.margin = float(learner.schedule.margin)
        self.served = copy.deepcopy(learner.model) if self.window else learner.model
        self.start = self.served  # the floor: never below the version it started from
        self.held = False  # a version waits for its window
        self.evicted: list[int] = []  # slots reused since the served version (see hold)
        self.refused = 0
        self.learnt_users: set[str] = set()  # users learnt since the served version
        self.last: GateResult | None = None

    @property
    def on(self) -> bool:
        return self.window > 0

    def hold(self, evicted: Sequence[int] = (), users: Iterable[str] = ()) -> bool:
        """The learner made a version (its updates since the last call reused the slots
        ``evicted`` and learned events of ``users``): True when it serves at once (gate
        off), False when it waits."""
        self.evicted += [int(s) for s in evicted]
        if self.on:
            self.learnt_users.update(users)
        self.held = self.on
        return not self.on

    def take_evicted(self) -> list[int]:
        """The slots reused between the version that served and the one serving now (the
        users' states drop them when the new one starts to serve)."""
        out, self.evicted = self.evicted, []
        return out

    def decide(self, events: Sequence) -> GateResult | None:
        """Before the learner learns ``events``: the held version against the served one
        on them; passed, it serves from now on. None when no version is held."""
        if not self.held:
            return None
        self.held = False
        lr = self.learner
        res = check(lr.model, self.served, lr.users, events, self.k, self.margin,
                    self.window, lr.max_len, self.exclude_history, self.learnt_users,
                    self.start)
        self.last = res
        if res.passed:
            self.served = copy.deepcopy(lr.model)
            self.learnt_users = set()
        else:
            self.refused += 1
        return res


__all__ = ["Gate", "GateResult", "check", "hit_rate", "window_prefixes"]
