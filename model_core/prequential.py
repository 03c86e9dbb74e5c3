"""Prequential (test-then-learn) evaluation: the one engine shared by the stream and offline.

For each event, in order: score it against the user's latest prediction (rank of the event's
item in that top-K list, and whether the predicted next action was right), append it to the
user's sequence, then predict from the updated sequence. A user with several events in one
batch gets one model row per event (each the sequence as it stood after that event) and each
event is scored against the prediction made after the previous one, so the figures do not
depend on how events were batched.

The live stream calls :meth:`PrequentialEngine.process` once per micro-batch with states read
from its table; ``seqstream evaluate --protocol prequential`` calls :func:`run_prequential`
over a whole log. Both therefore run the same state and metric code.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from model_core.metrics import MISS, RankingAccumulator, confusion_matrix, report_from_confusion
from model_core.predictor import Recommender, SequenceBatch, TopK
from model_core.sequence_state import UserState, event_hash, legacy_event_hash
from schemas.actions import ACTIONS, N_ACTIONS, action_index
from schemas.event import Event


@dataclass(slots=True)
class Score:
    """The prequential test of one event against its user's previous prediction."""

    index: int  # position of the event in the batch
    rank: int  # 1-based rank of the event's item in the previous top-K; MISS (0) if absent
    action_true: int
    action_pred: int  # -1 when the model has no next-action head


@dataclass(slots=True)
class BatchResult:
    topk: TopK  # one row per event of the batch (duplicates included)
    scores: list[Score]  # events that had a previous prediction (duplicates excluded)
    duplicates: list[int]  # positions of redelivered events (already in the user's window)
    touched: dict[str, UserState]  # final state of every user in the batch


class PrequentialEngine:
    def __init__(self, model: Recommender, max_len: int = 50, k: int = 20,
                 exclude_history: bool = False) -> None:
        self.model = model
        self.max_len = max_len
        self.k = k
        self.exclude_history = exclude_history
        self._vocab_index = model.vocab.index

    def process(self, events: Sequence[Event], states: MutableMapping[str, UserState],
                offsets: Sequence[int] | None = None) -> BatchResult:
        """Test-then-learn over one batch. ``states`` is read and written (user -> state).

        Per batch, not per event, where it can be: each user's new events are gathered in
        plain lists and joined to the stored arrays once; every model row is a slice (view)
        of that joined sequence; ranks are found for all scored events at once.

        The same as :meth:`prepare`, the step's :meth:`PrequentialStep.predict`, then :meth:`complete`
        (the worker runs only the model call off its event loop).
        """
        step = self.prepare(events, states, offsets)
        return self.complete(step, step.predict())

    def prepare(self, events: Sequence[Event], states: MutableMapping[str, UserState],
                offsets: Sequence[int] | None = None) -> PrequentialStep:
        """The batch's sequences and what each event is scored against (no model call)."""
        index = self._vocab_index
        max_len = self.max_len
        n = len(events)
        work: dict[str, _UserWork] = {}
        row_work: list[_UserWork] = [None] * n  # type: ignore[list-item]
        row_start = [0] * n
        row_end = [0] * n
        # for each event: previous prediction: ("state", items, action) | ("row", j) | None
        prev_refs: list[tuple | None] = [None] * n
        targets = [0] * n
        true_actions = [0] * n
        duplicates: list[int] = []
        hashes = [event_hash(ev.event_id) for ev in events]
        for ev in events:
            if ev.user_id not in work:
                work[ev.user_id] = _UserWork(states.get(ev.user_id) or UserState())
        # redeliveries: an event id already in its user's stored window. One batch-wide test
        # against every stored id hash; only the events it flags (true redeliveries, or a
        # hash another user's window also holds) are looked up in their own user's window
        stored = [w.state.hashes for w in work.values() if w.base]
        maybe_stored = (np.isin(np.asarray(hashes, dtype=np.uint64),
                                np.concatenate(stored)).tolist() if stored else [False] * n)
        # the batch's new (not redelivered) events, in order; each user's are at w.new_at
        new_items: list[int] = []
        new_actions: list[int] = []
        new_ts: list[int] = []
        new_hashes: list[int] = []
        new_fields = (new_items, new_actions, new_ts, new_hashes)
        for i, ev in enumerate(events):
            w = work[ev.user_id]
            h = hashes[i]
            length = w.length
            start = length - max_len if length > max_len else 0
            pos = w.new_pos.get(h, -1) if w.new_pos else -1
            if pos < start:
                pos = w.stored_position(h, start) if maybe_stored[i] else -1
                if pos < 0 and w.state.legacy:  # stored before the 64-bit hashes: its crc32
                    pos = w.stored_position(legacy_event_hash(ev.event_id), start)
            if (pos < 0 and offsets is not None and offsets[i] <= w.source_offset
                    and length >= max_len and ev.timestamp_ms <= w.timestamp_at(start, new_ts)):
                # A redelivery of an event that has already slid out of the id-hash window
                # (a user with more than max_len events in the redelivered range): its input
                # offset is at or below the highest applied, and it is older than the window.
                pos = length - 1
            row_work[i] = w
            row_start[i] = start
            if pos >= 0:
                duplicates.append(i)
                row_end[i] = pos + 1
                continue
            if w.last_row >= 0:
                prev_refs[i] = ("row", w.last_row)
            elif w.state.last_pred_action != -1 or len(w.state.last_pred_items):
                prev_refs[i] = ("state", w.state.last_pred_items, w.state.last_pred_action)
            item = index(ev.item_id)
            action = action_index(ev.action)
            w.new_pos[h] = length
            w.new_at.append(len(new_items))
            new_items.append(item)
            new_actions.append(action)
            new_ts.append(ev.timestamp_ms)
            new_hashes.append(h)
            if offsets is not None and offsets[i] > w.source_offset:
                w.source_offset = offsets[i]
            w.length = length = length + 1
            row_start[i] = length - max_len if length > max_len else 0
            row_end[i] = length
            targets[i] = item
            true_actions[i] = action
            w.last_row = i

        joined = _join(list(work.values()), new_fields)
        rows_items, rows_actions, rows_ts = (
            [f[w.at + s:w.at + e] for w, s, e in zip(row_work, row_start, row_end, strict=True)]
            for f in joined[:3])

        return PrequentialStep(self, n, SequenceBatch(rows_items, rows_actions, rows_ts), work, joined,
                     prev_refs, targets, true_actions, duplicates, states)

    def complete(self, step: PrequentialStep, topk: TopK) -> BatchResult:
        """Score the batch's events and update its users' states from the model's ``topk``
        (one row per event of :meth:`prepare`'s batch)."""
        n, work, joined, prev_refs = step.n, step.work, step.joined, step.prev_refs
        targets, true_actions, states = step.targets, step.true_actions, step.states
        max_len = self.max_len
        pred_items = topk.items
        pred_actions = (np.argmax(topk.action_probs, axis=1) if topk.action_probs is not None
                        else np.full(n, -1, dtype=np.int64))
        pred_actions_l = pred_actions.tolist()

        scored = [i for i in range(n) if prev_refs[i] is not None]
        ranks = _ranks(pred_items, prev_refs, scored, targets)
        scores: list[Score] = []
        for i, rank in zip(scored, ranks, strict=True):
            ref = prev_refs[i]
            prev_action = pred_actions_l[ref[1]] if ref[0] == "row" else int(ref[2])
            scores.append(Score(i, rank, true_actions[i], prev_action))

        touched: dict[str, UserState] = {}
        for user, w in work.items():
            st = w.state
            if w.new_at:  # the last max_len events, copied out of the batch's arrays
                a = w.at + (w.length - max_len if w.length > max_len else 0)
                b = w.at + w.length
                st.items, st.actions, st.timestamps_ms, st.hashes = (
                    f[a:b].copy() for f in joined)
            st.source_offset = w.source_offset
            if w.last_row >= 0:
                st.last_pred_items = pred_items[w.last_row].astype(np.int32)
                st.last_pred_action = pred_actions_l[w.last_row]
            touched[user] = st
            states[user] = st
        return BatchResult(topk, scores, step.duplicates, touched)


@dataclass(slots=True)
class PrequentialStep:
    """A batch between :meth:`PrequentialEngine.prepare` and ``complete``."""

    engine: PrequentialEngine
    n: int
    batch: SequenceBatch  # one row per event: the sequence as it stood after that event
    work: dict
    joined: list
    prev_refs: list
    targets: list
    true_actions: list
    duplicates: list[int]
    states: MutableMapping

    def predict(self) -> TopK:
        """The model's top-K for every row (safe to run in another thread)."""
        return self.predict_rows(0, len(self.batch))

    def predict_rows(self, start: int, end: int) -> TopK:
        """The model's top-K for rows ``[start, end)``: each row is scored on its own, so
        the parts of a batch give its :meth:`predict` (safe to run in another thread)."""
        e = self.engine
        return e.model.predict_topk(self.batch.rows(start, end), e.k,
                                    exclude_history=e.exclude_history)


class _UserWork:
    """One user's sequence during a batch: the stored arrays + the batch's new events."""

    __slots__ = ("state", "base", "length", "new_at", "new_pos", "source_offset", "last_row",
                 "at")

    def __init__(self, state: UserState) -> None:
        self.state = state
        self.base = len(state.items)
        self.length = self.base
        self.new_at: list[int] = []  # where this user's new events are in the batch's lists
        self.new_pos: dict[int, int] = {}  # id hash -> position, for this batch's events
        self.source_offset = state.source_offset
        self.last_row = -1
        self.at = 0  # where the user's joined sequence starts in the batch's joined arrays

    def stored_position(self, h: int, start: int) -> int:
        """Position of id hash ``h`` among the stored events in the window (from
        ``start``), or -1."""
        hit = np.flatnonzero(self.state.hashes[start:self.base] == h)
        return start + int(hit[-1]) if len(hit) else -1

    def timestamp_at(self, pos: int, new_ts: list[int]) -> int:
        if pos < self.base:
            return int(self.state.timestamps_ms[pos])
        return new_ts[self.new_at[pos - self.base]]


_DTYPES = (np.int32, np.uint8, np.int64, np.uint64)  # items, actions, times, id hashes


def _join(users: list[_UserWork], new_fields: tuple[list, ...]) -> list[np.ndarray]:
    """Every user's whole sequence of the batch (stored events, then new ones), end to end in
    one array per field (items, actions, times, hashes); sets each user's ``at``.

    One concatenation and one gather per field for the whole batch, not one per user.
    """
    stored_at = 0
    n_stored = sum(w.base for w in users)
    order: list[int] = []  # for each joined position: where it is in stored + new
    for w in users:
        w.at = len(order)
        order.extend(range(stored_at, stored_at + w.base))
        order.extend([n_stored + k for k in w.new_at])
        stored_at += w.base
    gather = np.asarray(order, dtype=np.int64)
    out = []
    for f, (name, dtype) in enumerate(zip(("items", "actions", "timestamps_ms", "hashes"),
                                          _DTYPES, strict=True)):
        parts = [getattr(w.state, name) for w in users if w.base]
        parts.append(np.asarray(new_fields[f], dtype=dtype))
        out.append(np.concatenate(parts, dtype=dtype, casting="unsafe")[gather])
    return out


def _ranks(pred_items: np.ndarray, prev_refs: list, scored: list[int],
           targets: list[int]) -> list[int]:
    """1-based rank of each scored event's item in its previous top-K list (MISS if absent)."""
    if not scored:
        return []
    out = [MISS] * len(scored)
    from_rows = [(o, i) for o, i in enumerate(scored) if prev_refs[i][0] == "row"]
    from_state = [(o, i) for o, i in enumerate(scored) if prev_refs[i][0] == "state"]
    groups = []
    if from_rows:
        groups.append((from_rows, pred_items[[prev_refs[i][1] for _, i in from_rows]]))
    if from_state:
        lists = [prev_refs[i][1] for _, i in from_state]
        k = len(lists[0])
        if k and all(len(x) == k for x in lists):
            groups.append((from_state, np.stack(lists)))
        else:  # mixed lengths (k changed between batches): one at a time
            for o, i in from_state:
                out[o] = _rank(np.asarray(prev_refs[i][1]), targets[i])
    for members, prev in groups:
        t = np.array([targets[i] for _, i in members], dtype=np.int64)
        hit = prev == t[:, None]
        found = hit.any(axis=1) & (t != 0)
        rank = np.where(found, hit.argmax(axis=1) + 1, MISS).tolist()
        for (o, _), r in zip(members, rank, strict=True):
            out[o] = r
    return out


def _rank(items: np.ndarray, target: int) -> int:
    if target == 0:  # unknown item: the model could not have predicted it
        return MISS
    hit = np.flatnonzero(items == target)
    return int(hit[0]) + 1 if len(hit) else MISS


@dataclass
class PrequentialSummary:
    n_events: int = 0
    n_scored: int = 0
    ranking: RankingAccumulator = field(default_factory=lambda: RankingAccumulator((10, 20)))
    action_confusion: np.ndarray = field(
        default_factory=lambda: np.zeros((N_ACTIONS, N_ACTIONS), dtype=np.int64))
    ranks: list[int] = field(default_factory=list)

    def add(self, result: BatchResult) -> None:
        for s in result.scores:
            self.n_scored += 1
            self.ranking.update(s.rank)
            self.ranks.append(s.rank)
            if s.action_pred >= 0:
                self.action_confusion[s.action_true, s.action_pred] += 1

    def metrics(self) -> dict[str, float]:
        return self.ranking.get()

    def action_report(self) -> dict | None:
        if self.action_confusion.sum() == 0:
            return None
        return report_from_confusion(self.action_confusion, ACTIONS)


def run_prequential(model: Recommender, events: Iterable[Event], max_len: int = 50,
                    k: int = 20, ks: Iterable[int] = (10, 20), batch_size: int = 1000,
                    exclude_history: bool = False) -> PrequentialSummary:
    """Offline prequential evaluation of ``events`` (in the order given) with ``model``.

    The model is not updated (its weights are fixed); what is learned online is each user's
    sequence. ``batch_size`` does not change the figures (see the module docstring).
    """
    engine = PrequentialEngine(model, max_len=max_len, k=k, exclude_history=exclude_history)
    states: dict[str, UserState] = {}
    summary = PrequentialSummary(ranking=RankingAccumulator(ks))
    batch: list[Event] = []
    for ev in events:
        batch.append(ev)
        if len(batch) >= batch_size:
            summary.add(engine.process(batch, states))
            summary.n_events += len(batch)
            batch = []
    if batch:
        summary.add(engine.process(batch, states))
        summary.n_events += len(batch)
    return summary


def warm_states(engine: PrequentialEngine, states: MutableMapping[str, UserState],
                warm_events: Sequence[Event], batch_size: int = 1000) -> None:
    """Seed the users' sequences with ``warm_events`` as a running stream would hold them:
    appended without scoring, each user's last one through the engine so the user's first
    streamed event has a prediction to be scored against (nothing is scored here)."""
    index = engine.model.vocab.index
    max_len = engine.max_len
    warm = sorted(warm_events, key=lambda e: e.timestamp_ms)
    last_of = {ev.user_id: i for i, ev in enumerate(warm)}
    for i, ev in enumerate(warm):
        if last_of[ev.user_id] == i:
            continue
        st = states.get(ev.user_id)
        if st is None:
            st = states[ev.user_id] = UserState()
        st.append(index(ev.item_id), action_index(ev.action), ev.timestamp_ms,
                  event_hash(ev.event_id), max_len)
    lasts = [warm[i] for i in sorted(last_of.values())]
    for s in range(0, len(lasts), batch_size):
        engine.process(lasts[s:s + batch_size], states)


__all__ = ["BatchResult", "PrequentialEngine", "PrequentialSummary", "Score", "run_prequential",
           "confusion_matrix", "warm_states"]
