"""Ranking and classification metrics, bootstrap confidence intervals, paired tests.

One implementation, used by offline evaluation and by the stream's online windows.

Ranks are 1-based; a miss (target not in the ranked list, or beyond the cut-off) is
``MISS = 0``. Per-case values (:func:`case_metrics`) are summed by online windows and averaged
offline, so both reach the same aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

MISS = 0
DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)
TIE_POLICIES = ("conservative", "optimistic", "average")


# --------------------------------------------------------------------------- ranks
def full_ranks(scores: np.ndarray, targets: np.ndarray, ties: str = "conservative") -> np.ndarray:
    """1-based rank of ``targets[b]`` among all columns of ``scores[b]``.

    ``ties``: ``conservative`` counts every other item with an equal score as ranked above
    the target (GRU4Rec's official evaluation), ``optimistic`` counts none, ``average`` half.
    Columns holding ``-inf`` (excluded items) never rank above the target unless it is
    ``-inf`` itself. A ``NaN`` column never ranks above the target; a target scored ``NaN``
    ranks last (``n_columns``) under every policy. Works on numpy arrays; pass
    ``tensor.cpu().numpy()`` for torch.
    """
    if ties not in TIE_POLICIES:
        raise ValueError(f"unknown tie policy {ties!r}; choose one of {', '.join(TIE_POLICIES)}")
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    t = scores[np.arange(len(targets)), targets][:, None]
    above = (scores > t).sum(axis=1)
    if ties == "optimistic":
        ranks = above + 1
    else:
        equal = (scores == t).sum(axis=1) - 1
        ranks = above + equal + 1 if ties == "conservative" else above + equal / 2.0 + 1
    # a NaN target compares False with everything: without this it would rank first
    # (optimistic), or 0.5 (average: NDCG above 1)
    nan_target = np.isnan(t[:, 0]) if np.issubdtype(scores.dtype, np.floating) else None
    if nan_target is not None and nan_target.any():
        ranks = np.where(nan_target, scores.shape[1], ranks)
    return ranks


def rank_in_list(ranked_items: Sequence[int] | np.ndarray, target: int) -> int:
    """1-based position of ``target`` in a best-first list; :data:`MISS` when absent."""
    for pos, item in enumerate(ranked_items, 1):
        if item == target:
            return pos
    return MISS


# --------------------------------------------------------------------------- per case
def hit_at(rank: float, k: int) -> float:
    return 1.0 if MISS < rank <= k else 0.0


def ndcg_at(rank: float, k: int) -> float:
    """NDCG@k for one relevant item: ``1 / log2(rank + 1)`` within the cut-off."""
    return 1.0 / math.log2(rank + 1.0) if MISS < rank <= k else 0.0


def rr_at(rank: float, k: int) -> float:
    """Reciprocal rank cut at k (MRR@k per case)."""
    return 1.0 / rank if MISS < rank <= k else 0.0


def metric_names(ks: Iterable[int]) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in ("hr", "ndcg", "mrr")]


def case_metrics(rank: float, ks: Iterable[int]) -> dict[str, float]:
    """Every ranking metric of one test case, keyed ``hr@K``, ``ndcg@K``, ``mrr@K``."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_at(rank, k)
        out[f"ndcg@{k}"] = ndcg_at(rank, k)
        out[f"mrr@{k}"] = rr_at(rank, k)
    return out


def case_matrix(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, np.ndarray]:
    """Vectorised :func:`case_metrics` over many cases: name -> per-case values."""
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        inside = (r > MISS) & (r <= k)
        safe = np.where(inside, r, 1.0)
        out[f"hr@{k}"] = inside.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(inside, 1.0 / np.log2(safe + 1.0), 0.0)
        out[f"mrr@{k}"] = np.where(inside, 1.0 / safe, 0.0)
    return out


def ranking_metrics(ranks: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Means of :func:`case_matrix` (``hr@K`` = Recall@K for one target per case)."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        return {name: float("nan") for name in metric_names(ks)}
    return {name: float(v.mean()) for name, v in case_matrix(ranks, ks).items()}


class RankingAccumulator:
    """Running sums of per-case ranking metrics (online windows, offline prequential)."""

    __slots__ = ("ks", "n", "sums")

    def __init__(self, ks: Iterable[int]) -> None:
        self.ks = tuple(ks)
        self.n = 0
        self.sums = dict.fromkeys(metric_names(self.ks), 0.0)

    def update(self, rank: float) -> None:
        self.update_many([rank])

    def update_many(self, ranks: Iterable[float]) -> None:
        """One case per rank, added in order (the sums do not depend on how ranks are
        grouped into calls)."""
        ranks = ranks if isinstance(ranks, list) else list(ranks)
        self.n += len(ranks)
        hits = [r for r in ranks if r != MISS]
        sums = self.sums
        for k in self.ks:
            at_k = [r for r in hits if r <= k]
            if not at_k:
                continue
            hr, ndcg, mrr = f"hr@{k}", f"ndcg@{k}", f"mrr@{k}"
            n_hit, s_ndcg, s_mrr = sums[hr], sums[ndcg], sums[mrr]
            for r in at_k:
                n_hit += 1.0
                s_ndcg += 1.0 / math.log2(r + 1.0)
                s_mrr += 1.0 / r
            sums[hr], sums[ndcg], sums[mrr] = n_hit, s_ndcg, s_mrr

    def merge(self, other: RankingAccumulator) -> None:
        self.n += other.n
        for key, v in other.sums.items():
            self.sums[key] += v

    def get(self) -> dict[str, float]:
        if self.n == 0:
            return {}
        return {key: v / self.n for key, v in self.sums.items()}


# --------------------------------------------------------------------------- coverage
def catalogue_items(items: Iterable[int] | np.ndarray) -> np.ndarray:
    """The catalogue indices among recommended ``items`` (flattened): ``1..n_items``; 0 is the
    unknown item and is never a recommendation of the catalogue."""
    a = np.asarray(items if isinstance(items, np.ndarray) else list(items), dtype=np.int64)
    a = a.ravel()
    return a[a > 0]


def coverage_share(n_distinct: int, n_items: int) -> float:
    """Catalogue coverage: distinct items recommended over the catalogue size (0 for an
    empty catalogue; at most 1, since an estimated distinct count can overshoot)."""
    if n_items <= 0:
        return 0.0
    return min(1.0, n_distinct / n_items)


class ExactDistinct:
    """The distinct catalogue indices seen, as a set: the exact counter :class:`Coverage`
    uses by default (``add_ints`` / ``count``, as the online windows' sketch)."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: set[int] = set()

    def add_ints(self, values: np.ndarray) -> None:
        self.values.update(np.unique(values).tolist())

    def count(self) -> int:
        return len(self.values)


class Coverage:
    """Catalogue coverage of recommendation lists: :meth:`update` with each batch of top-K
    lists, :meth:`result` the share of the catalogue they covered.

    Offline evaluation counts distinct items exactly (:class:`ExactDistinct`). An online
    window passes a bounded sketch as ``distinct`` (anything with ``add_ints(array)`` and
    ``count()``; the stream's is :class:`~stream_app.windows.distinct_sketch.DistinctSketch`)
    because it writes every open window to its changelog after each micro-batch and a set
    would grow with the catalogue; up to 128 distinct items the sketch is exact, so both
    give the same figure on the same lists. Which items count and the share are this class's
    in both cases.
    """

    __slots__ = ("n_items", "distinct")

    def __init__(self, n_items: int, distinct=None) -> None:
        self.n_items = int(n_items)
        self.distinct = ExactDistinct() if distinct is None else distinct

    def update(self, items: Iterable[int] | np.ndarray) -> None:
        self.distinct.add_ints(catalogue_items(items))

    def result(self) -> float:
        return coverage_share(self.distinct.count(), self.n_items)


def coverage(recommended: Iterable[int], n_items: int) -> float:
    """Share of the catalogue that appears in at least one recommendation list."""
    cov = Coverage(n_items)
    cov.update(recommended)
    return cov.result()


# --------------------------------------------------------------------------- classification
def classification_report(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int,
                          labels: Sequence[str] | None = None) -> dict:
    """Accuracy, per-class precision/recall/F1/support and macro-F1 over classes present
    in ``y_true`` or ``y_pred`` (classes never seen nor predicted are left out of the mean)."""
    yt = np.asarray(y_true, dtype=np.int64)
    yp = np.asarray(y_pred, dtype=np.int64)
    if len(yt) != len(yp):
        raise ValueError("y_true and y_pred differ in length")
    cm = confusion_matrix(yt, yp, n_classes)
    return report_from_confusion(cm, labels)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    yt = np.asarray(y_true, dtype=np.int64)
    yp = np.asarray(y_pred, dtype=np.int64)
    for name, y in (("y_true", yt), ("y_pred", yp)):
        # a negative id would silently count as class n_classes - id (numpy wrap-around)
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} holds class ids outside 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (yt, yp), 1)
    return cm


def report_from_confusion(cm: np.ndarray, labels: Sequence[str] | None = None) -> dict:
    n_classes = cm.shape[0]
    labels = list(labels) if labels is not None else [str(i) for i in range(n_classes)]
    total = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    pred_n = cm.sum(axis=0).astype(np.float64)
    true_n = cm.sum(axis=1).astype(np.float64)
    per_class = {}
    f1s = []
    for c in range(n_classes):
        if true_n[c] == 0 and pred_n[c] == 0:
            continue
        p = float(tp[c] / pred_n[c]) if pred_n[c] else 0.0
        r = float(tp[c] / true_n[c]) if true_n[c] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        per_class[labels[c]] = {"precision": p, "recall": r, "f1": f1, "support": int(true_n[c])}
        f1s.append(f1)
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "per_class": per_class,
        "n": total,
    }


# --------------------------------------------------------------------------- uncertainty
def _resampled_means(values: np.ndarray, n_boot: int, seed: int,
                     clusters: np.ndarray | None) -> np.ndarray:
    """[n_boot] means of ``values`` over bootstrap resamples.

    ``clusters`` (one label per value: the session or user a test case belongs to): whole
    clusters are drawn with replacement, as many as there are, and each resample's mean is
    the sum of its cases' values over their number. Cases of one session are not independent
    (one good model state hits many of them), so resampling cases alone understates the
    spread. When every case is its own cluster (labels ``0..n-1`` in case order) the draws
    and the means are exactly those of the case-level bootstrap (``clusters=None``).
    """
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    if clusters is None:
        n = len(values)
        for b in range(n_boot):
            means[b] = values[rng.integers(0, n, n)].mean()
        return means
    labels = np.asarray(clusters)
    if labels.shape != values.shape:
        raise ValueError(f"clusters must give one label per value: {labels.shape} labels for "
                         f"{values.shape} values")
    _, inv = np.unique(labels, return_inverse=True)
    m = int(inv.max()) + 1
    sums = np.bincount(inv, weights=values, minlength=m)
    sizes = np.bincount(inv, minlength=m).astype(np.float64)
    for b in range(n_boot):
        pick = rng.integers(0, m, m)
        means[b] = sums[pick].sum() / sizes[pick].sum()
    return means


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0, clusters: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean of per-case ``values``;
    clustered (whole sessions / users resampled) when ``clusters`` labels the cases."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or n_boot < 1:  # no cases, or no resamples asked for (--bootstrap 0)
        return (float("nan"), float("nan"))
    means = _resampled_means(v, n_boot, seed, clusters)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0, clusters: np.ndarray | None = None) -> dict[str, float]:
    """Paired comparison of two models' per-case values on the same cases.

    Returns the mean difference ``a - b``, its bootstrap interval and a two-sided p-value
    (share of resampled mean differences on the other side of zero, doubled). ``clusters``:
    resample whole sessions / users, as :func:`bootstrap_ci`.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired values must have the same shape (same test cases)")
    d = a - b
    nan = float("nan")
    if d.size == 0:
        return {"mean_diff": nan, "ci_low": nan, "ci_high": nan, "p_value": nan}
    if n_boot < 1:  # --bootstrap 0: the difference without an interval or a p-value
        return {"mean_diff": float(d.mean()), "ci_low": nan, "ci_high": nan, "p_value": nan}
    means = _resampled_means(d, n_boot, seed, clusters)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return {"mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "p_value": float(min(1.0, p))}


# --------------------------------------------------------------------------- percentiles
def nearest_rank(n: int, q: float) -> int:
    """0-based position of the ``q``-th percentile (0-100) among ``n`` sorted values: the
    nearest rank ``round(q / 100 * (n - 1))``, so a percentile is always an observed value."""
    return min(n - 1, max(0, round(q / 100.0 * (n - 1))))


def percentiles(values: Sequence[float] | np.ndarray,
                qs: Sequence[float] = (50, 95, 99)) -> list[float | None]:
    """Exact percentiles (0-100) of ``values`` by :func:`nearest_rank`; None when empty.

    The online windows keep a log-bucket histogram instead of every latency
    (:class:`~stream_app.windows.latency_sketch.LatencyHistogram`: a window is written to the
    changelog every micro-batch, and a list of latencies would grow with its traffic); it
    uses the same :func:`nearest_rank` and returns that order statistic within its relative
    accuracy.
    """
    a = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if len(a) == 0:
        return [None for _ in qs]
    return [float(a[nearest_rank(len(a), q)]) for q in qs]
