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
