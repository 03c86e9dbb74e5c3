"""Offline protocols: leave-one-out, temporal (successive) and session splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_core.splits import make_split, split_loo, split_session, split_temporal
from schemas import Event, action_index

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
T0 = 1_700_000_000_000


def ev(i: int, user: str, item: str, t_s: int, action: str = "view",
       session: str | None = None) -> Event:
    return Event(f"e{i}", user, item, action, T0 + t_s * 1000, session_id=session)


def items_of(split, cases, i):
    c = cases[i]
    return ([split.vocab.item_id(x) for x in c.history_items], split.vocab.item_id(c.target_item))


def test_loo_targets_and_histories():
    log = [ev(1, "u", "a", 1), ev(2, "u", "b", 2, "click"), ev(3, "u", "c", 3),
           ev(4, "u", "d", 4, "cart"),
           ev(5, "v", "a", 1), ev(6, "v", "b", 2),  # < 3 events: train only
           ev(7, "w", "c", 1), ev(8, "w", "d", 2), ev(9, "w", "b", 3)]
    s = split_loo(log)
    assert sorted(e.event_id for e in s.train_events) == ["e1", "e2", "e5", "e6", "e7"]
    assert s.fit_events == s.train_events
    assert s.info["users_train_only"] == 1
    # known in train: a b c. u: valid c (history a b), test d is unknown -> skipped
    # w: valid d unknown -> skipped, test b (history c d)
    assert len(s.valid) == 1 and len(s.test) == 1
    assert items_of(s, s.valid, 0) == (["a", "b"], "c")
    assert s.valid[0].history_actions.tolist() == [action_index("view"), action_index("click")]
    assert s.valid[0].user_id == "u" and s.test[0].user_id == "w"
    assert items_of(s, s.test, 0) == (["c", "d"], "b")
    assert s.test[0].target_ts == T0 + 3000
    assert s.info["valid_skipped_unknown_target"] == 1
    assert s.info["test_skipped_unknown_target"] == 1


def test_loo_unknown_targets_are_counted():
    log = [ev(1, "u", "a", 1), ev(2, "u", "b", 2), ev(3, "u", "c", 3), ev(4, "u", "d", 4),
           ev(7, "w", "c", 1), ev(8, "w", "x", 2), ev(9, "w", "b", 3)]
    s = split_loo(log)
    # train: u: a b ; w: c   -> known {a, b, c}
    # valid targets: u c (known), w x (unknown); test targets: u d (unknown), w b (known)
    assert s.info["valid_skipped_unknown_target"] == 1 and s.info["valid_cases"] == 1
    assert s.info["test_skipped_unknown_target"] == 1 and s.info["test_cases"] == 1
    assert items_of(s, s.valid, 0) == (["a", "b"], "c")
    assert s.test[0].user_id == "w"
    assert items_of(s, s.test, 0) == (["c", "x"], "b")


def test_loo_keep_unknown_targets_counts_them():
    log = [ev(1, "u", "a", 1), ev(2, "u", "b", 2), ev(3, "u", "c", 3), ev(4, "u", "d", 4),
           ev(7, "w", "c", 1), ev(8, "w", "x", 2), ev(9, "w", "b", 3)]
    s = split_loo(log, keep_unknown_targets=True)
    assert s.info["test_unseen_target"] == 1 and s.info["test_cases"] == 2
    assert [c.user_id for c in s.test] == ["u", "w"]
    assert s.vocab.item_id(s.test[0].target_item) == "d"
    # validation keeps skipping unseen targets
    assert s.info["valid_skipped_unknown_target"] == 1 and len(s.valid) == 1


@pytest.mark.parametrize("protocol", ["temporal", "session"])
def test_temporal_and_session_keep_unknown_targets_when_asked(protocol):
    # 10 train events over items a, b; then one session u: a -> z (z never seen before)
    log = [ev(i, f"v{i % 3}", "ab"[i % 2], i, session=f"s{i % 3}") for i in range(10)]
    log += [ev(20, "u", "a", 100, session="t"), ev(21, "u", "z", 101, session="t")]
    kw = {"quantile": 0.8}
    dropped = make_split(log, protocol, **kw)
    kept = make_split(log, protocol, keep_unknown_targets=True, **kw)
    assert dropped.info["test_skipped_unknown_target"] == 1
    assert kept.info["test_unseen_target"] == 1
    assert len(kept.test) == len(dropped.test) + 1
    assert "z" in [kept.vocab.item_id(t) for t in kept.test.target_item]


def _many_users_log(n_users=20, n_events=4):
    out, i = [], 0
    for u in range(n_users):
        for t in range(n_events):
            i += 1
            out.append(ev(i, f"u{u}", f"i{(u + t) % 7}", t))
    return out


def test_loo_valid_users_trains_on_the_others_second_last_item():
    log = _many_users_log()
    s = split_loo(log, valid_users=5, seed=3)
    assert s.info["valid_users"] == 5 and len(s.valid) == 5
    assert len(s.test) == 20  # every user still has a test case
    valid_users = {c.user_id for c in s.valid}
    train_ids = {e.event_id for e in s.train_events}
    for u in range(20):
        ids = [f"e{u * 4 + t + 1}" for t in range(4)]
        assert ids[3] not in train_ids  # a test event is never trained on
        assert ids[:2] == [x for x in ids[:2] if x in train_ids]
        assert (ids[2] in train_ids) == (f"u{u}" not in valid_users)
    assert len(s.train_events) == 20 * 3 - 5
    # each validation case: history = the first two events, target = the third
    for c in s.valid:
        assert len(c.history_items) == 2
    # seeded: same users again, other users with another seed
    assert {c.user_id for c in split_loo(log, valid_users=5, seed=3).valid} == valid_users
    assert {c.user_id for c in split_loo(log, valid_users=5, seed=4).valid} != valid_users
    # more validation users than users: all of them (the classic split)
    assert len(split_loo(log, valid_users=100).train_events) == 20 * 2
    with pytest.raises(ValueError, match="valid_users"):
        split_loo(log, valid_users=0)
    with pytest.raises(ValueError, match="loo protocol only"):
        make_split(log, "temporal", valid_users=5)


def test_temporal_cut_successive_histories_and_no_future():
    # 10 events, times 1..10; quantile 0.8 -> cut at the 9th event (t=9), valid 0.6 -> t=7
    log = [ev(1, "u", "a", 1), ev(2, "v", "b", 2), ev(3, "u", "b", 3), ev(4, "v", "a", 4),
           ev(5, "u", "c", 5), ev(6, "v", "c", 6), ev(7, "u", "a", 7), ev(8, "v", "b", 8),
           ev(9, "u", "b", 9), ev(10, "u", "c", 10)]
    s = split_temporal(log, quantile=0.8, valid_quantile=0.6)
    assert s.info["cut_ts"] == T0 + 9000 and s.info["valid_cut_ts"] == T0 + 7000
    assert [e.event_id for e in s.train_events] == [f"e{i}" for i in range(1, 9)]
    assert [e.event_id for e in s.fit_events] == [f"e{i}" for i in range(1, 7)]
    assert max(e.timestamp_ms for e in s.train_events) < s.info["cut_ts"]
    # test: u's events at t=9 and t=10; the second's history includes the first
    assert len(s.test) == 2
    assert items_of(s, s.test, 0) == (["a", "b", "c", "a"], "b")
    assert items_of(s, s.test, 1) == (["a", "b", "c", "a", "b"], "c")
    assert all(s.test[i].history_ts.max() < s.test[i].target_ts for i in range(2))
    # valid: t=7 (u, a) and t=8 (v, b)
    assert [c for c in (items_of(s, s.valid, 0), items_of(s, s.valid, 1))] == [
        (["a", "b", "c"], "a"), (["b", "a", "c"], "b")]


def test_temporal_ties_at_the_cut_fall_on_the_test_side():
    log = [ev(1, "u", "a", 1), ev(2, "u", "b", 2), ev(3, "u", "c", 3), ev(4, "v", "a", 3),
           ev(5, "v", "b", 3)]
    s = split_temporal(log, quantile=0.6, valid_quantile=0.2)  # index 3 -> t=3
    assert [e.event_id for e in s.train_events] == ["e1", "e2"]
    # v has no history before its first test event -> cold, skipped; v's second is a case
    assert s.info["test_skipped_cold"] == 1
    # c is unknown to train (a, b only) -> skipped
    assert s.info["test_skipped_unknown_target"] == 1
    assert len(s.test) == 1 and items_of(s, s.test, 0) == (["a"], "b")


def test_session_protocol_with_time_cut():
    log = [ev(1, "u", "a", 1, session="s1"), ev(2, "u", "b", 2, session="s1"),
           ev(3, "v", "a", 3, session="s2"), ev(4, "v", "c", 4, session="s2"),
           ev(5, "u", "a", 10, session="s3"), ev(6, "u", "b", 11, session="s3"),
           ev(7, "u", "c", 12, session="s3"), ev(8, "u", "z", 13, session="s3")]
    s = split_session(log, quantile=0.5, valid_quantile=0.5)
    # cut at the 5th event in time (t=10): s3 starts there -> test; s1, s2 train
    assert {e.session_id for e in s.train_events} == {"s1", "s2"}
    # history = the session's earlier clicks only; z unknown to training -> skipped
    assert s.info["test_skipped_unknown_target"] == 1
    assert [items_of(s, s.test, i) for i in range(len(s.test))] == [
        (["a"], "b"), (["a", "b"], "c")]
    # validation: train sessions starting at/after the median of train times (t=3): s2
    assert s.info["sessions_valid"] == 1
    assert [e.session_id for e in s.fit_events] == ["s1", "s1"]


def test_session_protocol_with_test_file_and_gap_sessions():
    train = [ev(1, "u", "a", 0), ev(2, "u", "b", 60), ev(3, "u", "c", 60 + 3600),
             ev(4, "u", "a", 60 + 3660)]  # two gap sessions of u
    test = [ev(5, "x", "a", 9000, session="t1"), ev(6, "x", "c", 9001, session="t1"),
            ev(7, "x", "b", 9002, session="t1"), ev(8, "y", "b", 9003, session="t2")]
    s = make_split(train, "session", test_events=test)
    assert len(s.train_events) == 4
    assert s.info["sessions_train"] == 2 and s.info["sessions_test"] == 2
    assert [items_of(s, s.test, i) for i in range(len(s.test))] == [
        (["a"], "c"), (["a", "c"], "b")]
    assert s.test[1].history_ts.tolist() == [T0 + 9_000_000, T0 + 9_001_000]


def test_for_vocab_reencodes_and_drops_unknown_targets():
    from model_core.vocab import ItemVocab
    log = [ev(1, "u", "a", 1), ev(2, "u", "b", 2), ev(3, "u", "c", 3), ev(4, "u", "a", 4),
           ev(5, "w", "b", 1), ev(6, "w", "c", 2), ev(7, "w", "a", 3), ev(8, "w", "b", 4)]
    s = split_loo(log)
    assert len(s.test) == 2
    mv = ItemVocab(["b", "zz", "a"])  # no "c"
    cases, dropped = s.test.for_vocab(mv)
    assert dropped == 0 and len(cases) == 2
    assert cases[0].history_items.tolist() == [3, 1, 0]  # a b c -> 3 1 0
    assert cases[0].target_item == 3
    v_cases, v_dropped = s.valid.for_vocab(mv)  # valid targets: c (u), a (w)
    assert v_dropped == 1 and len(v_cases) == 1 and v_cases[0].user_id == "w"
    b = cases.batch([0, 1], max_len=2)
    assert [x.tolist() for x in b.items] == [[1, 0], [0, 3]]
    assert b.actions is not None and b.timestamps_ms is not None


def test_bad_arguments():
    with pytest.raises(ValueError, match="protocol"):
        make_split([], "random")
    with pytest.raises(ValueError, match="valid_quantile"):
        split_temporal([ev(1, "u", "a", 1)], quantile=0.5, valid_quantile=0.7)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} absent (shared data sets)")
def test_real_yoochoose_session_split_counts():
    from model_core.datasets import read_log
    d = DATA / "sessionrec_yoochoose_100k"
    tr = read_log(d / "yoochoose-clicks-100k_train_full.txt", "yoochoose").events
    te = read_log(d / "yoochoose-clicks-100k_test.txt", "yoochoose").events
    s = make_split(tr, "session", test_events=te)
    # 13,568 test clicks in 3,416 sessions: one target per click after the first
    assert len(s.test) + s.info["test_skipped_unknown_target"] == 13_568 - 3_416
    assert len(s.train_events) == 70_278
    assert np.all(s.test.pos >= 1)
