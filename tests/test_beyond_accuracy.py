"""Beyond-accuracy metrics and multiple-comparison statistics against hand-computed examples;
the sampled-metric correction against the mis-ordering it exists for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_core.beyond import (
    average_recommendation_popularity,
    beyond_accuracy,
    exposure_gini,
    gini,
    intra_list_diversity,
    long_tail_share,
    novelty,
    repeat_split,
    short_head,
)
from model_core.significance import (
    SampledMetricCorrection,
    benjamini_hochberg,
    holm,
    p_value_text,
    paired_effect_size,
    paired_windows,
    window_means,
)

# items 1..5 with training counts 8, 4, 2, 1, 0 (total 15); index 0 unused
COUNTS = np.array([0, 8, 4, 2, 1, 0])
TOP = np.array([[1, 2], [3, 5], [4, 0]])  # the last list is padded


def test_novelty_by_hand():
    # items 1, 2, 3, 5 (unseen: counted once), 4
    expected = np.mean([-math.log2(8 / 15), -math.log2(4 / 15), -math.log2(2 / 15),
                        -math.log2(1 / 15), -math.log2(1 / 15)])
    assert novelty(TOP, COUNTS, 2) == pytest.approx(expected)
    assert novelty(TOP, COUNTS, 1) == pytest.approx(np.mean([-math.log2(8 / 15),
                                                             -math.log2(2 / 15),
                                                             -math.log2(1 / 15)]))


def test_arp_by_hand():
    assert average_recommendation_popularity(TOP, COUNTS, 2) == pytest.approx((6 + 1 + 1) / 3)


def test_long_tail_by_hand():
    # 5 items, head_share 0.4 -> the 2 most popular (items 1 and 2) are the head
    assert short_head(COUNTS, 0.4).tolist() == [False, True, True, False, False, False]
    assert long_tail_share(TOP, COUNTS, 2, head_share=0.4) == pytest.approx((0 + 1 + 1) / 3)
    with pytest.raises(ValueError):
        short_head(COUNTS, 1.0)


def test_gini_by_hand():
    assert gini(np.array([1, 1, 1, 1])) == 0.0
    assert gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)  # (n - 1) / n
    # exposures of items 1..5 in TOP at K=2: 1, 1, 1, 1, 1 -> equal
    assert exposure_gini(TOP, 5, 2) == 0.0
    assert exposure_gini(np.array([[1, 2], [1, 2]]), 4, 2) == pytest.approx(0.5)


def test_intra_list_diversity_by_hand():
    cats = np.array([-1, 0, 0, 1, 2, -1])  # item 5 has no category
    top = np.array([[1, 2, 3], [3, 4, 5], [1, 5, 0]])
    # list 1: pairs (1,2) same, (1,3) diff, (2,3) diff -> 2/3; list 2: (3,4) diff -> 1
    # list 3: one categorised item -> left out
    assert intra_list_diversity(top, cats, 3) == pytest.approx((2 / 3 + 1) / 2)


def test_repeat_split_by_hand():
    out = repeat_split(np.array([1, 0, 1, 1]), np.array([True, True, False, False]))
    assert out == {"hr_repeat": 0.5, "hr_new": 1.0, "repeat_case_share": 0.5,
                   "repeat_hit_share": pytest.approx(1 / 3)}


def test_beyond_accuracy_names():
    out = beyond_accuracy(TOP, COUNTS, (1, 2), categories=np.array([-1, 0, 0, 1, 2, -1]))
    assert set(out) == {f"{m}@{k}" for m in ("novelty", "arp", "aplt", "gini", "ild")
                        for k in (1, 2)}


def test_holm_and_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.20]
    # Holm: sorted 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> max-accumulated 0.09, 0.20*1 -> 0.2
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    # BH: sorted p*4/rank: 0.04, 0.06, 0.0533, 0.2 -> min from the top: 0.04, 0.0533, 0.0533, 0.2
    assert benjamini_hochberg(p) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_effect_size_and_p_text():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 1.0])
    d = a - b  # 1, 1, 2: mean 4/3, sd 0.577
    assert paired_effect_size(a, b) == pytest.approx(d.mean() / d.std(ddof=1))
    assert p_value_text(0.0, 1000) == "p < 0.002"
    assert p_value_text(0.0312, 1000) == "p = 0.0312"
    # a Holm-adjusted 0 over 42 tests of 5,000 resamples: below 42 * 2 / 5000, not 2 / 5000
    assert p_value_text(0.0, 5000, family=42) == "p < 0.017"
    assert p_value_text(0.0, 1000, family=600) == "p ≤ 1"


def test_sliding_window_test_by_hand():
    # 7 events in 3 windows of 3, 2, 2 consecutive events
    a = np.array([1, 1, 0, 1, 0, 1, 1], dtype=float)
    b = np.array([0, 1, 0, 0, 0, 1, 0], dtype=float)
    assert window_means(a, 3) == pytest.approx([2 / 3, 0.5, 1.0])
    assert len(window_means(a, 50)) == 7  # never more windows than events
    out = paired_windows(a, b, n_windows=3, n_boot=200)
    # window differences 1/3, 0.5, 0.5: A wins every window; no resample crosses zero
    assert out["mean_diff"] == pytest.approx((1 / 3 + 0.5 + 0.5) / 3)
    assert (out["windows"], out["windows_a_better"], out["windows_b_better"]) == (3, 3, 0)
    assert out["p_value"] == 0.0 and out["ci_low"] > 0
    assert out["b_windows"] == pytest.approx([1 / 3, 0.0, 0.5])
    same = paired_windows(a, a, n_windows=3, n_boot=200)
    assert same["mean_diff"] == 0.0 and same["windows_a_better"] == 0
    with pytest.raises(ValueError):
        paired_windows(a, b[:-1])


def test_sampled_metrics_misorder_two_models_and_the_correction_does_not():
    rng = np.random.default_rng(0)
    n_items, m, n = 2000, 100, 4000
    # model A: 30 % of targets first in the full ranking, the rest far down;
    # model B: every target at full rank 30 (never in the top 10)
    full_a = np.where(rng.random(n) < 0.3, 1, 1000)
    full_b = np.full(n, 30)

    def sampled(full):  # negatives above the target among m uniform draws of the others
        return 1 + rng.binomial(m, (full - 1) / (n_items - 1))

    def hr10(r):
        return float(r <= 10)

    full_hr = (np.mean(full_a <= 10), np.mean(full_b <= 10))
    samp_a, samp_b = sampled(full_a), sampled(full_b)
    sampled_hr = (np.mean(samp_a <= 10), np.mean(samp_b <= 10))
    assert full_hr[0] > full_hr[1]  # full ranking: A better
    assert sampled_hr[0] < sampled_hr[1]  # sampled metric: B "better"
    corr = SampledMetricCorrection(n_items, m)
    fixed = (corr.corrected(samp_a, hr10), corr.corrected(samp_b, hr10))
    assert fixed[0] > fixed[1]
    assert abs(fixed[1] - full_hr[1]) < abs(sampled_hr[1] - full_hr[1]) / 5
    with pytest.raises(ValueError):
        corr.corrected(np.array([m + 2]), hr10)


def test_segments_by_hand():
    from model_core.segments import history_bucket, popularity_bucket, segment_report

    assert history_bucket(np.array([0, 1, 3, 7, 15, 40])).tolist() == [
        "0", "1", "2-4", "5-9", "10-19", "20+"]
    # counts of items 1..5: 8, 4, 2, 1, 0 -> seen 1..4 in thirds of 2: head {1, 2}, mid {3, 4}
    assert popularity_bucket(np.array([1, 2, 3, 4, 5, 9]), COUNTS).tolist() == [
        "head", "head", "mid", "mid", "unseen", "unseen"]
    hits = np.array([1.0, 0.0, 1.0, 1.0])
    rep = segment_report({"hr@10": hits}, {"action": ["view", "view", "purchase", "view"]},
                         n_boot=50)
    assert rep["action"]["view"]["n"] == 3
    assert rep["action"]["view"]["hr@10"]["mean"] == pytest.approx(2 / 3)
    assert rep["action"]["purchase"]["hr@10"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    with pytest.raises(ValueError):
        segment_report({"hr@10": hits}, {"action": ["view"]})


def test_provenance_records_commit_hashes_split_seed_config(tmp_path):
    import hashlib

    from model_core.provenance import code_commit, file_sha256, provenance

    f = tmp_path / "log.txt"
    f.write_bytes(b"u1 i1\nu1 i2\n")
    p = provenance([f], {"protocol": "loo"}, 7, {"model": "markov", "k": 20})
    assert p["data_sha256"] == {str(f): hashlib.sha256(b"u1 i1\nu1 i2\n").hexdigest()}
    assert p["split"] == {"protocol": "loo"} and p["seed"] == 7
    assert p["config"] == {"model": "markov", "k": 20}
    assert p["commit"] == code_commit() and p["commit"] not in ("", "unknown")
    assert file_sha256(f) == p["data_sha256"][str(f)]


def test_online_window_carries_the_offline_figures_of_its_lists():
    """A window's novelty / ARP / APLT / ILD / Gini are the offline functions' figures of the
    top-K lists it counts (one per new event, as coverage), also across batches and a
    restore; its ``beyond_n`` makes means over windows exact."""
    from test_online import T0, batch, ev

    from stream_app.windows.aggregation import WindowAggregator, aggregate_beyond

    cats = np.array([-1, 0, 0, 1, -1, 2])  # item 4 has no category; item 6 is past the end

    def fresh():
        return WindowAggregator(ks=(1, 2), window_s=60, allowed_lateness_s=0, n_items=5,
                                item_counts=COUNTS, item_categories=cats)

    first = [ev(0, T0, "a"), ev(1, T0 + 1, "b"), ev(2, T0 + 2, "a")]
    top1 = [[1, 2], [3, 5], [1, 4]]
    second = [ev(3, T0 + 3, "b"), ev(4, T0 + 4, "c")]
    top2 = [[4, 6], [2, 1]]  # item 6: added at run time, never in training (count 0)
    agg = fresh()
    agg.add_batch(first, batch(first, items=top1, dups=[2]), [1.0] * 3, 1000)  # row 2: dup
    back = WindowAggregator.restore(agg.snapshot())
    back.set_item_counts(COUNTS)  # counts and categories are not saved; the worker hands
    back.set_item_categories(cats)  # them over
    for a in (agg, back):
        a.add_batch(second, batch(second, items=top2), [1.0] * 2, 2000)
    (w,) = agg.flush(0)
    (w2,) = back.flush(0)
    lists = np.array([[1, 2], [3, 5], [4, 6], [2, 1]])
    counts6 = np.r_[COUNTS, 0]
    for k in (1, 2):
        want = {f"novelty@{k}": novelty(lists, counts6, k),
                f"arp@{k}": average_recommendation_popularity(lists, counts6, k),
                f"aplt@{k}": long_tail_share(lists, counts6, k),
                f"gini@{k}": exposure_gini(lists, 6, k)}  # item 6 joined the catalogue
        if k == 2:
            want["ild@2"] = intra_list_diversity(lists, cats, k)
        for key, v in want.items():
            assert w.beyond[key] == pytest.approx(v) and w2.beyond[key] == pytest.approx(v)
    assert "ild@1" not in w.beyond  # one item per list: no pair
    # by hand at K=1: items 1, 3, 4, 2 of counts 8, 2, 1, 4 (total 15)
    assert w.beyond["arp@1"] == pytest.approx((8 + 2 + 1 + 4) / 4)
    # at K=2, pairs (1,2) same, (3,5) differ, (4,6) none, (2,1) same: ILD 1/3 of 3 lists;
    # exposure of items 1..6 is 2, 2, 1, 1, 1, 1
    assert (w.beyond["ild@2"], w.beyond_n["ild@2"]) == (pytest.approx(1 / 3), 3)
    assert w.beyond["gini@2"] == pytest.approx(gini(np.array([2, 2, 1, 1, 1, 1])))
    assert w.beyond_n["novelty@2"] == 8 and "gini@2" not in w.beyond_n
    # a second window: means over both weighted by beyond_n equal the figure of all lists
    more = [ev(5, T0 + 61_000, "a")]
    agg2 = fresh()
    for evs, top in ((first[:2] + second, top1[:2] + top2), (more, [[3, 1]])):
        agg2.add_batch(evs, batch(evs, items=top), [1.0] * len(evs), 3000)
    both = aggregate_beyond(agg2.flush(0))
    every = np.r_[lists, [[3, 1]]]
    assert both["novelty@2"] == pytest.approx(novelty(every, counts6, 2))
    assert both["ild@2"] == pytest.approx(intra_list_diversity(every, cats, 2))
    assert "gini@2" not in both
    no_counts = WindowAggregator(ks=(1,), window_s=60, n_items=6)
    no_counts.add_batch(second, batch(second, items=top2), [1.0] * 2, 2000)
    assert set(no_counts.flush(0)[0].beyond) == {"gini@1"}


def test_window_drops_exposure_past_its_cap_rather_than_estimate():
    from test_online import T0, batch, ev

    from stream_app.windows.aggregation import WindowAggregator

    agg = WindowAggregator(ks=(2,), window_s=60, n_items=10, exposure_cap=3)
    evs = [ev(0, T0, "a"), ev(1, T0 + 1, "b")]
    agg.add_batch(evs[:1], batch(evs[:1], items=[[1, 2]]), [1.0], 1000)
    back = WindowAggregator.restore(agg.snapshot())
    assert back.snapshot() == agg.snapshot()
    agg.add_batch(evs[1:], batch(evs[1:], items=[[3, 4]]), [1.0], 1000)  # 4 items > 3
    assert "gini@2" not in agg.flush(0)[0].beyond
    assert back.flush(0)[0].beyond["gini@2"] == pytest.approx(exposure_gini(
        np.array([[1, 2]]), 10, 2))
