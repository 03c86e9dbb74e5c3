"""Explanations of predictions (model_core/explain.py) and their deletion test
(model_core/faithfulness.py, ``seqstream explain-bench``).

Counting models against hand-computed examples and against their own scores (the weights
add up to the score minus the popularity tie-break); neural models on a planted log where
only one past event predicts the target; every registered model returns well-formed
explanations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model_core.explain import (
    METHODS,
    POPULAR_NOTE,
    Explanation,
    default_method,
    drop_event,
    explain,
)
from model_core.models import MODELS, create_model
from model_core.models.data import SeqData
from model_core.predictor import SequenceBatch
from model_core.train import train_model
from model_core.vocab import ItemVocab

COUNTING = ("markov", "itemknn", "sknn", "vsknn", "stan", "vstan")


def _vocab(n: int) -> ItemVocab:
    return ItemVocab(str(i) for i in range(1, n + 1))


def _fit(name: str, seqs, n_items: int, **config):
    model = create_model(name, _vocab(n_items), **config)
    model.fit(SeqData(items=[np.asarray(s, dtype=np.int64) for s in seqs]))
    return model


def _row(*items) -> SequenceBatch:
    return SequenceBatch(items=[np.asarray(items, dtype=np.int32)])


def _weights(ex: Explanation) -> dict[int, float]:
    return {c.position: c.weight for c in ex.contributions}


# --------------------------------------------------------------------------- hand-computed
def test_markov_weight_is_the_transition_count_of_the_last_event():
    # 1->2 twice, 1->3 once, 2->3 once
    model = _fit("markov", [[1, 2], [1, 2], [1, 3], [2, 3]], 4)
    # an unknown item (0) after the last known one: positions still index the row as given
    batch = SequenceBatch(items=[np.array([3, 1, 0], np.int32)],
                          actions=[np.array([0, 1, 2], np.uint8)])
    assert int(model.predict_topk(batch, 1).items[0, 0]) == 2
    ex2, ex3 = explain(model, batch, [2, 3])
    assert ex2.method == "transition"
    assert [(c.position, c.item, c.action, c.weight) for c in ex2.contributions] == [(1, 1, 1, 2.0)]
    assert _weights(ex3) == {1: 1.0}
    # nothing ever followed item 4: the item comes from popularity alone
    ex = explain(model, _row(4), [2])[0]
    assert ex.contributions == () and ex.note == POPULAR_NOTE


def test_itemknn_weights_are_similarity_over_age():
    # window 1: co-occurrences (1,2) x2, (2,3) x1; counts 1:2, 2:3, 3:1
    model = _fit("itemknn", [[1, 2], [1, 2], [2, 3]], 3, window=1)
    ex = explain(model, _row(1, 3), [2])[0]
    # item 3 (age 0): 1 / sqrt(3 * 1); item 1 (age 1): 2 / sqrt(2 * 3) / 2
    assert [c.position for c in ex.contributions] == [1, 0]
    assert _weights(ex)[1] == pytest.approx(1 / math.sqrt(3), rel=1e-6)
    assert _weights(ex)[0] == pytest.approx(2 / math.sqrt(6) / 2, rel=1e-6)
    assert ex.contributions[0].item == 3


def test_sknn_splits_each_neighbour_over_the_items_it_shares():
    # current session [1, 4]; S0 = [1, 4, 2] shares both: sim 2 / sqrt(2 * 3);
    # S1 = [1, 2] shares item 1: sim 1 / sqrt(2 * 2); S2 = [5, 6] shares nothing
    model = _fit("sknn", [[1, 4, 2], [1, 2], [5, 6]], 6)
    batch = _row(1, 4)
    s0, s1 = 2 / math.sqrt(6), 0.5
    assert float(model.score(batch)[0, 2]) == pytest.approx(s0 + s1, rel=1e-6)
    ex = explain(model, batch, [2])[0]
    assert ex.method == "neighbours"
    assert _weights(ex)[0] == pytest.approx(s0 / 2 + s1, rel=1e-6)  # item 1
    assert _weights(ex)[1] == pytest.approx(s0 / 2, rel=1e-6)  # item 4
    assert [(n.session, n.shared) for n in ex.neighbours] == [(0, (1, 4)), (1, (1,))]
    assert [n.weight for n in ex.neighbours] == pytest.approx([s0, s1], rel=1e-6)


# --------------------------------------------------------------------------- completeness
@pytest.fixture(scope="module")
def synth_seqs():
    from model_core.datasets.synth import generate
    from model_core.train import sequences_from_events

    seqs, vocab, _ = sequences_from_events(generate(6000, seed=3), by="user")
    return seqs, vocab


@pytest.mark.parametrize("name,config", [
    ("markov", {}), ("itemknn", {"recent": 4}), ("sknn", {}),
    ("vsknn", {"idf_weighting": 1.0}), ("stan", {"sample_size": 30, "k": 8}),
    ("vstan", {"sample_size": 50, "k": 10}), ("vsknn", {"weighting": "div", "k": 5}),
])
def test_counting_weights_add_up_to_the_models_own_score(synth_seqs, name, config):
    seqs, vocab = synth_seqs
    model, _ = train_model(name, seqs, None, config=config, progress=False, vocab=vocab)
    rng = np.random.default_rng(1)
    tie = {"markov": 1.0, "itemknn": 1e-6}.get(name, 0.0) * model.popularity_tiebreak()
    checked = 0
    for _ in range(25):
        u = int(rng.integers(len(seqs.items)))
        n = int(rng.integers(1, 40))
        batch = SequenceBatch(items=[seqs.items[u][:n]], actions=[seqs.actions[u][:n]],
                              timestamps_ms=[seqs.timestamps_ms[u][:n]])
        top = model.predict_topk(batch, 5).items[0]
        scores = model.score(batch)[0].astype(np.float64)
        for ex in explain(model, batch, top, top_n=1000):
            if not ex.contributions:
                continue
            total = sum(c.weight for c in ex.contributions)
            assert total == pytest.approx(scores[ex.item] - tie[ex.item], rel=1e-5, abs=1e-6)
            checked += 1
    assert checked > 50


# --------------------------------------------------------------------------- neural, planted
@pytest.fixture(scope="module")
def planted():
    """Sequences [x, noise * m, 5 + x], x in 1..5, m in 0..2, noise 11..40: the target
    depends on the first event only."""
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(1500):
        x = int(rng.integers(1, 6))
        seqs.append(np.array([x, *rng.integers(11, 41, int(rng.integers(0, 3))), 5 + x],
                             dtype=np.int32))
    return seqs, _vocab(40)


@pytest.mark.parametrize("name,method", [
    ("gru4rec", "loo"), ("gru4rec", "integrated_gradients"), ("sasrec", "integrated_gradients"),
    ("sasrec", "loo"),
])
def test_planted_predictive_event_gets_the_top_weight(planted, name, method):
    seqs, vocab = planted
    cfg = {"epochs": 15, "dim": 32, "lr": 0.005, "dropout": 0.0, "device": "cpu",
           "threads": 1, "batch_size": 64}
    model, _ = train_model(name, seqs, None, config=cfg, progress=False, vocab=vocab, seed=0)
    right = total = 0
    for x in range(1, 6):
        for noise in range(11, 41, 3):
            batch = _row(x, noise)
            assert int(model.predict_topk(batch, 1).items[0, 0]) == 5 + x
            ex = explain(model, batch, [5 + x], method=method)[0]
            right += ex.contributions[0].position == 0
            total += 1
    assert right >= 0.9 * total, f"{right}/{total}"


# --------------------------------------------------------------------------- well-formed
@pytest.fixture(scope="module")
def every_model(synth_seqs):
    seqs, vocab = synth_seqs
    out = {}
    for name in MODELS:
        cfg = {"epochs": 1, "dim": 16, "device": "cpu", "threads": 1} \
            if name in ("gru4rec", "sasrec") else {}
        out[name] = train_model(name, seqs, None, config=cfg, progress=False, vocab=vocab)[0]
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_explains_well_formed(every_model, synth_seqs, name):
    seqs, _ = synth_seqs
    model = every_model[name]
    n = 12
    items = seqs.items[7][:n].copy()
    items[3] = 0  # an unknown item in the row: never a contribution
    batch = SequenceBatch(items=[items], actions=[seqs.actions[7][:n]],
                          timestamps_ms=[seqs.timestamps_ms[7][:n]])
    top = model.predict_topk(batch, 4).items[0]
    methods = {default_method(model), "loo"}
    for method in methods:
        exs = explain(model, batch, top, top_n=2, method=method)
        assert [e.item for e in exs] == [int(j) for j in top]
        for ex in exs:
            assert ex.method == method and ex.method in METHODS
            assert len(ex.contributions) <= 2
            w = [c.weight for c in ex.contributions]
            assert w == sorted(w, reverse=True) and all(math.isfinite(x) and x != 0 for x in w)
            for c in ex.contributions:
                assert 0 <= c.position < n and c.position != 3
                assert c.item == int(items[c.position])
                assert c.action == int(batch.actions[0][c.position])
            assert ex.contributions or ex.note
            json.dumps(ex.to_dict())
    if name == "popular":
        assert all(e.note == POPULAR_NOTE and not e.contributions
                   for e in explain(model, batch, top))
    else:
        assert any(e.contributions for e in explain(model, batch, top))


def test_bad_method_and_top_n_are_refused(every_model):
    with pytest.raises(ValueError, match="does not apply"):
        explain(every_model["markov"], _row(1, 2), [3], method="grad_input")
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain(every_model["sasrec"], _row(1, 2), [3], method="shap")
    with pytest.raises(ValueError, match="top_n"):
        explain(every_model["markov"], _row(1, 2), [3], top_n=0)


def test_drop_event_removes_one_event_of_every_field():
    batch = SequenceBatch(items=[np.array([5, 6, 7])], actions=[np.array([0, 1, 2])],
                          timestamps_ms=[np.array([10, 20, 30])])
    out = drop_event(batch, 1)
    assert out.items[0].tolist() == [5, 7]
    assert out.actions[0].tolist() == [0, 2]
    assert out.timestamps_ms[0].tolist() == [10, 30]


# --------------------------------------------------------------------------- deletion test
def test_deletion_test_on_markov_and_loo(synth_seqs, every_model):
    from model_core.faithfulness import deletion_test
    from model_core.splits import TestCases

    seqs, vocab = synth_seqs
    lens = np.array([len(s) for s in seqs.items])
    rows = np.flatnonzero(lens >= 4)[:60]
    cases = TestCases(seqs, vocab, rows, lens[rows] - 1)
    markov = every_model["markov"]
    res = deletion_test(markov, cases, n_cases=40, n_boot=100)
    assert res.method == "transition" and res.n_cases == 40
    assert res.n_compared + res.n_unexplained == res.n_cases
    # Markov reads the last event only: removing any other one never changes a score
    # (removing the last may raise it: the one before may lead to the item more often)
    assert res.drop_random == 0.0 and res.rank_drop_random == 0.0
    assert res.drop_top > 0 and res.share_top_beats_random > 0.5
    lo, hi = res.ci["share_top_beats_random"]
    assert lo <= res.share_top_beats_random <= hi
    # leave-one-out names the deletion that lowers the score most, so it never loses
    loo = deletion_test(every_model["itemknn"], cases, method="loo", n_cases=30, n_boot=100)
    assert loo.share_top_beats_random + loo.share_tied == pytest.approx(1.0)
    assert loo.ms_per_item > 0 and loo.ms_per_prediction > 0 and loo.k_cost == 10


def test_explain_bench_command(tmp_path, capsys):
    from model_core.datasets.synth import generate, write_jsonl
    from stream_app.cli import main

    path = tmp_path / "log.jsonl"
    write_jsonl(generate(3000, seed=5), path)
    rc = main(["explain-bench", "--data", str(path), "--models", "popular,markov,sknn",
               "--methods", "native,loo", "--cases", "15", "--bootstrap", "50", "--json"])
    assert rc == 0
    # strict JSON: most-popular has no case to compare, its shares are null, not NaN
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1],
                     parse_constant=lambda c: pytest.fail(f"{c} in the JSON line"))
    got = [(r["model"], r["method"]) for r in out["results"]]
    assert out["results"][0]["share_top_beats_random"] is None
    assert got == [("popular", "popular"), ("markov", "transition"), ("markov", "loo"), ("sknn", "neighbours"),
                   ("sknn", "loo")]
    assert all(r["n_cases"] == 15 for r in out["results"][1:])
    assert main(["explain-bench", "--data", str(path), "--methods", "shap"]) == 2
    assert "--methods takes native" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_integrated_gradients_add_up_to_the_score_above_zero_inputs(every_model, synth_seqs,
                                                                    name):
    import torch

    seqs, _ = synth_seqs
    model = every_model[name]
    for u in (3, 8, 20):
        batch = SequenceBatch(items=[seqs.items[u][:10]])
        item = int(model.predict_topk(batch, 1).items[0, 0])
        ex = explain(model, batch, [item], top_n=100, method="integrated_gradients")[0]
        full = float(model.score(batch)[0, item])
        zero = model.module.inputs.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
        try:
            base = float(model.score(batch)[0, item])
        finally:
            zero.remove()
        assert float(model.score(batch)[0, item]) == full  # the hook is gone
        total = sum(c.weight for c in ex.contributions)
        # 16 midpoint steps: an approximation of the path integral (a few % on trained
        # models, up to ~20% on these one-epoch ones)
        assert total == pytest.approx(full - base, rel=0.25, abs=0.02)


def test_gradient_methods_work_under_inference_mode(every_model):
    import torch

    model = every_model["sasrec"]
    batch = _row(5, 9, 14)
    plain = explain(model, batch, [3], method="grad_input")[0]
    with torch.inference_mode():
        inside = explain(model, batch, [3], method="grad_input")[0]
    assert inside == plain and inside.contributions
    assert all(p.grad is None for p in model.module.parameters())


def test_predictions_carry_explanations_for_the_sampled_share():
    from model_core.datasets.synth import generate
    from model_core.models import create_model
    from model_core.sequences import build_vocab, group_by_user
    from schemas.prediction import Prediction
    from stream_app.worker.processor import BatchProcessor, RawRecord

    events = generate(600, seed=4)
    vocab = build_vocab(events)
    model = create_model("markov", vocab)
    model.fit(group_by_user(events[:400], vocab))
    recs = [RawRecord(e.user_id.encode(), e.to_json(), "events", 0, i, e.timestamp_ms)
            for i, e in enumerate(events[400:])]

    def run(share):
        proc = BatchProcessor(model, k=10, explain_share=share)
        return [Prediction.from_json(v) for _, v in proc.process(recs, {}).predictions]

    assert all(p.explanations is None for p in run(0.0))
    every = run(1.0)
    explained = [p for p in every if p.explanations]
    assert len(explained) > len(every) // 2  # every event with a history and a top item
    for p in explained:
        assert [x["item"] for x in p.explanations] == p.items[:len(p.explanations)]
        for x in p.explanations:
            assert x["method"] == "transition"
            assert all(b["events_ago"] >= 0 and b["item"] in vocab.item_ids(range(1, len(vocab)))
                       for b in x["because"])
    # Markov: the last event explains, with the count of its transition to the item
    first = next(x for p in explained for x in p.explanations if x["because"])
    assert first["because"][0]["events_ago"] == 0
    some = run(0.3)
    share = sum(p.explanations is not None for p in some) / len(some)
    assert 0.15 < share < 0.45
    ids = {p.event_id for p in some if p.explanations is not None}
    assert ids == {p.event_id for p in run(0.3) if p.explanations is not None}  # by event id


@pytest.mark.broker
def test_worker_publishes_explanations(stream_settings, tmp_path, markov_checkpoint):
    import orjson

    from model_core.datasets.synth import generate
    from stream_app.kafka.replay import replay_events
    from stream_app.kafka.topics import ensure_topics, read_topic
    from stream_app.worker.process import WorkerProcess

    events = generate(300, seed=9)
    markov_checkpoint(events, tmp_path / "model")
    settings = stream_settings.with_overrides(model_path=str(tmp_path / "model"),
                                              explain_share=1.0)
    ensure_topics(settings)
    with WorkerProcess(settings, tmp_path / "w.log") as worker:
        worker.wait_ready(90)
        replay_events(settings, events, progress=False)
        preds = read_topic(settings, "predictions", idle_s=3.0, expect=len(events))
    assert len(preds) == len(events)
    values = [orjson.loads(m.value) for m in preds]
    explained = [v for v in values if v["explanations"]]
    assert len(explained) > len(values) // 2
    assert all(x["method"] == "transition" for v in explained for x in v["explanations"])
