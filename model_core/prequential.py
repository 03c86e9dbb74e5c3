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
from model_core.sequence_state import UserState, event_hash
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
        """Test-then-learn over one batch. ``states`` is read and written (user -> state)."""
        rows_items: list[np.ndarray] = []
        rows_actions: list[np.ndarray] = []
        rows_ts: list[np.ndarray] = []
        # for each event: (previous prediction: ("state", items, action) | ("row", j) | None)
        prev_refs: list[tuple | None] = []
        duplicates: list[int] = []
        last_row: dict[str, int] = {}
        touched: dict[str, UserState] = {}
        index = self._vocab_index
        max_len = self.max_len
        for i, ev in enumerate(events):
            user = ev.user_id
            st = touched.get(user)
            if st is None:
                st = states.get(user) or UserState()
                touched[user] = st
            h = event_hash(ev.event_id)
            pos = st.position_of(h) if len(st.hashes) else -1
            if (pos < 0 and offsets is not None and offsets[i] <= st.source_offset
                    and len(st.items) >= max_len and ev.timestamp_ms <= st.timestamps_ms[0]):
                # A redelivery of an event that has already slid out of the id-hash window
                # (a user with more than max_len events in the redelivered range): its input
                # offset is at or below the highest applied, and it is older than the window.
                pos = len(st.items) - 1
            if pos >= 0:
                duplicates.append(i)
                prev_refs.append(None)
                rows_items.append(st.items[: pos + 1])
                rows_actions.append(st.actions[: pos + 1])
                rows_ts.append(st.timestamps_ms[: pos + 1])
                continue
            j = last_row.get(user)
            if j is not None:
                prev_refs.append(("row", j))
            elif st.last_pred_action != -1 or len(st.last_pred_items):
                prev_refs.append(("state", st.last_pred_items, st.last_pred_action))
            else:
                prev_refs.append(None)
            st.append(index(ev.item_id), action_index(ev.action), ev.timestamp_ms, h, max_len)
            if offsets is not None:
                st.source_offset = max(st.source_offset, offsets[i])
            rows_items.append(st.items)
            rows_actions.append(st.actions)
            rows_ts.append(st.timestamps_ms)
            last_row[user] = i

        topk = self.model.predict_topk(
            SequenceBatch(rows_items, rows_actions, rows_ts), self.k,
            exclude_history=self.exclude_history,
        )
        pred_items = topk.items
        pred_actions = (np.argmax(topk.action_probs, axis=1) if topk.action_probs is not None
                        else np.full(len(events), -1, dtype=np.int64))

        scores: list[Score] = []
        for i, ev in enumerate(events):
            ref = prev_refs[i]
            if ref is None:
                continue
            if ref[0] == "row":
                prev_items, prev_action = pred_items[ref[1]], int(pred_actions[ref[1]])
            else:
                prev_items, prev_action = ref[1], int(ref[2])
            target = rows_items[i][-1]
            rank = _rank(prev_items, int(target))
            scores.append(Score(i, rank, action_index(ev.action), prev_action))

        for user, j in last_row.items():
            st = touched[user]
            st.last_pred_items = pred_items[j].astype(np.int32)
            st.last_pred_action = int(pred_actions[j])
        for user, st in touched.items():
            states[user] = st
        return BatchResult(topk, scores, duplicates, touched)


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


__all__ = ["BatchResult", "PrequentialEngine", "PrequentialSummary", "Score", "run_prequential",
           "confusion_matrix"]
