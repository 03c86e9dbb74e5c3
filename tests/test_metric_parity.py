"""Offline evaluation and the online windows give the same coverage and percentiles on the
same input: one implementation of each (model_core.metrics), the windows' bounded forms
(distinct-count sketch, latency histogram) agreeing with it."""

from __future__ import annotations

import numpy as np
import pytest
from test_online import T0, batch, ev

from model_core.datasets.synth import generate
from model_core.evaluate import evaluate_prequential
from model_core.metrics import Coverage, coverage, percentiles
from model_core.models import create_model
from model_core.prequential import PrequentialEngine
from model_core.sequences import build_vocab, group_by_user
from schemas.event import Event
from schemas.metrics import MetricsWindow
from stream_app.windows.aggregation import WindowAggregator
from stream_app.windows.distinct_sketch import DistinctSketch
from stream_app.windows.latency_sketch import LatencyHistogram


def _one_window(n_items: int) -> WindowAggregator:
    return WindowAggregator(ks=(10,), window_s=10**7, allowed_lateness_s=0, n_items=n_items)


@pytest.mark.parametrize("n_distinct", [1, 50, 128])
def test_coverage_offline_equals_window_coverage(n_distinct):
    """Up to 128 distinct items the window's sketch is exact: the same figure."""
    rng = np.random.default_rng(n_distinct)
    n_items, n = 400, 200
    pool = rng.choice(np.arange(1, n_items + 1), n_distinct, replace=False)
    lists = rng.choice(pool, (n, 5))
    lists[:, 0] = pool[np.arange(n) % n_distinct]  # every pool item recommended
    lists[::7, 1] = 0  # the unknown item is never a catalogue item
    agg = _one_window(n_items)
    events = [ev(i, T0 + i, f"u{i % 9}") for i in range(n)]
    agg.add_batch(events, batch(events, items=lists), [1.0] * n, 1000)
    (w,) = agg.flush(0)
    assert coverage(lists.ravel(), n_items) == w.coverage == n_distinct / n_items


def test_coverage_sketched_is_within_its_error_past_the_exact_phase():
    rng = np.random.default_rng(0)
    n_items = 20_000
    lists = rng.integers(1, n_items + 1, (400, 20))
    exact, sketched = Coverage(n_items), Coverage(n_items, DistinctSketch())
    for chunk in np.array_split(lists, 7):
        exact.update(chunk)
        sketched.update(chunk)
    assert sketched.result() == pytest.approx(exact.result(), rel=0.05)


def test_prequential_evaluation_and_windows_agree_on_coverage_and_beyond_accuracy():
    """evaluate_prequential (offline) and a window fed the engine's batches (online): the same
    coverage, novelty, ARP, long-tail share, ILD and exposure Gini."""
    from model_core.evaluate import item_category_table

    events = generate(800, n_users=30, n_items=60, seed=3)
    train, test = events[:400], events[400:]
    vocab = build_vocab(train)
    model = create_model("markov", vocab)
    model.fit(group_by_user(train, vocab))
    cats = item_category_table(model, {e.item_id: e.category_id for e in events})
    offline = evaluate_prequential(model, test, ks=(10,), batch_size=100, n_boot=10,
                                   item_counts=model.item_counts, item_categories=cats)
    engine = PrequentialEngine(model, max_len=50, k=10)
    agg = _one_window(vocab.n_items)
    agg.set_item_counts(model.item_counts)
    agg.set_item_categories(cats)
    states: dict = {}
    for s in range(0, len(test), 70):  # other batches than offline's
        chunk = test[s:s + 70]
        agg.add_batch(chunk, engine.process(chunk, states), [1.0] * len(chunk), 1000)
    (w,) = agg.flush(0)
    assert 0 < offline.coverage <= 1
    assert w.coverage == offline.coverage
    assert set(w.beyond) == {"novelty@10", "arp@10", "aplt@10", "ild@10", "gini@10"}
    for key, v in w.beyond.items():
        assert v == pytest.approx(offline.metrics[key], rel=1e-12), key
    assert 0 < w.beyond["ild@10"] < 1 and 0 < w.beyond["gini@10"] < 1


@pytest.mark.parametrize("seed", range(5))
def test_window_percentiles_equal_exact_percentiles_within_accuracy(seed):
    rng = np.random.default_rng(seed)
    lat = rng.lognormal(3.0, 1.2, int(rng.integers(1, 400)))
    agg = _one_window(0)
    events = [ev(i, T0 + i) for i in range(len(lat))]
    agg.add_batch(events, batch(events), lat.tolist(), 1000)
    (w,) = agg.flush(0)
    exact = percentiles(lat, (50, 95, 99))
    online = [w.latency_p50_ms, w.latency_p95_ms, w.latency_p99_ms]
    hist = LatencyHistogram(accuracy=0.01)
    hist.add_many(lat)
    assert online == hist.quantiles((50, 95, 99))
    for got, want in zip(online, exact, strict=True):
        assert got == pytest.approx(want, rel=0.01)


def test_worker_windows_learn_categories_from_the_stream_and_match_offline_ild():
    """The worker's path (PartitionWindows with an ItemCategories learnt from the events'
    category_id): once every recommended item's category has been seen — here in the first
    batch — the windows' ILD and Gini are evaluate_prequential's with the data's categories."""
    from dataclasses import replace

    from model_core.evaluate import item_category_table
    from stream_app.windows.categories import ItemCategories
    from stream_app.windows.persistence import PartitionWindows

    events = generate(800, n_users=30, n_items=60, seed=3)
    train, test = events[:400], events[400:]
    vocab = build_vocab(train)
    model = create_model("markov", vocab).fit(group_by_user(train, vocab))
    cat_of = {e.item_id: e.category_id for e in events}
    # a first user who touches every item: the worker has seen each category after batch 1
    teach = [replace(test[0], event_id=f"t{i}", user_id="teacher", item_id=item,
                     category_id=cat_of[item], timestamp_ms=test[0].timestamp_ms)
             for i, item in enumerate(vocab.item_ids(range(1, len(vocab))))]
    stream = teach + test
    offline = evaluate_prequential(model, stream, ks=(10,), batch_size=len(teach), n_boot=10,
                                   item_categories=item_category_table(model, cat_of))
    pw = PartitionWindows(lambda: _one_window(vocab.n_items), lambda key: None)
    pw.set_item_categories(ItemCategories(vocab))
    engine = PrequentialEngine(model, max_len=50, k=10)
    states: dict = {}
    first = len(teach) + 20
    for s, e in [(0, first)] + [(a, a + 90) for a in range(first, len(stream), 90)]:
        chunk = stream[s:e]
        res = engine.process(chunk, states)
        pw.account([0] * len(chunk), list(range(s, s + len(chunk))), chunk,
                   range(len(chunk)), res, [1.0] * len(chunk), 1000)
    (w,) = pw.flush(0)
    got = MetricsWindow.from_json(w[1])
    assert len(pw.categories) == vocab.n_items
    for key in ("ild@10", "gini@10"):
        assert got.beyond[key] == pytest.approx(offline.metrics[key], rel=1e-12), key


def test_item_categories_are_learnt_bounded_and_follow_a_new_vocabulary():
    from model_core.vocab import ItemVocab
    from stream_app.windows.categories import ItemCategories

    def e(item, cat):
        return Event("x", "u", item, "view", T0, category_id=cat)

    vocab = ItemVocab(["a", "b", "c"])
    table = ItemCategories(vocab, max_categories=2)
    table.learn([e("a", "shoes"), e("b", "hats"), e("zz", "shoes"), e("c", None),
                 e("c", "bags")])  # zz: not in the vocabulary; bags: past the cap
    assert table.codes.tolist() == [-1, 0, 1, -1] and table.skipped == 1
    table.learn([e("a", "hats")])  # the latest wins
    assert table.codes.tolist() == [-1, 1, 1, -1]
    vocab.add("d")  # an item added at run time
    table.learn([e("d", "shoes")])
    assert table.codes.tolist() == [-1, 1, 1, -1, 0]
    table.rebind(ItemVocab(["d", "b", "q"]))
    assert table.codes.tolist() == [-1, 0, 1, -1]


def test_neural_checkpoint_windows_carry_the_offline_novelty(tmp_path):
    """A GRU4Rec checkpoint stores its training counts, so a window fed the engine's batches
    carries novelty / ARP / long-tail share equal to evaluate_prequential's."""
    from model_core.checkpoint import load_model, save_model
    from model_core.train import sequences_from_events, train_model

    events = generate(600, n_users=20, n_items=40, seed=5)
    train, test = events[:300], events[300:]
    seqs, vocab, _ = sequences_from_events(train)
    trained, _ = train_model("gru4rec", seqs, config={"epochs": 1, "dim": 8, "max_len": 20},
                             progress=False, vocab=vocab)
    model = load_model(save_model(trained, tmp_path / "gru"), device="cpu")
    assert model.item_counts is not None and model.item_counts.sum() == 300
    offline = evaluate_prequential(model, test, ks=(10,), batch_size=100, n_boot=10)
    agg = _one_window(vocab.n_items)
    agg.set_item_counts(model.item_counts)
    engine = PrequentialEngine(model, max_len=50, k=10)
    states: dict = {}
    for s in range(0, len(test), 64):
        chunk = test[s:s + 64]
        agg.add_batch(chunk, engine.process(chunk, states), [1.0] * len(chunk), 1000)
    (w,) = agg.flush(0)
    for key in ("novelty@10", "arp@10", "aplt@10"):
        assert w.beyond[key] == pytest.approx(offline.metrics[key], rel=1e-12), key
