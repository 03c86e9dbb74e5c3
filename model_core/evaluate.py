"""Offline evaluation of a :class:`~model_core.predictor.Recommender` on test cases.

    result = evaluate(model, split.test)            # full ranking, conservative ties
    result.metrics["hr@10"], result.ci["hr@10"]     # mean and 95 % bootstrap interval

Protocol (all maths in :mod:`model_core.metrics`):

- **Full ranking** by default: ``model.score(batch)`` gives a score to every catalogue item;
  the target's rank counts the items scored above it, plus tied items as the tie policy says
  (``conservative``: every tie ranks above the target, GRU4Rec's official choice).
- ``exclude_history=True`` sets the scores of all the case's history items to ``-inf`` before
  ranking. What is masked never depends on the target: a case whose target is one of its
  history items (a repeat) cannot be ranked under this option, so it is a miss (rank
  :data:`MISS`) and counted in ``n_target_in_history`` (sparing the target instead would mask
  every candidate but the answer among the history items, which lifts the figures).
- ``sampled=("uniform" | "popularity", n)``: *additionally* ranks the target among ``n``
  negatives drawn per case without replacement (never the target; never history items when
  history is excluded). Reported under ``result.sampled`` beside the full-ranking figures,
  which stay the headline (sampled metrics can mis-rank models: Krichene & Rendle 2020).
- Every given case counts: a case whose target the model's vocabulary does not know is a
  miss (rank :data:`MISS`, every metric 0; counted in ``n_unknown_as_miss``), as published
  leave-one-out figures average over all users and a model that never saw an item cannot
  recommend it. ``unknown_targets="skip"`` leaves such cases out instead, counted in
  ``n_skipped_unknown``; ``case_index`` says which of the given cases were evaluated, so two
  models are compared on the cases both evaluated (:func:`paired_comparison`). Next-action
  figures cover the ranked cases only.
- Next action: when the model returns ``action_probs``, accuracy, per-class P/R/F1 and
  macro-F1 of the arg-max, beside a majority-class baseline (the most frequent training action
  when given, else the most frequent action in the cases' histories — never the targets).
- Coverage: distinct items in the top-``max(ks)`` lists over all cases / catalogue size.
- Beyond accuracy (:func:`list_metrics`, :mod:`model_core.beyond`): novelty, ARP, long-tail
  share and exposure Gini of the top-K lists at every K, ``ild@K`` where items have
  categories (:func:`item_category_table`); the repeat/new split and per-segment HR/NDCG with
  intervals (:mod:`model_core.segments`) in ``extra``; for the prequential protocol the
  metrics per window of consecutive events (``extra["windows"]``).
- Confidence intervals and paired tests are **clustered** bootstraps: the cases of one
  sequence (a user's under ``loo`` / ``temporal``, a session's under ``session``, a user's
  events in ``prequential``) are resampled together (``result.clusters`` labels each case),
  because they are not independent; ``cluster=False`` resamples single cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from model_core.metrics import (
    MISS,
    Coverage,
    bootstrap_ci,
    case_matrix,
    classification_report,
    full_ranks,
    metric_names,
    paired_bootstrap,
)
from model_core.predictor import Recommender, SequenceBatch
from model_core.splits import TestCase, TestCases
from model_core.vocab import UNKNOWN
from schemas.actions import ACTIONS, N_ACTIONS

SAMPLING_MODES = ("uniform", "popularity")
UNKNOWN_TARGETS = ("skip", "miss")
DEFAULT_KS = (1, 5, 10, 20)


@dataclass
class EvaluationResult:
    model: str
    n_cases: int  # cases evaluated
    ks: tuple[int, ...]
    ties: str
    exclude_history: bool
    metrics: dict[str, float]  # "hr@10", "ndcg@10", "mrr@20", ...
    ci: dict[str, tuple[float, float]]  # same keys -> 95 % bootstrap interval
    per_case: dict[str, np.ndarray]  # same keys -> per-case values (for paired tests)
    ranks: np.ndarray  # [n_cases] 1-based full-catalogue ranks
    case_index: np.ndarray  # [n_cases] positions of the evaluated cases in the input
    coverage: float
    n_skipped_unknown: int = 0
    n_unknown_as_miss: int = 0  # cases kept as misses because the model cannot rank the target
    n_target_in_history: int = 0  # exclude_history: misses because the target was masked
    clusters: np.ndarray | None = None  # [n_cases] sequence (user / session) of each case
    protocol: str | None = None
    sampled: dict[str, Any] | None = None  # {"mode", "n", "metrics", "ci"}
    action: dict[str, Any] | None = None  # classification report of the next-action head
    action_baseline: dict[str, Any] | None = None  # majority class: {"class", report...}
    extra: dict[str, Any] = field(default_factory=dict)
    #: what the result cost (:func:`model_core.cost.cost_record`): training / evaluation
    #: time, peak memory, events/s; set by the command that trained and evaluated
    cost: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-case arrays)."""
        out: dict[str, Any] = {
            "model": self.model, "protocol": self.protocol, "n_test_cases": self.n_cases,
            "n_skipped_unknown_target": self.n_skipped_unknown,
            "n_unknown_target_as_miss": self.n_unknown_as_miss,
            "n_target_in_history": self.n_target_in_history, "ks": list(self.ks),
            "ties": self.ties, "exclude_history": self.exclude_history,
            "metrics": _clean(self.metrics), "ci": {k: _clean(list(v)) for k, v in self.ci.items()},
            "coverage": _clean(self.coverage),
        }
        if self.sampled is not None:
            out["sampled"] = {"mode": self.sampled["mode"], "n": self.sampled["n"],
                              "metrics": _clean(self.sampled["metrics"]),
                              "ci": {k: _clean(list(v)) for k, v in self.sampled["ci"].items()}}
            if "corrected" in self.sampled:
                out["sampled"]["corrected"] = _clean(self.sampled["corrected"])
        if self.action is not None:
            out["action"] = _clean(self.action)
        if self.action_baseline is not None:
            out["action_baseline"] = _clean(self.action_baseline)
        if self.extra:
            out["extra"] = _clean(self.extra)
        if self.cost is not None:
            out["cost"] = _clean(self.cost)
        return out


def _clean(v: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


# --------------------------------------------------------------------------- case access
class _CaseView:
    """Uniform access to :class:`TestCases` or a sequence of :class:`TestCase`."""

    def __init__(self, cases: TestCases | Sequence[TestCase], model: Recommender) -> None:
        if isinstance(cases, TestCases):
            self.all_clusters = np.asarray(cases.rows, dtype=np.int64)
            known = _known_mask(cases, model)
            self.index = np.flatnonzero(known)
            self.n_skipped = int((~known).sum())
            enc, _ = cases.subset(self.index).for_vocab(model.vocab)
            self._cases: TestCases | list[TestCase] = enc
            self.targets = enc.target_item.astype(np.int64)
            self.target_actions = enc.target_action.astype(np.int64)
        else:
            lst = list(cases)
            self.all_clusters = np.asarray([c.user_id for c in lst])
            tg = np.asarray([c.target_item for c in lst], dtype=np.int64)
            known = (tg != UNKNOWN) & (tg < len(model.vocab))
            self.index = np.flatnonzero(known)
            self.n_skipped = int((~known).sum())
            self._cases = [lst[i] for i in self.index]
            self.targets = tg[self.index]
            self.target_actions = np.asarray([c.target_action for c in self._cases],
                                             dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, s: int, e: int, max_len: int | None) -> SequenceBatch:
        if isinstance(self._cases, TestCases):
            return self._cases.batch(range(s, e), max_len=max_len)
        sub = self._cases[s:e]
        cut = (lambda a: a) if max_len is None else (lambda a: a[-max_len:] if max_len else a[:0])
        return SequenceBatch(items=[cut(np.asarray(c.history_items, dtype=np.int32)) for c in sub],
                             actions=[cut(np.asarray(c.history_actions, dtype=np.uint8))
                                      for c in sub],
                             timestamps_ms=[cut(np.asarray(c.history_ts, dtype=np.int64))
                                            for c in sub])

    def history_items(self, s: int, e: int) -> list[np.ndarray]:
        """Full histories (not truncated): what exclusion removes."""
        if isinstance(self._cases, TestCases):
            return self._cases.batch(range(s, e)).items
        return [np.asarray(c.history_items) for c in self._cases[s:e]]

    def history_actions_all(self) -> np.ndarray:
        if isinstance(self._cases, TestCases):
            b = self._cases.batch(range(len(self)))
            parts = b.actions or []
        else:
            parts = [np.asarray(c.history_actions) for c in self._cases]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _known_mask(cases: TestCases, model: Recommender) -> np.ndarray:
    if cases.vocab is model.vocab or cases.vocab.fingerprint() == model.vocab.fingerprint():
        known_by_idx = np.ones(len(cases.vocab), dtype=bool)
    else:
        lut = model.vocab.indices(cases.vocab.item_id(i) for i in range(len(cases.vocab)))
        known_by_idx = lut != UNKNOWN
    known_by_idx[UNKNOWN] = False
    return known_by_idx[cases.target_item]


# --------------------------------------------------------------------------- helpers
def _action_probs(model: Recommender, batch: SequenceBatch) -> np.ndarray | None:
    fn = getattr(model, "action_probs", None)
    if callable(fn):
        return fn(batch)
    return model.predict_topk(batch, 1).action_probs


def _exclude(scores: np.ndarray, histories: list[np.ndarray]) -> None:
    """Mask every history item of each row (never looks at the target)."""
    for b, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)
        h = h[(h > 0) & (h < scores.shape[1])]
        scores[b, h] = -np.inf


def _target_in_history(histories: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """[B] bool: the case's target is one of its history items."""
    return np.fromiter((bool(np.any(np.asarray(h) == t)) for h, t in zip(histories, targets,
                                                                        strict=True)),
                       dtype=bool, count=len(targets))


def _sample_negatives(rng: np.random.Generator, cdf: np.ndarray | None, n_items_cols: int,
                      forbid: list[np.ndarray], n: int) -> np.ndarray:
    """[B, n] distinct negatives per row, drawn without replacement proportionally to the
    sampling weights (``cdf``: their normalised cumulative sum; uniform over ``1..V-1`` when
    None), never a ``forbid`` item. Entries are -1 where a row has fewer allowed items.

    Large catalogues: draw with replacement and keep first occurrences (successive sampling,
    which is exactly sampling without replacement). Small ones: Gumbel top-k over all items.
    """
    b = len(forbid)
    out = np.full((b, n), -1, dtype=np.int64)
    longest = max((len(f) for f in forbid), default=0)
    if n_items_cols > 4 * (n + longest) + 64:
        m = 2 * n + 16
        for r, f in enumerate(forbid):
            got: list[int] = []
            seen = set(int(x) for x in f)
            seen.add(UNKNOWN)
            for _ in range(64):
                if cdf is None:
                    cand = rng.integers(1, n_items_cols, m)
                else:
                    cand = np.searchsorted(cdf, rng.random(m), side="right")
                for c in cand.tolist():
                    if c not in seen and c < n_items_cols:
                        seen.add(c)
                        got.append(c)
                        if len(got) == n:
                            break
                if len(got) == n:
                    break
            out[r, : len(got)] = got
        return out
    keys = rng.gumbel(size=(b, n_items_cols))
    if cdf is not None:
        w = np.diff(np.concatenate([[0.0], cdf]))[:n_items_cols]
        with np.errstate(divide="ignore"):
            keys += np.log(w)[None, :]
    keys[:, UNKNOWN] = -np.inf
    for r, f in enumerate(forbid):
        keys[r, f] = -np.inf
    n_eff = min(n, n_items_cols - 1)
    part = np.argpartition(-keys, n_eff - 1, axis=1)[:, :n_eff]
    ok = np.take_along_axis(keys, part, axis=1) > -np.inf
    out[:, :n_eff] = np.where(ok, part, -1)
    return out


def _sampled_ranks(scores: np.ndarray, targets: np.ndarray, neg: np.ndarray, ties: str) -> np.ndarray:
    rows = np.arange(len(targets))
    t = scores[rows, targets][:, None]
    valid = neg >= 0
    ns = np.where(valid, np.take_along_axis(scores, np.maximum(neg, 0), axis=1), -np.inf)
    above = ((ns > t) & valid).sum(axis=1)
    equal = ((ns == t) & valid).sum(axis=1)
    if ties == "optimistic":
        return above + 1.0
    if ties == "average":
        return above + equal / 2.0 + 1.0
    return above + equal + 1.0


def _check_unknown_targets(unknown_targets: str) -> None:
    if unknown_targets not in UNKNOWN_TARGETS:
        raise ValueError(f"unknown_targets must be one of {', '.join(UNKNOWN_TARGETS)}, "
                         f"got {unknown_targets!r}")


def _cis(per_case: dict[str, np.ndarray], n_boot: int, seed: int,
         clusters: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    if n_boot <= 0:
        return {k: (float("nan"), float("nan")) for k in per_case}
    return {k: bootstrap_ci(v, n_boot=n_boot, seed=seed, clusters=clusters)
            for k, v in per_case.items()}


# --------------------------------------------------------------------------- evaluate
def evaluate(model: Recommender, cases: TestCases | Sequence[TestCase],
             ks: Sequence[int] = DEFAULT_KS, ties: str = "conservative",
             exclude_history: bool = False,
             sampled: tuple[str, int] | None = None, n_boot: int = 1000, *,
             batch_size: int = 256, max_len: int | None = None, seed: int = 0,
             item_counts: np.ndarray | None = None, majority_action: int | None = None,
             protocol: str | None = None, unknown_targets: str = "miss",
             cluster: bool = True,
             item_categories: np.ndarray | None = None) -> EvaluationResult:
    """Evaluate ``model`` on ``cases`` (see the module docstring).

    ``max_len``: histories are cut to their last ``max_len`` events before scoring (exclusion
    still uses the whole history). ``item_counts`` [len(model.vocab)]: training counts for
    popularity-sampled negatives and the popularity metrics (default: the model's
    ``item_counts`` if it has them). ``item_categories`` [len(model.vocab)]: each item's
    category as an integer, -1 for none (:func:`item_category_table`): with it the metrics
    hold ``ild@K``. ``cluster``: bootstrap by sequence (user / session), else by case.
    """
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise ValueError(f"cut-offs must be positive integers, got {ks}")
    _check_unknown_targets(unknown_targets)
    cdf = None
    if sampled is not None:
        mode, n_neg = sampled
        if mode not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")
        if int(n_neg) < 1:
            raise ValueError("the number of sampled negatives must be >= 1")
        if mode == "popularity":
            counts = item_counts if item_counts is not None else getattr(model, "item_counts", None)
            if counts is None:
                raise ValueError("popularity sampling needs item_counts (training counts per "
                                 "vocabulary index)")
            c = np.asarray(counts, dtype=np.float64)[: len(model.vocab)].copy()
            c[UNKNOWN] = 0.0
            if c.sum() <= 0:
                raise ValueError("popularity sampling needs some positive item_counts")
            cdf = np.cumsum(c) / c.sum()
    view = _CaseView(cases, model)
    n = len(view)
    k_max = ks[-1]
    ranks = np.empty(n, dtype=np.float64)
    s_ranks = np.empty(n, dtype=np.float64) if sampled is not None else None
    recommended = Coverage(model.vocab.n_items)
    probs_all: list[np.ndarray] = []
    has_actions: bool | None = None
    rng = np.random.default_rng(seed)
    n_in_hist = 0
    tops: list[np.ndarray] = []  # [n, kk] top items (0 where fewer than kk could be ranked)
    hist_len = np.zeros(n, dtype=np.int64)
    repeat = np.zeros(n, dtype=bool)  # the target is already in the case's history
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        batch = view.batch(s, e, max_len)
        tg = view.targets[s:e]
        scores = np.array(model.score(batch), dtype=np.float32, copy=True)
        scores[:, UNKNOWN] = -np.inf
        hist = view.history_items(s, e)
        hist_len[s:e] = [len(h) for h in hist]
        repeat[s:e] = _target_in_history(hist, tg)
        masked = np.zeros(e - s, dtype=bool)
        if exclude_history:
            _exclude(scores, hist)
            masked = repeat[s:e]
            n_in_hist += int(masked.sum())
        ranks[s:e] = np.where(masked, float(MISS), full_ranks(scores, tg, ties))
        kk = min(k_max, scores.shape[1] - 1)
        # top-kk for coverage (torch.topk on a shared-memory view: far faster than a
        # numpy argpartition over the whole catalogue)
        vals, top_t = torch.topk(torch.from_numpy(scores), kk, dim=1)
        top = top_t.numpy()
        top_ok = vals.numpy() > -np.inf
        recommended.update(top[top_ok])
        tops.append(np.where(top_ok, top, 0))
        if sampled is not None:
            forbid = []
            for r, h in enumerate(hist):
                f = [tg[r]]
                if exclude_history:
                    f.extend(np.asarray(h, dtype=np.int64)[np.asarray(h) > 0].tolist())
                forbid.append(np.asarray(f, dtype=np.int64))
            neg = _sample_negatives(rng, cdf, scores.shape[1], forbid, int(sampled[1]))
            s_ranks[s:e] = np.where(masked, float(MISS), _sampled_ranks(scores, tg, neg, ties))
        if has_actions is not False:
            p = _action_probs(model, batch)
            has_actions = p is not None
            if p is not None:
                probs_all.append(np.asarray(p))
    n_ranked, case_index, n_skipped, n_missed = n, view.index, view.n_skipped, 0
    if unknown_targets == "miss" and view.n_skipped:
        # every given case counts; the ones the model cannot rank are misses (rank MISS)
        n_total = n + view.n_skipped
        full = np.full(n_total, float(MISS))
        full[view.index] = ranks
        ranks = full
        if s_ranks is not None:
            s_full = np.full(n_total, float(MISS))
            s_full[view.index] = s_ranks
            s_ranks = s_full
        n, case_index, n_skipped, n_missed = n_total, np.arange(n_total), 0, view.n_skipped
    clusters = view.all_clusters[case_index] if cluster else None
    ranked_clusters = view.all_clusters[view.index] if cluster else None
    per_case = case_matrix(ranks, ks)
    names = metric_names(ks)
    per_case = {k: per_case[k] for k in names}
    metrics = {k: float(v.mean()) if n else float("nan") for k, v in per_case.items()}
    result = EvaluationResult(
        model=getattr(model, "name", type(model).__name__), n_cases=n, ks=ks, ties=ties,
        exclude_history=exclude_history, metrics=metrics,
        ci=_cis(per_case, n_boot, seed, clusters), per_case=per_case, ranks=ranks,
        case_index=case_index, clusters=clusters,
        coverage=recommended.result(),
        n_skipped_unknown=n_skipped, n_unknown_as_miss=n_missed,
        n_target_in_history=n_in_hist, protocol=protocol,
    )
    _beyond(result, model, tops, item_counts, hist_len, repeat, view, n_ranked, n_boot, seed,
            ranked_clusters, item_categories)
    if s_ranks is not None:
        sp = case_matrix(s_ranks, ks)
        sp = {k: sp[k] for k in names}
        result.sampled = {"mode": sampled[0], "n": int(sampled[1]),
                          "metrics": {k: float(v.mean()) if n else float("nan")
                                      for k, v in sp.items()},
                          "ci": _cis(sp, n_boot, seed, clusters), "per_case": sp,
                          "ranks": s_ranks}
        if sampled[0] == "uniform" and n and model.vocab.n_items > int(sampled[1]):
            result.sampled["corrected"] = _corrected(s_ranks, ks, model.vocab.n_items,
                                                     int(sampled[1]))
    if n_ranked:
        y_true = view.target_actions
        if probs_all:
            y_pred = np.argmax(np.concatenate(probs_all), axis=1)
            result.action = classification_report(y_true, y_pred, N_ACTIONS, ACTIONS)
            if n_missed == 0:  # per-case arrays stay aligned with the ranked cases
                result.per_case["action_acc"] = (y_pred == y_true).astype(np.float64)
            acc_cases = (y_pred == y_true).astype(np.float64)
            result.action["accuracy_ci"] = list(_cis({"a": acc_cases}, n_boot, seed,
                                                     ranked_clusters)["a"])
        if majority_action is None:
            ha = view.history_actions_all()
            majority_action = int(np.bincount(ha, minlength=N_ACTIONS).argmax()) if len(ha) else 0
        base = classification_report(y_true, np.full(n_ranked, majority_action), N_ACTIONS,
                                     ACTIONS)
        result.action_baseline = {"class": ACTIONS[majority_action], **base}
    return result


def _corrected(s_ranks: np.ndarray, ks: Sequence[int], n_items: int,
               n_neg: int) -> dict[str, float]:
    """HR@K and NDCG@K estimated from uniformly sampled ranks for the full catalogue
    (:class:`model_core.significance.SampledMetricCorrection`); misses stay misses."""
    from model_core.significance import SampledMetricCorrection

    corr = SampledMetricCorrection(n_items, n_neg)
    ranked = np.ceil(s_ranks[(s_ranks >= 1) & (s_ranks <= n_neg + 1)]).astype(np.int64)
    share = len(ranked) / len(s_ranks)
    out = {}
    for k in ks:
        out[f"hr@{k}"] = share * corr.corrected(ranked, lambda r, k=k: float(r <= k))
        out[f"ndcg@{k}"] = share * corr.corrected(
            ranked, lambda r, k=k: 1.0 / math.log2(r + 1) if r <= k else 0.0)
    return out


def _beyond(result: EvaluationResult, model: Recommender, tops: list[np.ndarray],
            item_counts: np.ndarray | None, hist_len: np.ndarray, repeat: np.ndarray,
            view: _CaseView, n_ranked: int, n_boot: int, seed: int,
            clusters: np.ndarray | None, item_categories: np.ndarray | None = None) -> None:
    """Beyond-accuracy figures of the ranked cases' lists into ``result.metrics``
    (:func:`list_metrics`), the repeat/new split of HR@K (largest K) into
    ``result.extra["repeat"]`` and per-segment HR/NDCG at the largest K (history length,
    target popularity, target action) into ``result.extra["segments"]``."""
    if not n_ranked or not tops:
        return
    from model_core.beyond import repeat_split
    from model_core.segments import history_bucket, popularity_bucket, segment_report

    c = list_metrics(result, model, np.concatenate(tops), item_counts, item_categories)
    k = result.ks[-1]
    ranked = view.index if result.n_cases != n_ranked else np.arange(n_ranked)
    hits = result.per_case[f"hr@{k}"][ranked] if len(result.per_case[f"hr@{k}"]) != n_ranked \
        else result.per_case[f"hr@{k}"]
    ndcg = result.per_case[f"ndcg@{k}"]
    ndcg = ndcg[ranked] if len(ndcg) != n_ranked else ndcg
    result.extra["repeat"] = {"k": k, **repeat_split(hits, repeat)}
    labels = {"history": history_bucket(hist_len),
              "action": [ACTIONS[a] if 0 <= a < N_ACTIONS else "?" for a in view.target_actions]}
    if c is not None:
        labels["popularity"] = popularity_bucket(view.targets, c)
    result.extra["segments"] = {"k": k, "ranked_cases": n_ranked, **segment_report(
        {f"hr@{k}": hits, f"ndcg@{k}": ndcg}, labels, n_boot=min(n_boot, 200), seed=seed,
        clusters=clusters)}


def _vocab_table(values, n: int, fill: float, dtype) -> np.ndarray:
    """``values`` cut or padded (with ``fill``) to ``n`` entries."""
    out = np.full(n, fill, dtype=dtype)
    given = np.asarray(values, dtype=dtype)[:n]
    out[: len(given)] = given
    return out


def list_metrics(result: EvaluationResult, model: Recommender, top: np.ndarray,
                 item_counts: np.ndarray | None,
                 item_categories: np.ndarray | None) -> np.ndarray | None:
    """The top-K lists' beyond-accuracy figures into ``result.metrics`` at every K
    (:func:`model_core.beyond.beyond_accuracy`): novelty, ARP and APLT need training counts
    (``item_counts``, else the model's); exposure Gini is always there; ``ild@K`` where
    items have categories. Returns the training counts used (None without)."""
    from model_core.beyond import beyond_accuracy, exposure_gini, intra_list_diversity

    n = len(model.vocab)
    counts = item_counts if item_counts is not None else getattr(model, "item_counts", None)
    c = None
    if counts is not None:
        c = _vocab_table(counts, n, 0.0, np.float64)
        c[UNKNOWN] = 0.0
    cats = (None if item_categories is None
            else _vocab_table(item_categories, n, -1, np.int64))
    if c is not None:
        result.metrics.update(beyond_accuracy(top, c, result.ks, categories=cats))
        return c
    for k in result.ks:
        result.metrics[f"gini@{k}"] = exposure_gini(top, model.vocab.n_items, k)
        if cats is not None:
            result.metrics[f"ild@{k}"] = intra_list_diversity(top, cats, k)
    return None


def item_category_table(model: Recommender, categories: dict[str, str]) -> np.ndarray | None:
    """``[len(model.vocab)]`` integer category of each vocabulary item (-1: none), from
    ``{item_id: category_id}`` (what the readers put in ``Event.category_id``); None when
    no item of the vocabulary has a category."""
    if not categories:
        return None
    codes: dict[str, int] = {}
    out = np.full(len(model.vocab), -1, dtype=np.int64)
    for i in range(1, len(model.vocab)):
        cat = categories.get(model.vocab.item_id(i))
        if cat is not None:
            out[i] = codes.setdefault(cat, len(codes))
    return out if codes else None


# --------------------------------------------------------------------------- comparison
def paired_comparison(a: EvaluationResult, b: EvaluationResult, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, dict[str, float]]:
    """Paired bootstrap of ``a - b`` per metric over the cases both results evaluated,
    clustered by ``a.clusters`` when it has them (both evaluated the same cases), with the
    paired effect size (:func:`model_core.significance.paired_effect_size`)."""
    from model_core.significance import paired_effect_size

    common, ia, ib = np.intersect1d(a.case_index, b.case_index, return_indices=True)
    out: dict[str, dict[str, float]] = {}
    if len(common) == 0:
        return out
    clusters = a.clusters[ia] if a.clusters is not None else None
    for name in a.per_case:
        if name not in b.per_case:
            continue
        d = paired_bootstrap(a.per_case[name][ia], b.per_case[name][ib], n_boot=n_boot,
                             seed=seed, clusters=clusters)
        d["a"] = float(a.per_case[name][ia].mean())
        d["b"] = float(b.per_case[name][ib].mean())
        d["n"] = int(len(common))
        d["effect_size"] = paired_effect_size(a.per_case[name][ia], b.per_case[name][ib])
        out[name] = d
    return out


__all__ = ["DEFAULT_KS", "SAMPLING_MODES", "UNKNOWN_TARGETS", "EvaluationResult", "evaluate",
           "item_category_table", "list_metrics", "paired_comparison"]


# --------------------------------------------------------------------------- prequential
def evaluate_prequential(model: Recommender, events: Sequence, warm_events: Sequence = (),
                         ks: Sequence[int] = DEFAULT_KS, exclude_history: bool = False,
                         max_len: int = 50, batch_size: int = 1000, n_boot: int = 1000,
                         seed: int = 0, unknown_targets: str = "miss",
                         cluster: bool = True, item_counts: np.ndarray | None = None,
                         item_categories: np.ndarray | None = None,
                         n_windows: int | None = None) -> EvaluationResult:
    """Test-then-learn over ``events`` with the stream's own engine
    (:class:`model_core.prequential.PrequentialEngine`).

    ``warm_events`` (e.g. the training period) are first appended to the users' sequences
    without scoring, as a stream that had been running would hold them (only each user's last
    warm event is predicted from, so the first evaluated event has a prediction). Each
    event of ``events`` is then scored against the top-``max(ks)`` list predicted after the
    user's previous event (rank = position in that list; beyond it, or an item unknown to the
    model, is a miss); events with no previous prediction are not scored. Ties follow the
    order of the model's top-K (``ties="topk"``), as online. Events whose item the model does
    not know are counted (``n_unknown_as_miss``); ``unknown_targets="skip"`` leaves them out
    of the figures instead (``n_skipped_unknown``).

    Beyond accuracy: the top-K list predicted after every event (not after a duplicate of
    an event, as the online windows count them) gives the list metrics (:func:`list_metrics`; ``item_counts``: training counts, e.g. of the
    warm events; ``item_categories`` as in :func:`evaluate`). ``extra["windows"]``: every
    metric at the largest K per window of consecutive scored events
    (:func:`model_core.significance.window_means`, ``n_windows`` of them, 20 by default),
    the series the sliding-window test of ``compare --protocol prequential`` pairs.
    ``extra["segments"]``: HR/NDCG at the largest K by the user's events before the scored
    one (warm events included), the item's training popularity and the event's action.
    """
    from collections import Counter

    from model_core.metrics import RankingAccumulator
    from model_core.prequential import PrequentialEngine, PrequentialSummary, warm_states
    from model_core.sequence_state import UserState
    from model_core.significance import DEFAULT_WINDOWS, window_means

    ks = tuple(sorted(set(int(k) for k in ks)))
    _check_unknown_targets(unknown_targets)
    engine = PrequentialEngine(model, max_len=max_len, k=ks[-1], exclude_history=exclude_history)
    states: dict[str, UserState] = {}
    warm_states(engine, states, warm_events, batch_size)
    index = model.vocab.index
    summary = PrequentialSummary(ranking=RankingAccumulator(ks))
    events = list(events)
    recommended = Coverage(model.vocab.n_items)
    unknown: list[bool] = []  # per scored event: its item is unknown to the model
    users: list[str] = []  # per scored event: its user (the bootstrap's cluster)
    tops: list[np.ndarray] = []  # per new event: the top-K list predicted after it
    seen = Counter(e.user_id for e in warm_events)  # events per user so far
    seg_hist: list[int] = []  # per scored event: its user's events before it
    seg_item: list[int] = []  # per scored event: its item's index (UNKNOWN if unknown)
    seg_action: list[int] = []  # per scored event: its action
    for s in range(0, len(events), batch_size):
        chunk = events[s:s + batch_size]
        res = engine.process(chunk, states)
        summary.add(res)
        summary.n_events += len(chunk)
        unknown.extend(index(chunk[sc.index].item_id) == UNKNOWN for sc in res.scores)
        users.extend(chunk[sc.index].user_id for sc in res.scores)
        before = []  # per event of the chunk: the user's events before it
        for e in chunk:
            before.append(seen[e.user_id])
            seen[e.user_id] += 1
        for sc in res.scores:
            ev = chunk[sc.index]
            seg_hist.append(before[sc.index])
            seg_item.append(int(index(ev.item_id)))
            seg_action.append(sc.action_true)
        recommended.update(res.topk.items)
        new_rows = np.setdiff1d(np.arange(len(res.topk.items)), res.duplicates)
        tops.append(np.asarray(res.topk.items, dtype=np.int64)[new_rows])
    ranks = np.asarray(summary.ranks, dtype=np.float64)
    is_unknown = np.asarray(unknown, dtype=bool)
    case_index = np.arange(len(ranks))
    n_skipped = n_missed = 0
    if unknown_targets == "skip":
        case_index = np.flatnonzero(~is_unknown)
        ranks, n_skipped = ranks[case_index], int(is_unknown.sum())
    else:
        n_missed = int(is_unknown.sum())
    names = metric_names(ks)
    pc = case_matrix(ranks, ks)
    per_case = {k: pc[k] for k in names}
    n = len(ranks)
    clusters = np.asarray(users)[case_index] if cluster else None
    result = EvaluationResult(
        model=getattr(model, "name", type(model).__name__), n_cases=n, ks=ks, ties="topk",
        exclude_history=exclude_history,
        metrics={k: float(v.mean()) if n else float("nan") for k, v in per_case.items()},
        ci=_cis(per_case, n_boot, seed, clusters), per_case=per_case, ranks=ranks,
        case_index=case_index, clusters=clusters,
        coverage=recommended.result(),
        n_skipped_unknown=n_skipped, n_unknown_as_miss=n_missed, protocol="prequential",
        extra={"events": summary.n_events, "scored": summary.n_scored,
               "warm_events": len(warm_events)},
    )
    counts = None
    if tops and sum(len(t) for t in tops):
        counts = list_metrics(result, model, np.concatenate(tops), item_counts,
                              item_categories)
    if n:
        _prequential_segments(result, case_index, seg_hist, seg_item, seg_action, counts,
                              n_boot, seed)
    if n:
        kmax = f"@{ks[-1]}"
        nw = DEFAULT_WINDOWS if n_windows is None else n_windows
        series = {name: window_means(v, nw).tolist() for name, v in per_case.items()
                  if name.endswith(kmax)}
        result.extra["windows"] = {"n": len(next(iter(series.values()))),
                                   "scored_per_window": n / min(nw, n), **series}
    rep = summary.action_report()
    if rep is not None:
        result.action = rep
    return result


__all__ += ["evaluate_prequential"]


def _prequential_segments(result: EvaluationResult, case_index: np.ndarray, hist: list[int],
                          items: list[int], actions: list[int], counts: np.ndarray | None,
                          n_boot: int, seed: int) -> None:
    """Per-segment HR/NDCG at the largest K of a prequential run (as :func:`_beyond` for the
    offline protocols): the user's events before the scored one (warm events included), the
    item's training popularity (with training counts) and the event's action."""
    from model_core.segments import history_bucket, popularity_bucket, segment_report

    k = result.ks[-1]
    pick = np.asarray(case_index, dtype=np.int64)
    labels = {"history": history_bucket(np.asarray(hist, dtype=np.int64)[pick]),
              "action": [ACTIONS[a] if 0 <= a < N_ACTIONS else "?"
                         for a in np.asarray(actions, dtype=np.int64)[pick]]}
    if counts is not None:
        labels["popularity"] = popularity_bucket(np.asarray(items, dtype=np.int64)[pick],
                                                 counts)
    result.extra["segments"] = {"k": k, "ranked_cases": len(pick), **segment_report(
        {f"hr@{k}": result.per_case[f"hr@{k}"], f"ndcg@{k}": result.per_case[f"ndcg@{k}"]},
        labels, n_boot=min(n_boot, 200), seed=seed, clusters=result.clusters)}
