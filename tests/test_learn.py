"""The online learner (model_core.learn): incremental counting equals a refit, new items
join and are recommended, the item table and the replay buffer stay bounded, updates are
deterministic and do not depend on how the stream is batched, and ``seqstream evaluate
--protocol prequential --learn`` reports frozen and online side by side."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
import torch

from model_core.datasets.synth import generate
from model_core.evaluate import evaluate_prequential
from model_core.exceptions import ModelCoreError
from model_core.fit import FitConfig, fit_events
from model_core.learn import LearnSchedule, OnlineLearner, compare_learning
from model_core.learn.measure import parse_period
from model_core.learn.replay import ReplayBuffer, Snippet
from model_core.models import create_model
from model_core.predictor import SequenceBatch
from model_core.train import sequences_from_events
from schemas import Event


def _ev(i: int, user: str, item: str, t: int | None = None, action: str = "click") -> Event:
    return Event(event_id=f"e{i}", user_id=user, item_id=item, action=action,
                 timestamp_ms=1_700_000_000_000 + (i if t is None else t) * 1000)


@pytest.fixture(scope="module")
def drift_log():
    return generate(1600, seed=4, change_at=0.5, new_items=20)


# --------------------------------------------------------------------------- counting
@pytest.mark.parametrize("name", ["markov", "itemknn"])
def test_incremental_counting_update_equals_a_refit(name, drift_log):
    train, stream = drift_log[:800], drift_log[800:]
    model = fit_events(train, FitConfig(name, {"window": 5, "neighbours": 7}
                                        if name == "itemknn" else {})).model
    n_trained = model.vocab.n_items
    learner = OnlineLearner(model, LearnSchedule(every=97))
    learner.warm(train)
    learner.learn(stream)
    learner.update()  # the events after the last scheduled update
    assert model.vocab.n_items > n_trained  # items born after training joined
    seqs, vocab, _ = sequences_from_events(drift_log, vocab=model.vocab)
    refit = create_model(name, vocab, **model.config)
    refit.fit(seqs)
    for arr in ("item_counts", "action_counts", "indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(model, arr), getattr(refit, arr), err_msg=arr)


@pytest.mark.parametrize("name", ["sknn", "vstan"])
def test_session_knn_index_takes_streamed_sessions_as_a_refit_would(name, drift_log):
    train = drift_log[:800]
    # a session log: every streamed key is a new session (as YooChoose's test sessions)
    stream = [Event(event_id=e.event_id, user_id="s" + e.session_id, item_id=e.item_id,
                    action=e.action, timestamp_ms=e.timestamp_ms) for e in drift_log[800:]]
    model = fit_events(train, FitConfig(name)).model
    learner = OnlineLearner(model, LearnSchedule(every=101))
    learner.warm(train)
    learner.learn(stream)
    learner.update()
    seqs, vocab, _ = sequences_from_events(train + stream, vocab=model.vocab)
    refit = create_model(name, vocab)
    refit.fit(seqs)
    long = max(len(s) for s in seqs.items[len(set(e.user_id for e in train)):])
    assert long <= learner.max_len + 1  # no streamed session was cut to the window
    for arr in ("item_counts", "sess_indptr", "sess_items", "sess_pos", "sess_time", "idf"):
        np.testing.assert_array_equal(getattr(model, arr), getattr(refit, arr), err_msg=arr)
    hist = SequenceBatch([np.asarray(s[:3], np.int32) for s in seqs.items[-5:]])
    np.testing.assert_array_equal(model.predict_topk(hist, 20).items,
                                  refit.predict_topk(hist, 20).items)


def test_popular_counts_new_items_and_versions_advance():
    train = [_ev(i, f"u{i % 3}", f"i{i % 4}") for i in range(12)]
    model = fit_events(train, FitConfig("popular")).model
    learner = OnlineLearner(model, LearnSchedule(every=5))
    learner.warm(train)
    updates = learner.learn([_ev(100 + i, "u9", "fresh") for i in range(10)])
    assert [u.number for u in updates] == [1, 2]
    assert updates[0].new_items == ["fresh"] and updates[1].new_items == []
    assert updates[0].version != updates[1].version == model.version
    top = model.predict_topk(SequenceBatch([np.array([1], np.int32)]), 1).items[0, 0]
    assert model.vocab.item_id(int(top)) == "fresh"  # 10 events: the most popular now


def test_a_new_item_is_recommended_after_an_update_markov():
    train = [_ev(i, f"u{i}", it) for i, it in enumerate(["a", "b", "a", "c", "b", "c"])]
    model = fit_events(train, FitConfig("markov")).model
    learner = OnlineLearner(model, LearnSchedule(every=4))
    learner.warm(train)
    stream = []
    for r in range(2):
        stream += [_ev(10 + 2 * r, f"s{r}", "a"), _ev(11 + 2 * r, f"s{r}", "new")]
    assert "new" not in model.vocab
    [update] = learner.learn(stream)
    assert update.new_items == ["new"]
    new = model.vocab.index("new")
    top = model.predict_topk(SequenceBatch([np.array([model.vocab.index("a")], np.int32)]), 1)
    assert top.items[0, 0] == new


# --------------------------------------------------------------------------- neural
def _neural(name: str, train, **cfg):
    config = {"epochs": 1, "dim": 16, "device": "cpu", "batch_size": 16, **cfg}
    if name == "sasrec":
        config.update(layers=1, heads=1, max_len=20)
    return fit_events(train, FitConfig(name, config)).model


@pytest.mark.parametrize("name, cfg", [("gru4rec", {"bias": True}), ("sasrec", {})])
def test_a_new_item_is_recommended_after_neural_updates(name, cfg, tmp_path):
    items = [f"i{k}" for k in range(12)]
    train = [_ev(i, f"u{i // 6}", items[(i * 5) % 12]) for i in range(120)]
    model = _neural(name, train, **cfg)
    learner = OnlineLearner(model, LearnSchedule(every=20, steps=20, lr=0.02, seed=1))
    learner.warm(train)
    stream = []
    for r in range(30):  # "i3" is now always followed by the newly launched "new"
        stream += [_ev(1000 + 2 * r, f"s{r}", "i3"), _ev(1001 + 2 * r, f"s{r}", "new")]
    updates = learner.learn(stream)
    assert updates and updates[0].new_items == ["new"]
    new = model.vocab.index("new")
    emb = model.module.item_emb
    assert emb.id_emb.weight.shape[0] == len(model.vocab) == emb.n_items + 1
    if name == "gru4rec":
        assert model.module.out_bias.shape[0] == len(model.vocab)
    top = model.predict_topk(SequenceBatch([np.array([model.vocab.index("i3")], np.int32)]), 3)
    assert new in top.items[0].tolist()
    assert learner.items.is_new(np.array([new, 1])).tolist() == [True, False]
    # a grown version saves and loads as the workers load it (the training counts saved
    # with the weights grew too: `demo --learn --model gru4rec` had every version refused)
    from model_core.checkpoint import load_model, save_model

    save_model(model, tmp_path / "v")
    again = load_model(tmp_path / "v")
    assert len(again.item_counts) == len(model.vocab) and again.item_counts[new] == 0


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_a_new_items_row_starts_from_its_contexts(name):
    """init=context places the new row where the model's queries before it point, so it is
    recommended after one update whose gradient step is negligible; the mean start is not."""
    items = [f"i{k}" for k in range(12)]
    train = [_ev(i, f"u{i // 6}", items[(i * 5) % 12]) for i in range(120)]
    base = _neural(name, train, epochs=3, **({"bias": True} if name == "gru4rec" else {}))
    stream = []
    for r in range(10):
        stream += [_ev(1000 + 2 * r, f"s{r}", "i3"), _ev(1001 + 2 * r, f"s{r}", "new")]
    placed = {}
    for init in ("context", "mean"):
        model = copy.deepcopy(base)
        learner = OnlineLearner(model, LearnSchedule(every=20, steps=1, lr=1e-6, init=init))
        learner.warm(train)
        [update] = learner.learn(stream)
        assert update.new_items == ["new"]
        top = model.predict_topk(SequenceBatch([np.array([model.vocab.index("i3")], np.int32)]), 3)
        placed[init] = model.vocab.index("new") in top.items[0].tolist()
    assert placed == {"context": True, "mean": False}


def test_young_rows_move_new_lr_times_as_far():
    train = [_ev(i, f"u{i // 5}", f"i{(i * 3) % 9}") for i in range(80)]
    stream = [_ev(200 + i, f"v{i // 4}", f"i{i % 11}") for i in range(40)]  # 8 items are new
    base = _neural("gru4rec", train, bias=True)
    rows = {}
    for boost in (1.0, 5.0):
        model = copy.deepcopy(base)
        learner = OnlineLearner(model, LearnSchedule(every=40, steps=1, new_lr=boost))
        learner.warm(train)
        start = {}
        orig = learner._optimisers

        def spy(orig=orig, start=start, model=model):  # called after the rows are placed
            start["w"] = model.module.item_emb.id_emb.weight.detach().clone()
            return orig()

        learner._optimisers = spy
        learner.learn(stream)
        rows[boost] = (start["w"], model.module.item_emb.id_emb.weight.detach().clone(),
                       np.flatnonzero(learner.items.born))
    (w0, w1, young), (v0, v1, _) = rows[1.0], rows[5.0]
    assert len(young) == 8
    torch.testing.assert_close(w0, v0)  # the same start
    old = torch.ones(len(w0), dtype=torch.bool)
    old[torch.as_tensor(young, dtype=torch.long)] = False
    torch.testing.assert_close(v1[old], w1[old])  # known rows: the same step
    yi = torch.as_tensor(young, dtype=torch.long)
    torch.testing.assert_close(v1[yi] - v0[yi], 5 * (w1[yi] - w0[yi]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_settled_scales_the_trained_parameters_step(name):
    """settled=0: the encoder and the trained items' rows stay as trained, new items learn;
    settled=0.5: the trained rows move half the step they move at settled=1."""
    train = [_ev(i, f"u{i // 5}", f"i{(i * 3) % 9}") for i in range(80)]
    stream = [_ev(200 + i, f"v{i // 4}", f"i{i % 11}") for i in range(40)]  # 8 items are new
    base = _neural(name, train, **({"bias": True} if name == "gru4rec" else {}))
    after = {}
    for settled in (0.0, 0.5, 1.0):
        model = copy.deepcopy(base)
        learner = OnlineLearner(model, LearnSchedule(every=40, steps=1, settled=settled))
        learner.warm(train)
        start = {}
        orig = learner._optimisers

        def spy(orig=orig, start=start, model=model):  # called after the new rows are placed
            start.update({k: v.clone() for k, v in model.module.state_dict().items()})
            return orig()

        learner._optimisers = spy
        learner.learn(stream)
        after[settled] = (start, model.module.state_dict(), learner.items.joined.copy())
    start, end, joined = after[0.0]
    new = torch.as_tensor(np.flatnonzero(joined), dtype=torch.long)
    assert len(new) == 8
    rows = next(k for k in start if k.endswith("id_emb.weight"))
    for k in start:
        if k.endswith("id_emb.weight") or k == "out_bias":  # the rows (shared by two names)
            old = torch.ones(len(start[k]), dtype=torch.bool)
            old[new] = False
            torch.testing.assert_close(end[k][old], start[k][old], rtol=0, atol=0, msg=k)
            assert not torch.equal(end[k][new], start[k][new]), k  # new items learn
        else:
            torch.testing.assert_close(end[k], start[k], rtol=0, atol=0, msg=k)
    (s5, e5, _), (s1, e1, _) = after[0.5], after[1.0]
    torch.testing.assert_close(s5[rows], s1[rows])  # the same start
    old = torch.ones(len(s1[rows]), dtype=torch.bool)
    old[new] = False
    moved = (e1[rows] - s1[rows])[old]
    assert moved.abs().max() > 0
    torch.testing.assert_close((e5[rows] - s5[rows])[old], 0.5 * moved, rtol=1e-4, atol=1e-7)
    with pytest.raises(ModelCoreError, match="settled"):
        LearnSchedule.parse("every=5,settled=2")


def test_forget_user_drops_sequence_streamed_session_and_waiting_events(drift_log):
    """An erase request: the next update's session index holds no session of the user."""
    train, stream = drift_log[:1200], drift_log[1200:]
    model = fit_events(train, FitConfig("sknn")).model
    learner = OnlineLearner(model, LearnSchedule(every=100))
    learner.warm(train)
    learner.learn(stream[:100])
    first = {ev.user_id for ev in stream[:100]}
    gone = next(ev.user_id for ev in stream[100:150] if ev.user_id in first)
    n_train = len(learner._sess_base[3])
    assert gone in learner._sessions  # the index: training sessions + one per streamed key
    assert len(model.sess_time) == n_train + len(learner._sessions)
    waiting = [ev for ev in stream[100:150] if ev.user_id == gone]
    learner.learn(stream[100:150])
    assert waiting and learner.forget_user(gone) == len(waiting)
    assert gone not in learner.users and gone not in learner._sessions
    learner.learn([ev for ev in stream[150:] if ev.user_id != gone][:50])
    learner.update()  # the next version's index
    assert gone not in learner.users and gone not in learner._sessions
    assert len(model.sess_time) == n_train + len(learner._sessions)


def test_neural_updates_are_deterministic_and_keep_optimiser_state():
    train = [_ev(i, f"u{i // 5}", f"i{(i * 3) % 9}") for i in range(80)]
    stream = [_ev(200 + i, f"v{i // 4}", f"i{i % 11}") for i in range(60)]  # i9, i10 are new
    weights = []
    for _ in range(2):
        model = _neural("gru4rec", train)
        learner = OnlineLearner(model, LearnSchedule(every=15, steps=2, seed=3))
        learner.warm(train)
        learner.learn(stream)
        weights.append({k: v.clone() for k, v in model.module.state_dict().items()})
        w = model.module.item_emb.id_emb.weight
        adam = learner._opts[0]
        assert adam.state[w]["exp_avg"].shape == w.shape  # grown with the table
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=0, msg=k)


# --------------------------------------------------------------------------- bounds
def test_replay_buffer_is_bounded_and_samples_without_repeats():
    buf = ReplayBuffer(capacity=50, seed=0)
    for i in range(1000):
        buf.offer(Snippet(np.array([i, i + 1]), np.zeros(2, np.int64), np.zeros(2, np.int64)))
    assert len(buf) == 50 and buf.offered == 1000
    firsts = [int(s.items[0]) for s in buf.items]
    assert max(firsts) > 100  # later offers replaced early ones
    drawn = [int(s.items[0]) for s in buf.sample(20)]
    assert len(set(drawn)) == 20


def test_learners_replay_buffer_stays_within_its_capacity():
    train = [_ev(i, f"u{i // 4}", f"i{i % 7}") for i in range(60)]
    model = _neural("gru4rec", train)
    learner = OnlineLearner(model, LearnSchedule(every=10, replay=8))
    learner.warm(train)
    learner.learn([_ev(100 + i, f"w{i // 3}", f"i{i % 7}") for i in range(90)])
    assert len(learner.replay) == 8 and learner.replay.offered > 8


def test_item_table_bound_reuses_the_least_recently_seen_slot():
    train = [_ev(i, "u0", it) for i, it in enumerate(["a", "b", "c", "a", "c"])]  # b: oldest
    model = fit_events(train, FitConfig("markov")).model
    learner = OnlineLearner(model, LearnSchedule(every=2, max_items=3))
    learner.warm(train)
    slot_b = model.vocab.index("b")
    [update] = learner.learn([_ev(10, "u0", "a"), _ev(11, "u0", "d")])
    assert update.evicted == [slot_b] and update.new_items == ["d"]
    assert model.vocab.n_items == 3 and "b" not in model.vocab
    assert model.vocab.index("d") == slot_b
    assert model.item_counts[slot_b] == 1  # b's counts cleared, d's one event counted
    src = np.repeat(np.arange(len(model.indptr) - 1), np.diff(model.indptr))
    dst = model.indices
    # b's transitions (a->b, b->c) are gone; a->d was learned
    assert {(int(s), int(d)) for s, d in zip(src, dst, strict=True)} == {
        (model.vocab.index(x), model.vocab.index(y)) for x, y in [("a", "c"), ("c", "a"), ("a", "d")]}


def test_schedule_parse_and_errors():
    s = LearnSchedule.parse("every=500, steps=2,lr=0.01,max-items=100")
    assert (s.every, s.steps, s.lr, s.max_items) == (500, 2, 0.01, 100)
    assert LearnSchedule.parse("steps=2") == LearnSchedule(steps=2)  # every: the default
    assert LearnSchedule.parse("") == LearnSchedule()
    for bad in ("every=0", "every=x", "every=5,colour=red", "every=5,init=zeros"):
        with pytest.raises(ModelCoreError):
            LearnSchedule.parse(bad)
    model = fit_events([_ev(0, "u", "a"), _ev(1, "u", "b")], FitConfig("markov")).model
    model.name = "some-new-model"
    with pytest.raises(ModelCoreError, match="no incremental update"):
        OnlineLearner(model)


# --------------------------------------------------------------------------- measurement
def test_frozen_replay_equals_evaluate_prequential(drift_log):
    train, stream = drift_log[:800], drift_log[800:]
    model = fit_events(train, FitConfig("markov")).model
    ref = evaluate_prequential(model, stream, warm_events=train, ks=(20,), n_boot=10)
    rep = compare_learning(model, stream, train, LearnSchedule(every=100), n_boot=10)
    assert rep["n_scored"] == ref.n_cases
    for m in ("hr@20", "ndcg@20", "mrr@20"):
        assert rep["frozen"][m] == pytest.approx(ref.metrics[m], abs=1e-12)


def test_online_figures_do_not_depend_on_batching(drift_log):
    train, stream = drift_log[:800], drift_log[800:]
    reps = [compare_learning(fit_events(train, FitConfig("markov")).model, stream, train,
                             LearnSchedule(every=64), n_boot=10, batch_size=b)
            for b in (1000, 23)]
    timing = ("replay_seconds", "cpu_seconds")
    assert ({k: v for k, v in reps[0]["online"].items() if k not in timing}
            == {k: v for k, v in reps[1]["online"].items() if k not in timing})
    on, fr = reps[0]["online"], reps[0]["frozen"]
    assert on["new_item_share"] > 0 == fr["new_item_share"]
    assert on["new_item_hits"] > 0 == fr["new_item_hits"]
    assert on["hr@20"] > fr["hr@20"]  # the drift and the new items: learning helps here


def test_periodic_retraining_baseline_retrains_on_everything_seen(drift_log):
    """The ADER-style run: a retrain at each period of event time, on the training events and
    the stream so far; after it the retrained model ranks items born after training."""
    train, stream = drift_log[:800], drift_log[800:]
    model = fit_events(train, FitConfig("markov")).model
    seen = []

    def retrain(events):
        seen.append(len(events))
        return fit_events(events, FitConfig("markov")).model

    span = stream[-1].timestamp_ms - stream[0].timestamp_ms
    rep = compare_learning(model, stream, train, LearnSchedule(every=100), n_boot=10,
                           retrain=retrain, retrain_every_ms=span // 3 + 1)
    r = rep["retrain"]
    assert r["retrains"] == len(seen) == 2 and seen[0] > len(train) and seen[1] > seen[0]
    assert r["new_item_share"] > 0 == rep["frozen"]["new_item_share"]
    assert set(rep["per_window"]) == {"frozen", "online", "retrain"}
    assert rep["paired_windows_retrain"]["hr@20"]["windows"] == 20
    assert r["train_cpu_seconds"] >= 0 and r["cpu_seconds"] >= r["train_cpu_seconds"]
    # a retrain that gives back the trained model changes nothing: the states carry over
    same = compare_learning(fit_events(train, FitConfig("markov")).model, stream, train,
                            LearnSchedule(every=100), n_boot=10,
                            retrain=lambda ev: fit_events(train, FitConfig("markov")).model,
                            retrain_every_ms=span // 3 + 1)
    for m in ("hr@20", "ndcg@20", "mrr@20"):
        assert same["retrain"][m] == same["frozen"][m]


def test_retrain_period_parses_or_says_what_is_wrong():
    assert [parse_period(t) for t in ("1d", "6h", "30m", "90s", "0")] == [
        86_400_000, 21_600_000, 1_800_000, 90_000, 0]
    with pytest.raises(ModelCoreError, match="1d, 6h"):
        parse_period("a week")


def test_synth_default_log_is_unchanged_and_new_items_are_born_late():
    h = hashlib.sha256()
    for e in generate(3000, seed=3, change_at=0.5):
        h.update(e.to_json())
    for e in generate(2000, seed=0):
        h.update(e.to_json())
    # the logs of the generator before new_items existed (main at 5e02854): the same draws
    assert h.hexdigest() == "56b1956143fe11d5d8106f40ec4d85cb2999a1ca8833875a247e61381b5343cf"
    events = generate(2000, seed=1, new_items=30, born_from=0.6)
    early = {e.item_id for e in events[:1200]}
    late = {e.item_id for e in events[1200:]} - early
    assert len(late) >= 10  # items first seen after the birth point
    assert len(generate(2000, seed=1)) == 2000


def test_evaluate_learn_cli_reports_frozen_and_online(tmp_path, capsys):
    from model_core.datasets.synth import write_jsonl
    from stream_app.cli import main

    log = tmp_path / "drift.jsonl"
    write_jsonl(generate(900, seed=2, change_at=0.5, new_items=10), log)
    png = tmp_path / "plot" / "windows.png"
    rc = main(["evaluate", "--data", str(log), "--model", "markov", "--protocol",
               "prequential", "--learn", "every=50", "--bootstrap", "20", "--json",
               "--retrain-every", "3m", "--plot", str(png)])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert max(len(line) for line in lines[:-1] if str(png) not in line) <= 80
    out = json.loads(lines[-1])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["retrain"]["retrains"] >= 1 and out["provenance"]["seed"] == 0
    for run in ("frozen", "online", "retrain"):
        assert {"hr@20", "ndcg@20", "mrr@20", "new_item_share", "new_item_hits"} <= set(out[run])
    assert out["learner"]["updates"] >= 1 and out["schedule"]["every"] == 50
    assert out["paired_windows"]["hr@20"]["windows"] >= 2
    # a stream shorter than the period: said, not shown as if retrained
    assert main(["evaluate", "--data", str(log), "--model", "markov", "--protocol",
                 "prequential", "--learn", "every=50", "--bootstrap", "20",
                 "--retrain-every", "30d"]) == 0
    text = capsys.readouterr().out
    assert "retrain: none" in text and "0 retrains" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert main(["evaluate", "--data", str(log), "--model", "markov", "--protocol", "temporal",
                 "--learn", "every=50"]) == 2


def test_steps_without_dropout_run_in_eval_mode(drift_log):
    """``dropout=0``: the gradient steps run with the module in eval mode (no dropout masks);
    the default runs them in train mode, as training did. A value other than 0 or 1 is
    refused."""
    train, stream = drift_log[:800], drift_log[800:1000]
    base = _neural("sasrec", train, dropout=0.3)

    def modes(**sched) -> set[bool]:
        model = copy.deepcopy(base)
        seen: set[bool] = set()
        loss = model.module.loss

        def spy(*a, **k):
            seen.add(model.module.training)
            return loss(*a, **k)

        model.module.loss = spy
        learner = OnlineLearner(model, LearnSchedule(every=100, **sched))
        learner.warm(train)
        assert learner.learn(stream)
        return seen

    assert modes(dropout=0) == {False}
    assert modes() == {True}
    with pytest.raises(ModelCoreError, match="dropout is 1"):
        LearnSchedule.parse("dropout=2")
