"""Metric maths (model_core/metrics.py) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from model_core.metrics import (
    MISS,
    TIE_POLICIES,
    RankingAccumulator,
    bootstrap_ci,
    case_matrix,
    case_metrics,
    classification_report,
    confusion_matrix,
    coverage,
    full_ranks,
    hit_at,
    metric_names,
    ndcg_at,
    paired_bootstrap,
    percentiles,
    rank_in_list,
    ranking_metrics,
    report_from_confusion,
    rr_at,
)

NEG_INF = -np.inf


# --------------------------------------------------------------------------- full ranks
# one row per case: scores over 5 items, the target column, and the rank under each policy
RANK_CASES = [
    # (scores, target, conservative, optimistic, average)
    ([0.1, 0.5, 0.5, 0.2, 0.5], 1, 3, 1, 2.0),      # tied with 2 others at the top
    ([0.1, 0.5, 0.5, 0.2, 0.5], 3, 4, 4, 4.0),      # 3 strictly above, no tie
    ([0.1, 0.5, 0.5, 0.2, 0.5], 0, 5, 5, 5.0),      # last
    ([0.9, 0.1, 0.2, 0.3, 0.4], 0, 1, 1, 1.0),      # first, alone
    ([1.0, 1.0, 1.0, 1.0, 1.0], 2, 5, 1, 3.0),      # everything tied
    ([NEG_INF, 1.0, NEG_INF, 0.0, 2.0], 3, 3, 3, 3.0),   # -inf columns never above
    ([NEG_INF, 1.0, NEG_INF, 0.0, 2.0], 0, 5, 4, 4.5),   # a -inf target ties with -inf
    ([3, 1, 2, 2, 0], 2, 3, 2, 2.5),                # integer scores
]


@pytest.mark.parametrize("scores,target,cons,opt,avg", RANK_CASES)
def test_full_ranks_by_hand(scores, target, cons, opt, avg):
    s = np.array([scores])
    expected = {"conservative": cons, "optimistic": opt, "average": avg}
    for ties in TIE_POLICIES:
        assert full_ranks(s, [target], ties).tolist() == [expected[ties]], ties


def test_full_ranks_batched_equals_row_by_row():
    s = np.array([r[0] for r in RANK_CASES], dtype=np.float64)
    targets = [r[1] for r in RANK_CASES]
    assert full_ranks(s, targets).tolist() == [r[2] for r in RANK_CASES]  # conservative default
    assert full_ranks(s, np.array(targets), "average").tolist() == [r[4] for r in RANK_CASES]


def test_full_ranks_against_brute_force():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 6, size=(300, 20)).astype(np.float32)  # many ties
    targets = rng.integers(0, 20, size=300)
    got = {t: full_ranks(scores, targets, t) for t in TIE_POLICIES}
    for b in range(300):
        t = scores[b, targets[b]]
        above = sum(1 for j in range(20) if scores[b, j] > t)
        equal = sum(1 for j in range(20) if scores[b, j] == t and j != targets[b])
        assert got["optimistic"][b] == above + 1
        assert got["conservative"][b] == above + equal + 1
        assert got["average"][b] == above + equal / 2 + 1
    assert (got["optimistic"] <= got["average"]).all()
    assert (got["average"] <= got["conservative"]).all()


def test_full_ranks_nan_target_ranks_last():
    s = np.array([[np.nan, 1.0, 2.0, 0.5], [3.0, np.nan, 1.0, 0.5]])
    for ties in TIE_POLICIES:
        r = full_ranks(s, [0, 0], ties)
        assert r.tolist() == [4, 1], ties  # NaN target last; NaN column never above
        assert case_matrix(r, [10])["ndcg@10"].max() <= 1.0


def test_full_ranks_unknown_policy():
    with pytest.raises(ValueError, match="conservative, optimistic, average"):
        full_ranks(np.zeros((1, 3)), [0], "pessimistic")


def test_rank_in_list():
    assert rank_in_list([4, 2, 9], 9) == 3
    assert rank_in_list([4, 2, 9], 4) == 1
    assert rank_in_list([4, 2, 9], 5) == MISS == 0
    assert rank_in_list([], 1) == MISS
    assert rank_in_list(np.array([7, 7, 3]), 7) == 1  # first occurrence


# --------------------------------------------------------------------------- per case
@pytest.mark.parametrize("rank,k,hr,ndcg,rr", [
    (1, 1, 1.0, 1.0, 1.0),
    (1, 10, 1.0, 1.0, 1.0),
    (2, 1, 0.0, 0.0, 0.0),
    (3, 5, 1.0, 0.5, 1 / 3),                    # 1/log2(4) = 1/2
    (5, 5, 1.0, 1 / math.log2(6), 0.2),         # at the cut-off: inside
    (6, 5, 0.0, 0.0, 0.0),                      # just beyond
    (7, 10, 1.0, 1 / 3, 1 / 7),                 # 1/log2(8) = 1/3
    (2.5, 5, 1.0, 1 / math.log2(3.5), 0.4),     # average-tie ranks are fractional
    (MISS, 10, 0.0, 0.0, 0.0),
])
def test_hit_ndcg_mrr_by_hand(rank, k, hr, ndcg, rr):
    assert hit_at(rank, k) == hr
    assert ndcg_at(rank, k) == pytest.approx(ndcg, abs=1e-15)
    assert rr_at(rank, k) == pytest.approx(rr, abs=1e-15)
    assert case_metrics(rank, [k]) == pytest.approx({f"hr@{k}": hr, f"ndcg@{k}": ndcg,
                                                     f"mrr@{k}": rr})


def test_metric_names_order():
    assert metric_names([10, 20]) == ["hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20"]


def test_case_matrix_equals_case_metrics():
    ks = (1, 3, 5, 10, 20)
    ranks = [MISS, 1, 2, 3, 4.5, 5, 6, 10, 11, 20, 21, 1000, 2.5]
    m = case_matrix(np.array(ranks), ks)
    assert set(m) == set(metric_names(ks))
    for i, r in enumerate(ranks):
        one = case_metrics(r, ks)
        for name in metric_names(ks):
            assert m[name][i] == pytest.approx(one[name], abs=1e-15), (r, name)


def test_ranking_metrics_by_hand():
    ranks = np.array([1, 3, MISS, 12])
    m = ranking_metrics(ranks, ks=(10,))
    assert m["hr@10"] == pytest.approx(2 / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 0.5) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 4)
    empty = ranking_metrics(np.array([]), ks=(10,))
    assert set(empty) == {"hr@10", "ndcg@10", "mrr@10"}
    assert all(math.isnan(v) for v in empty.values())


def test_accumulator_equals_ranking_metrics_on_every_prefix():
    rng = np.random.default_rng(11)
    ks = (1, 5, 10, 20)
    # ranks as they come out of full_ranks (ints and average-tie halves) and MISS
    ranks = rng.integers(0, 40, size=400).astype(np.float64)
    ranks[rng.random(400) < 0.2] += 0.5
    ranks[rng.random(400) < 0.3] = MISS
    acc = RankingAccumulator(ks)
    assert acc.get() == {}
    for i, r in enumerate(ranks, 1):
        acc.update(r)
        assert acc.n == i
        expected = ranking_metrics(ranks[:i], ks)
        got = acc.get()
        assert set(got) == set(expected)
        for name in expected:
            assert got[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-15), (i, name)


def test_accumulator_merge_equals_one_pass():
    ranks = [1, 2, MISS, 7, 15, 3, MISS, 1]
    whole, left, right = (RankingAccumulator((5, 10)) for _ in range(3))
    for r in ranks:
        whole.update(r)
    for r in ranks[:3]:
        left.update(r)
    for r in ranks[3:]:
        right.update(r)
    left.merge(right)
    assert left.n == whole.n == 8
    assert left.get() == pytest.approx(whole.get())


def test_coverage():
    assert coverage([0, 1, 2, 2, 5], 10) == pytest.approx(0.3)  # 0 = unknown, not an item
    assert coverage([], 10) == 0.0
    assert coverage([1], 0) == 0.0


def test_percentiles():
    # nearest rank: positions round(q / 100 * 99) = 50, 94, 98 (an observed value each; the
    # windows' latency histogram uses the same rank, see test_metric_parity.py)
    assert percentiles(list(range(1, 101))) == [51.0, 95.0, 99.0]
    assert percentiles([3.0, 1.0, 2.0], (0, 50, 100)) == [1.0, 2.0, 3.0]
    assert percentiles([]) == [None, None, None]
    assert percentiles([4.0], (50,)) == [4.0]


# --------------------------------------------------------------------------- classification
# true (rows) x predicted (columns); class 2 is predicted once but never true;
# class 3 never appears: it is left out of macro-F1
CM = np.array([
    [5, 1, 0, 0],
    [2, 3, 1, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
])


def test_report_from_a_hand_made_confusion():
    rep = report_from_confusion(CM, ["a", "b", "c", "d"])
    assert rep["n"] == 12
    assert rep["accuracy"] == pytest.approx(8 / 12)
    pc = rep["per_class"]
    assert set(pc) == {"a", "b", "c"}
    assert pc["a"] == pytest.approx({"precision": 5 / 7, "recall": 5 / 6, "f1": 10 / 13,
                                     "support": 6})
    assert pc["b"] == pytest.approx({"precision": 3 / 4, "recall": 1 / 2, "f1": 3 / 5,
                                     "support": 6})
    assert pc["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep["macro_f1"] == pytest.approx((10 / 13 + 3 / 5 + 0) / 3)  # = 89/195
    orjson.dumps(rep)  # plain Python numbers: serializable without numpy options


def test_classification_report_from_labels():
    y_true, y_pred = [], []
    for t in range(4):
        for p in range(4):
            y_true += [t] * int(CM[t, p])
            y_pred += [p] * int(CM[t, p])
    rng = np.random.default_rng(3)
    order = rng.permutation(len(y_true))
    yt, yp = np.array(y_true)[order], np.array(y_pred)[order]
    assert (confusion_matrix(yt, yp, 4) == CM).all()
    assert classification_report(yt, yp, 4, ["a", "b", "c", "d"]) == \
        report_from_confusion(CM, ["a", "b", "c", "d"])


def test_classification_report_edges():
    perfect = classification_report([0, 1, 2], [0, 1, 2], 3)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0
    empty = classification_report([], [], 3)
    assert empty["n"] == 0 and math.isnan(empty["accuracy"]) and math.isnan(empty["macro_f1"])
    with pytest.raises(ValueError, match="differ in length"):
        classification_report([0, 1], [0], 2)


@pytest.mark.parametrize("y_true,y_pred", [([0, 1], [-1, 1]), ([0, 3], [0, 1]), ([-2], [0])])
def test_class_ids_out_of_range_are_refused(y_true, y_pred):
    # -1 ("no prediction") must not silently count as the last class
    with pytest.raises(ValueError, match="outside 0..2"):
        classification_report(y_true, y_pred, 3)


# --------------------------------------------------------------------------- uncertainty
def test_bootstrap_ci_covers_the_true_mean_in_most_trials():
    """95% intervals of a Bernoulli(0.3) mean from 200 cases: coverage near 95%."""
    p, n, trials = 0.3, 200, 100
    rng = np.random.default_rng(2024)
    covered, widths = 0, []
    for trial in range(trials):
        values = (rng.random(n) < p).astype(np.float64)
        lo, hi = bootstrap_ci(values, n_boot=400, alpha=0.05, seed=trial)
        assert lo <= values.mean() <= hi
        covered += lo <= p <= hi
        widths.append(hi - lo)
    # expected about 95 of 100; percentile intervals run a little narrow at this n
    assert 85 <= covered <= 100
    assert covered < 100 or min(widths) > 0  # not a degenerate always-covering interval
    normal_width = 2 * 1.96 * math.sqrt(p * (1 - p) / n)  # 0.127
    assert 0.7 * normal_width < float(np.mean(widths)) < 1.3 * normal_width


def test_bootstrap_ci_edges():
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([])))
    assert bootstrap_ci(np.full(50, 0.25)) == (0.25, 0.25)
    a = bootstrap_ci(np.arange(30.0), seed=5)
    assert a == bootstrap_ci(np.arange(30.0), seed=5)  # seeded: reproducible


def _clustered_cases(n_clusters=100, size=25, seed=7):
    """Cases in clusters of ``size``: every case of a cluster shares the cluster's hit (a
    session the model gets right or wrong as a whole), with a little case-level noise."""
    rng = np.random.default_rng(seed)
    hit = (rng.random(n_clusters) < 0.4).astype(np.float64)
    values = np.repeat(hit, size)
    flip = rng.random(len(values)) < 0.05
    values[flip] = 1.0 - values[flip]
    return values, np.repeat(np.arange(n_clusters), size)


def test_clustered_bootstrap_is_wider_on_clustered_cases_and_reduces_to_case_level():
    values, clusters = _clustered_cases()
    lo_c, hi_c = bootstrap_ci(values, n_boot=1000, seed=3)
    lo_k, hi_k = bootstrap_ci(values, n_boot=1000, seed=3, clusters=clusters)
    assert lo_k <= values.mean() <= hi_k
    # 100 independent units, not 2,500: about sqrt(25 * (1 - 0.1)^2) ~ 4.5 times wider
    assert (hi_k - lo_k) > 3.0 * (hi_c - lo_c)
    # every case its own cluster: exactly the case-level bootstrap
    own = np.arange(len(values))
    assert bootstrap_ci(values, n_boot=1000, seed=3, clusters=own) == (lo_c, hi_c)
    # labels of any type (session ids): same order, same draws
    names = np.array([f"s{c:03d}" for c in clusters])
    assert bootstrap_ci(values, n_boot=200, seed=3, clusters=names) == \
        bootstrap_ci(values, n_boot=200, seed=3, clusters=clusters)
    with pytest.raises(ValueError, match="one label per value"):
        bootstrap_ci(values, clusters=clusters[:10])


def test_clustered_paired_bootstrap_is_wider_and_reduces_to_case_level():
    a, clusters = _clustered_cases(seed=11)
    b, _ = _clustered_cases(seed=12)
    case = paired_bootstrap(a, b, n_boot=1000, seed=1)
    clus = paired_bootstrap(a, b, n_boot=1000, seed=1, clusters=clusters)
    assert clus["mean_diff"] == case["mean_diff"]
    assert (clus["ci_high"] - clus["ci_low"]) > 3.0 * (case["ci_high"] - case["ci_low"])
    assert clus["p_value"] > case["p_value"]
    assert paired_bootstrap(a, b, n_boot=1000, seed=1, clusters=np.arange(len(a))) == case


def test_paired_bootstrap_sign():
    rng = np.random.default_rng(9)
    b = rng.random(300)
    a = b + 0.05 + rng.normal(0, 0.05, 300)  # a is better on average by 0.05
    better = paired_bootstrap(a, b, n_boot=500, seed=1)
    assert better["mean_diff"] == pytest.approx(float(np.mean(a - b)))
    assert better["mean_diff"] > 0 and better["ci_low"] > 0 and better["p_value"] < 0.01
    worse = paired_bootstrap(b, a, n_boot=500, seed=1)
    assert worse["mean_diff"] == pytest.approx(-better["mean_diff"])
    assert worse["ci_high"] < 0 and worse["p_value"] < 0.01


def test_paired_bootstrap_no_difference():
    rng = np.random.default_rng(4)
    x = rng.random(200)
    same = paired_bootstrap(x, x.copy(), n_boot=200)
    assert same == {"mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    noise = rng.normal(0, 1, 200)
    noise -= noise.mean()  # exactly zero mean difference
    res = paired_bootstrap(x + noise, x, n_boot=500, seed=2)
    assert res["ci_low"] < 0 < res["ci_high"] and res["p_value"] > 0.5


def test_paired_bootstrap_edges():
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap([1.0, 2.0], [1.0])
    empty = paired_bootstrap([], [])
    assert all(math.isnan(v) for v in empty.values())  # no cases: no claim of significance


def test_update_many_equals_update_in_turn():
    rng = np.random.default_rng(7)
    ranks = [int(r) for r in np.where(rng.random(500) < 0.5, rng.integers(1, 40, 500), MISS)]
    one, many = RankingAccumulator((1, 5, 10, 20)), RankingAccumulator((1, 5, 10, 20))
    for r in ranks:
        one.update(r)
    many.update_many(ranks[:200])
    many.update_many(iter(ranks[200:]))
    assert many.n == one.n == 500
    assert many.sums == one.sums  # exactly: the same additions in the same order


def test_no_resamples_gives_no_interval_and_no_p_value():
    """--bootstrap 0 (allowed by the command line): the means and the difference, no
    interval, no p-value (it raised an IndexError inside numpy's quantile)."""
    from model_core.metrics import bootstrap_ci, paired_bootstrap
    from model_core.significance import p_value_text

    lo, hi = bootstrap_ci(np.array([0.0, 1.0, 1.0]), n_boot=0)
    assert lo != lo and hi != hi
    out = paired_bootstrap(np.array([1.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0]), n_boot=0)
    assert out["mean_diff"] == 1 / 3 and out["p_value"] != out["p_value"]
    assert p_value_text(None, 0) == p_value_text(float("nan"), 0) == "p = n/a"
