"""Train data and test cases for the offline protocols ``loo``, ``temporal`` and ``session``.

    split = make_split(events, "temporal", quantile=0.8)
    model.fit(split.train_events)          # whatever the trainer takes
    cases = split.test.for_vocab(model.vocab)

Protocols (events are ordered per user by ``(timestamp_ms, input order)``):

``loo`` (leave-one-out)
    Per user with >= 3 events: last event = test target (history = every earlier event),
    second last = validation target (history = every event before it); the rest is train.
    Users with fewer than 3 events are train only. ``fit_events == train_events`` (the model is
    trained once on the train part and both targets lie after it, as in SASRec/BERT4Rec).
    ``valid_users=N``: only a seeded random N of those users hold out their second-last
    event as a validation target; every other user trains on everything but the test event
    (no test event is ever trained on; ``info["valid_users"]`` records N).

``temporal`` (one global time cut, "successive" evaluation)
    ``cut_ts`` = time of the event at position ``floor(quantile * n)`` in global time order;
    train = every event with ``timestamp_ms < cut_ts`` (strictly: events sharing the cut time
    all fall on the test side, so no tie leaks). Test cases = every event at or after the cut,
    each with history = all of that user's events before it (train-period events *and* earlier
    test-period events — the model is not retrained, it only reads what has already happened).
    Validation: the same with ``valid_quantile`` (default ``quantile - 0.1``): cases are the
    events in ``[valid_cut_ts, cut_ts)``, and a model for them is fitted on ``fit_events``
    (before ``valid_cut_ts``). Cases with an empty history are skipped (``skipped_cold``).

``session`` (next click within a session, GRU4Rec/session-rec practice)
    Events grouped by ``session_id``; events without one are cut into sessions per user at
    gaps over ``session_gap_ms`` (30 min, :func:`~model_core.sequences.session_keys`). Test sessions: those of
    ``test_events`` when given, else the sessions that *start* at or after the time cut (all
    their events; sessions starting before it are train). Every click but the first of a test
    session is a target; history = the session's earlier clicks only. Validation sessions are
    taken from the train part the same way at ``valid_quantile`` of the train events.

A case whose target item never occurs in the events its model learns from cannot be ranked by
that model. Validation cases with such a target are skipped and counted
(``valid_skipped_unknown_target``): they only steer early stopping. Test cases are skipped and
counted the same way (``test_skipped_unknown_target``) unless ``keep_unknown_targets=True``
(every protocol), which keeps them and only counts them (``test_unseen_target``), so an
evaluator counts them as misses and every case of the protocol is in the figures
(``seqstream evaluate`` does this unless ``--unknown-targets skip``). Cases keep vocabulary
indices of a global vocabulary over all events; :meth:`TestCases.for_vocab` re-encodes them
for a model's vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_core.predictor import SequenceBatch
from model_core.sequences import (
    SESSION_GAP_MS,
    UserSequences,
    build_vocab,
    group_by_user,
    session_keys,
)
from model_core.vocab import UNKNOWN, ItemVocab
from schemas import Event

PROTOCOLS = ("loo", "temporal", "session")


@dataclass(frozen=True, slots=True)
class TestCase:
    """One next-item test: given the history (oldest first), the target that followed."""

    user_id: str
    history_items: np.ndarray  # int32 vocabulary indices
    history_actions: np.ndarray  # uint8 action class ids
    history_ts: np.ndarray  # int64 ms
    target_item: int  # vocabulary index; 0 when unknown to the vocabulary
    target_action: int
    target_ts: int


@dataclass(slots=True)
class TestCases:
    """Many test cases, stored compactly: case ``i`` is sequence ``rows[i]`` of ``base``
    cut at ``pos[i]`` — history ``base.items[rows[i]][:pos[i]]`` (a view), target the entry
    at ``pos[i]``. Indices refer to ``vocab``."""

    base: UserSequences
    vocab: ItemVocab
    rows: np.ndarray  # int64 [N]
    pos: np.ndarray  # int64 [N]
    target_item: np.ndarray = field(init=False)  # int64 [N]
    target_action: np.ndarray = field(init=False)  # int64 [N]
    target_ts: np.ndarray = field(init=False)  # int64 [N]

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, dtype=np.int64)
        self.pos = np.asarray(self.pos, dtype=np.int64)
        b = self.base
        n = len(self.rows)
        self.target_item = np.fromiter((b.items[r][p] for r, p in zip(self.rows, self.pos, strict=True)),
                                       dtype=np.int64, count=n)
        self.target_action = np.fromiter((b.actions[r][p] for r, p in zip(self.rows, self.pos, strict=True)),
                                         dtype=np.int64, count=n)
        self.target_ts = np.fromiter((b.timestamps_ms[r][p] for r, p in zip(self.rows, self.pos, strict=True)),
                                     dtype=np.int64, count=n)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def user_ids(self) -> list[str]:
        ids = self.base.user_ids
        return [ids[r] for r in self.rows]

    @property
    def history_lengths(self) -> np.ndarray:
        return self.pos.copy()

    def __getitem__(self, i: int) -> TestCase:
        r, p, b = int(self.rows[i]), int(self.pos[i]), self.base
        return TestCase(b.user_ids[r], b.items[r][:p], b.actions[r][:p], b.timestamps_ms[r][:p],
                        int(self.target_item[i]), int(self.target_action[i]),
                        int(self.target_ts[i]))

    def batch(self, idx: Sequence[int] | np.ndarray, max_len: int | None = None) -> SequenceBatch:
        """Histories of cases ``idx`` (views; the last ``max_len`` events when given)."""
        b = self.base
        items, actions, ts = [], [], []
        for i in idx:
            r, p = self.rows[i], self.pos[i]
            s = 0 if max_len is None else max(0, p - max_len)
            items.append(b.items[r][s:p])
            actions.append(b.actions[r][s:p])
            ts.append(b.timestamps_ms[r][s:p])
        return SequenceBatch(items=items, actions=actions, timestamps_ms=ts)

    def subset(self, keep: np.ndarray) -> TestCases:
        """Cases selected by a boolean mask or index array (same base)."""
        return TestCases(self.base, self.vocab, self.rows[keep], self.pos[keep])

    def for_vocab(self, vocab: ItemVocab) -> tuple[TestCases, int]:
        """These cases in ``vocab``'s indices, minus those whose target it does not know.

        Returns ``(cases, n_dropped)``. History items unknown to ``vocab`` become 0 (models
        drop them). When ``vocab`` is this one (same fingerprint) nothing is copied.
        """
        if vocab is self.vocab or vocab.fingerprint() == self.vocab.fingerprint():
            cases = self if vocab is self.vocab else TestCases(self.base, vocab, self.rows,
                                                               self.pos)
        else:
            lut = vocab.indices(self.vocab.item_id(i) for i in range(len(self.vocab)))
            lut[UNKNOWN] = UNKNOWN
            used = np.unique(self.rows)
            items = list(self.base.items)
            for r in used:
                items[r] = lut[items[r]]
            base = UserSequences(self.base.user_ids, items, self.base.actions,
                                 self.base.timestamps_ms)
            cases = TestCases(base, vocab, self.rows, self.pos)
        known = cases.target_item != UNKNOWN
        n_drop = int((~known).sum())
        return (cases if n_drop == 0 else cases.subset(known)), n_drop


@dataclass(slots=True)
class Split:
    protocol: str
    train_events: list[Event]  # what a model evaluated on ``test`` may learn from
    fit_events: list[Event]  # what a model evaluated on ``valid`` may learn from
    valid: TestCases
    test: TestCases
    vocab: ItemVocab  # global vocabulary (all events, first appearance) of the cases
    info: dict[str, Any] = field(default_factory=dict)  # cuts and skip counts


def _order_within(seqs_events: dict[str, list[int]], ts: np.ndarray) -> dict[str, np.ndarray]:
    return {u: np.asarray(ix, dtype=np.int64)[np.argsort(ts[ix], kind="stable")]
            for u, ix in seqs_events.items()}


def _event_groups(events: Sequence[Event], key: str,
                  keys: Sequence[str] | None = None) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        if keys is not None:
            k = keys[i]
        else:
            k = e.user_id if key == "user_id" else (e.session_id or e.user_id)
        groups.setdefault(k, []).append(i)
    return groups


def _cut_time(ts_sorted: np.ndarray, quantile: float) -> int | None:
    """Time of the event at ``floor(quantile * n)`` in time order; None if past the end."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie strictly between 0 and 1, got {quantile}")
    i = int(np.floor(quantile * len(ts_sorted)))
    return int(ts_sorted[i]) if i < len(ts_sorted) else None


def _train_items(events: Sequence[Event], mask: np.ndarray) -> set[str]:
    return {events[i].item_id for i in np.flatnonzero(mask)}


def _cases(base: UserSequences, vocab: ItemVocab, rows: list[int], pos: list[int],
           known_items: set[str], info: dict, prefix: str,
           keep_unknown: bool = False) -> TestCases:
    cases = TestCases(base, vocab, np.asarray(rows, dtype=np.int64),
                      np.asarray(pos, dtype=np.int64))
    known_idx = np.zeros(len(vocab), dtype=bool)
    known_idx[vocab.indices(known_items)] = True
    known_idx[UNKNOWN] = False
    keep = known_idx[cases.target_item]
    if keep_unknown:
        info[f"{prefix}_unseen_target"] = int((~keep).sum())
        info[f"{prefix}_cases"] = len(cases)
        return cases
    info[f"{prefix}_skipped_unknown_target"] = int((~keep).sum())
    info[f"{prefix}_cases"] = int(keep.sum())
    return cases.subset(keep)


def split_loo(events: Sequence[Event], valid_users: int | None = None, seed: int = 0,
              keep_unknown_targets: bool = False) -> Split:
    """Leave-one-out (see the module docstring); ``valid_users`` / ``keep_unknown_targets``
    as described there. Validation cases always skip unseen targets."""
    events = list(events)
    vocab = build_vocab(events)
    base = group_by_user(events, vocab)
    ts = np.fromiter((e.timestamp_ms for e in events), dtype=np.int64, count=len(events))
    order = _order_within(_event_groups(events, "user_id"), ts)
    train = np.ones(len(events), dtype=bool)
    eligible = [r for r, u in enumerate(base.user_ids) if len(order[u]) >= 3]
    if valid_users is not None:
        if valid_users < 1:
            raise ValueError(f"valid_users must be a positive number of users, got {valid_users}")
        pick = np.random.default_rng(seed).permutation(len(eligible))[:valid_users]
        in_valid = {eligible[i] for i in pick.tolist()}
    else:
        in_valid = set(eligible)
    v_rows, v_pos, t_rows, t_pos = [], [], [], []
    for r in eligible:
        ix = order[base.user_ids[r]]
        n = len(ix)
        t_rows.append(r)
        t_pos.append(n - 1)
        if r in in_valid:
            train[ix[-2:]] = False
            v_rows.append(r)
            v_pos.append(n - 2)
        else:
            train[ix[-1]] = False
    info: dict[str, Any] = {"users": len(base), "users_train_only": len(base) - len(eligible)}
    if valid_users is not None:
        info["valid_users"] = len(in_valid)
    known = _train_items(events, train)
    train_events = [e for e, m in zip(events, train, strict=True) if m]
    return Split("loo", train_events, train_events,
                 _cases(base, vocab, v_rows, v_pos, known, info, "valid"),
                 _cases(base, vocab, t_rows, t_pos, known, info, "test", keep_unknown_targets),
                 vocab, info)


def split_temporal(events: Sequence[Event], quantile: float = 0.8,
                   valid_quantile: float | None = None, min_history: int = 1,
                   keep_unknown_targets: bool = False) -> Split:
    events = list(events)
    if valid_quantile is None:
        valid_quantile = max(quantile - 0.1, quantile / 2)
    if not valid_quantile < quantile:
        raise ValueError(f"valid_quantile ({valid_quantile}) must be below quantile ({quantile})")
    vocab = build_vocab(events)
    base = group_by_user(events, vocab)
    ts = np.fromiter((e.timestamp_ms for e in events), dtype=np.int64, count=len(events))
    ts_sorted = np.sort(ts)
    cut = _cut_time(ts_sorted, quantile)
    vcut = _cut_time(ts_sorted, valid_quantile)
    big = np.iinfo(np.int64).max
    cut_v = big if cut is None else cut
    vcut_v = big if vcut is None else vcut
    info: dict[str, Any] = {"cut_ts": cut, "valid_cut_ts": vcut, "users": len(base)}
    train = ts < cut_v
    fit = ts < vcut_v
    v_rows, v_pos, t_rows, t_pos = [], [], [], []
    cold_v = cold_t = 0
    for r in range(len(base)):
        uts = base.timestamps_ms[r]
        vs = int(np.searchsorted(uts, vcut_v, side="left"))
        cs = int(np.searchsorted(uts, cut_v, side="left"))
        for p in range(vs, cs):
            if p < min_history:
                cold_v += 1
            else:
                v_rows.append(r)
                v_pos.append(p)
        for p in range(cs, len(uts)):
            if p < min_history:
                cold_t += 1
            else:
                t_rows.append(r)
                t_pos.append(p)
    info["valid_skipped_cold"] = cold_v
    info["test_skipped_cold"] = cold_t
    train_events = [e for e, m in zip(events, train, strict=True) if m]
    fit_events = [e for e, m in zip(events, fit, strict=True) if m]
    return Split("temporal", train_events, fit_events,
                 _cases(base, vocab, v_rows, v_pos, _train_items(events, fit), info, "valid"),
                 _cases(base, vocab, t_rows, t_pos, _train_items(events, train), info, "test",
                        keep_unknown_targets),
                 vocab, info)


def split_session(events: Sequence[Event], test_events: Sequence[Event] | None = None,
                  quantile: float = 0.8, valid_quantile: float | None = None,
                  session_gap_ms: int = SESSION_GAP_MS, keep_unknown_targets: bool = False) -> Split:
    events = list(events)
    info: dict[str, Any] = {}
    if test_events is None:
        all_events = events
        ts_sorted = np.sort(np.fromiter((e.timestamp_ms for e in events), dtype=np.int64,
                                        count=len(events)))
        cut = _cut_time(ts_sorted, quantile)
        info["cut_ts"] = cut
        n_train_ev = len(events)
    else:
        all_events = events + list(test_events)
        cut = None
        n_train_ev = len(events)
        info["test_file_events"] = len(test_events)
    vocab = build_vocab(all_events)
    skeys = session_keys(all_events, session_gap_ms)
    base = group_by_user(all_events, vocab, keys=skeys)
    is_test_ev = np.zeros(len(all_events), dtype=bool)
    is_test_ev[n_train_ev:] = True
    groups = _event_groups(all_events, "session_id", skeys)
    start = {s: min(all_events[i].timestamp_ms for i in ix) for s, ix in groups.items()}
    big = np.iinfo(np.int64).max

    test_sess: set[str] = set()
    if test_events is None:
        c = big if cut is None else cut
        test_sess = {s for s, t0 in start.items() if t0 >= c}
    else:
        test_sess = {s for s, ix in groups.items() if is_test_ev[ix[0]]}
        mixed = [s for s, ix in groups.items() if is_test_ev[ix].any() != is_test_ev[ix].all()]
        if mixed:
            info["sessions_in_both_files"] = len(mixed)
            test_sess |= set(mixed)
    train_sess = [s for s in groups if s not in test_sess]
    # validation sessions: train sessions starting at/after valid_quantile of train events
    train_ts = np.sort(np.fromiter((all_events[i].timestamp_ms for s in train_sess
                                    for i in groups[s]), dtype=np.int64))
    if valid_quantile is None:
        valid_quantile = (quantile - 0.1) / quantile if test_events is None else 0.9
    vcut = _cut_time(train_ts, valid_quantile) if len(train_ts) else None
    vc = big if vcut is None else vcut
    valid_sess = {s for s in train_sess if start[s] >= vc}
    info["valid_cut_ts"] = vcut
    info["sessions_train"] = len(train_sess)
    info["sessions_test"] = len(test_sess)
    info["sessions_valid"] = len(valid_sess)

    in_train = np.zeros(len(all_events), dtype=bool)
    in_fit = np.zeros(len(all_events), dtype=bool)
    for s in train_sess:
        in_train[groups[s]] = True
        if s not in valid_sess:
            in_fit[groups[s]] = True
    row_of = base.index_of()
    v_rows, v_pos, t_rows, t_pos = [], [], [], []
    for s in sorted(test_sess | valid_sess, key=lambda s: row_of[s]):
        r = row_of[s]
        rows, pos = (t_rows, t_pos) if s in test_sess else (v_rows, v_pos)
        for p in range(1, len(base.items[r])):
            rows.append(r)
            pos.append(p)
    train_events = [e for e, m in zip(all_events, in_train, strict=True) if m]
    fit_events = [e for e, m in zip(all_events, in_fit, strict=True) if m]
    return Split("session", train_events, fit_events,
                 _cases(base, vocab, v_rows, v_pos, _train_items(all_events, in_fit), info,
                        "valid"),
                 _cases(base, vocab, t_rows, t_pos, _train_items(all_events, in_train), info,
                        "test", keep_unknown_targets),
                 vocab, info)


def make_split(events: Sequence[Event], protocol: str, *, test_events: Sequence[Event] | None = None,
               quantile: float = 0.8, valid_quantile: float | None = None,
               session_gap_ms: int = SESSION_GAP_MS, valid_users: int | None = None,
               keep_unknown_targets: bool = False, seed: int = 0) -> Split:
    """Dispatch to :func:`split_loo`, :func:`split_temporal` or :func:`split_session`
    (``valid_users`` and ``seed``: ``loo`` only)."""
    if protocol != "loo" and valid_users is not None:
        raise ValueError("valid_users applies to the loo protocol only")
    if protocol == "loo":
        return split_loo(events, valid_users, seed, keep_unknown_targets)
    if protocol == "temporal":
        return split_temporal(events, quantile, valid_quantile,
                              keep_unknown_targets=keep_unknown_targets)
    if protocol == "session":
        return split_session(events, test_events, quantile, valid_quantile, session_gap_ms,
                             keep_unknown_targets)
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


__all__ = ["PROTOCOLS", "Split", "TestCase", "TestCases", "make_split", "split_loo",
           "split_session", "split_temporal"]
