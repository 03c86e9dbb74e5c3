"""Comparing several models at once: multiple-comparison control, effect sizes, honest
p-values, and the correction of sampled metrics.

- :func:`holm` and :func:`benjamini_hochberg` adjust the p-values of a family of comparisons
  (Holm 1979: controls the family-wise error; Benjamini & Hochberg 1995: the false discovery
  rate). Adjusted values are monotone in the raw ones and never above 1.
- :func:`paired_effect_size` — Cohen's d for paired cases (mean difference over the standard
  deviation of the differences), so a significant but tiny gain on 100,000 cases reads as tiny.
- :func:`p_value_text` — a bootstrap p-value of 0 only says no resample crossed zero: it is
  printed as the bound it is (``p < 0.002`` for 1,000 resamples), never as ``0.000``.
- :class:`SampledMetricCorrection` — metrics computed on ranks among ``m`` sampled negatives
  are biased and can order models differently than full ranking (Krichene & Rendle, "On
  Sampled Metrics for Item Recommendation", KDD 2020). Given the catalogue size, the
  correction finds, for each sampled rank ``r``, the value ``M~(r)`` whose expectation over
  the sampling best matches the full-ranking metric at every full rank (least squares with a
  variance penalty, in the manner of their bias-variance estimator), and the corrected metric is the mean of
  ``M~(r)`` over the cases. It is an estimate, for setting figures beside older papers that
  report sampled metrics; full ranking stays the figure seqstream reports.
- :func:`window_means` and :func:`paired_windows` — the sliding-window test of prequential
  runs (Vinagre, Jorge & Gama, "Evaluation of recommender systems in streaming
  environments", 2014; "Online evaluation of recommender systems: statistical significance",
  2015): the stream's scored events are cut into ``n_windows`` runs of consecutive events,
  each model's metric is averaged per window, and the two series are compared window by
  window (paired bootstrap over windows as cases, :func:`model_core.metrics.paired_bootstrap`,
  and how many windows each model won). Events of one window are not independent of each
  other, but windows far apart in time nearly are; the test says whether one model is ahead
  over the stream rather than on a few bursts. Used by ``evaluate --protocol prequential``
  (the series), ``compare --protocol prequential`` (the test) and the learner's frozen-vs-
  online comparison (:func:`model_core.learn.compare_learning`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from model_core.metrics import paired_bootstrap


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, p[i] * m / (rank + 1))
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def paired_effect_size(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d of paired per-case values ``a - b`` (0 when every difference is 0)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() == 0 else float(np.sign(d.mean()) * np.inf)
    return float(d.mean() / sd)


def p_value_text(p: float | None, n_resamples: int, family: int = 1) -> str:
    """``p = 0.031``, or the bound ``p < 0.002`` when no resample crossed zero.

    ``family``: the number of tests ``p`` was adjusted over (Holm or Bonferroni). An adjusted
    0 comes from raw p-values below ``2 / n_resamples``, which the adjustment multiplies by
    up to ``family``: its bound is ``min(1, family * 2 / n_resamples)``, so the printed
    bound is never tighter than what the resamples can show."""
    if p is None or p != p:  # nan, or None in a report's JSON (no resamples, no cases)
        return "p = n/a"
    if p <= 0.0:
        bound = min(1.0, max(1, family) * 2.0 / n_resamples)
        return f"p < {bound:.2g}" if bound < 1.0 else "p ≤ 1"
    return f"p = {p:.3g}"


class SampledMetricCorrection:
    """Corrected estimates of full-ranking metrics from ranks among sampled negatives.

    ``n_items``: the catalogue the full ranking would rank the target against (the target
    included); ``n_negatives``: ``m``, the negatives sampled uniformly without replacement per
    case; ``gamma``: the variance penalty (0 = least bias). ``metric(full_rank)`` is the
    per-case metric, e.g. ``lambda r: float(r <= 10)`` for HR@10.
    """

    def __init__(self, n_items: int, n_negatives: int, gamma: float = 0.01) -> None:
        if n_negatives < 1 or n_items <= n_negatives:
            raise ValueError("need 1 <= n_negatives < n_items")
        self.n_items, self.m, self.gamma = n_items, n_negatives, gamma
        from scipy.stats import binom

        full = np.arange(1, n_items + 1)  # full rank R of the target
        p_above = (full - 1) / (n_items - 1)  # chance a sampled negative ranks above it
        r = np.arange(n_negatives + 1)  # sampled rank - 1
        # P[R, r]: probability of sampled rank r + 1 given full rank R (binomial draws)
        self._p = binom.pmf(r[None, :], n_negatives, p_above[:, None])
        self._full = full

    def table(self, metric: Callable[[int], float]) -> np.ndarray:
        """``M~(r)`` for sampled ranks ``r = 1 .. m + 1`` (index ``r - 1``)."""
        target = np.array([metric(int(r)) for r in self._full], dtype=np.float64)
        p = self._p
        a = p.T @ p / len(target)
        a[np.diag_indices_from(a)] += self.gamma * p.mean(axis=0)
        rhs = p.T @ target / len(target)
        return np.linalg.lstsq(a, rhs, rcond=None)[0]

    def corrected(self, sampled_ranks: np.ndarray, metric: Callable[[int], float]) -> float:
        """The corrected mean of ``metric`` over cases with these sampled ranks (1-based)."""
        ranks = np.asarray(sampled_ranks, dtype=np.int64)
        if ranks.size == 0:
            return float("nan")
        if ranks.min() < 1 or ranks.max() > self.m + 1:
            raise ValueError(f"sampled ranks must lie in 1..{self.m + 1}")
        return float(self.table(metric)[ranks - 1].mean())


DEFAULT_WINDOWS = 20


def window_means(values: np.ndarray, n_windows: int = DEFAULT_WINDOWS) -> np.ndarray:
    """Means of ``values`` (per scored event, in stream order) over ``n_windows`` runs of
    consecutive events, as equal in size as can be (fewer windows when there are fewer
    events)."""
    v = np.asarray(values, dtype=np.float64)
    parts = [p for p in np.array_split(v, max(1, min(int(n_windows), len(v)))) if len(p)]
    return np.asarray([p.mean() for p in parts], dtype=np.float64)


def paired_windows(a: np.ndarray, b: np.ndarray, n_windows: int = DEFAULT_WINDOWS,
                   n_boot: int = 1000, seed: int = 0) -> dict:
    """The sliding-window paired test of ``a - b`` (per-event values of two runs over the
    same scored events, in stream order): ``mean_diff``, ``ci_low``, ``ci_high``,
    ``p_value`` of the paired bootstrap over windows, ``windows``, ``windows_a_better``,
    ``windows_b_better`` and both series (``a_windows``, ``b_windows``)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("the windowed test needs both runs' values on the same events")
    aw, bw = window_means(a, n_windows), window_means(b, n_windows)
    out: dict = paired_bootstrap(aw, bw, n_boot, seed=seed)
    out["windows"] = len(aw)
    out["windows_a_better"] = int((aw > bw).sum())
    out["windows_b_better"] = int((aw < bw).sum())
    out["a_windows"] = aw.tolist()
    out["b_windows"] = bw.tolist()
    return out
