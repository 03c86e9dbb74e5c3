"""How faithful an explanation method is, and what it costs: the deletion test.

    res = deletion_test(model, split.test.for_vocab(model.vocab)[0], n_cases=2000)
    res.share_top_beats_random, res.ci["share_top_beats_random"], res.ms_per_item

For each test case (its history, the last ``max_len`` events as the stream keeps them), the
model's top-1 item is explained (:func:`model_core.explain.explain`); then two copies of the
history are scored, one without the **top-attributed** event and one without a **random**
other event the model reads (drawn from a generator seeded by ``(seed, case index)``, so a
case gets the same draw in every run). A faithful method names the event whose removal
lowers the item's score most (Samek et al., IEEE TNNLS 2017, "Evaluating the visualization
of what a deep neural network has learned": deletion / region perturbation). Reported, with
clustered bootstrap 95% intervals (:func:`model_core.metrics.bootstrap_ci`, whole users or
sessions resampled: cases of one sequence are not independent):

* ``share_top_beats_random``: share of cases where removing the top-attributed event lowers
  the score strictly more than removing the random one (``share_tied``: equally);
* ``drop_top`` / ``drop_random``: mean score drop (the item's score before minus after; in
  the model's own score units, so compare them within a model, not across models);
* ``rank_drop_top`` / ``rank_drop_random``: mean number of places the item falls in the
  full ranking (conservative ties).

Only cases with at least two events in the model's window can compare two deletions; cases
whose explanation is empty (the item comes from popularity alone) are counted apart
(``n_unexplained``). For ``loo`` the top-attributed event is by definition the one whose
removal lowers the score most, so its share only falls below 1 through ties: the test then
checks the implementation, and the cost is the figure that matters.

Cost: wall milliseconds of one :func:`explain` call for the top item (``ms_per_item``) and
for the top ``k_cost`` items of the prediction (``ms_per_prediction``), beside the wall time
of scoring the row once (``ms_per_score``), all measured on the same cases in the same run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from model_core.explain import default_method, drop_event, explain, model_window
from model_core.metrics import bootstrap_ci, full_ranks
from model_core.predictor import SequenceBatch

__all__ = ["FaithfulnessResult", "deletion_test"]


@dataclass
class FaithfulnessResult:
    model: str
    method: str
    n_cases: int  # cases tried (at least two events in the window)
    n_unexplained: int  # cases whose top item got an empty explanation
    n_compared: int  # cases with both deletions scored
    share_top_beats_random: float
    share_tied: float
    drop_top: float
    drop_random: float
    rank_drop_top: float
    rank_drop_random: float
    ms_per_item: float  # median wall ms of explain() for the top item
    ms_per_prediction: float  # median wall ms of explain() for the top k_cost items
    ms_per_score: float  # median wall ms of scoring the row once
    k_cost: int
    mean_window: float  # mean number of events the model reads per compared case
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """As a dict for strict JSON: NaN (no case compared) becomes None."""
        def clean(v):
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        return clean(asdict(self))


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _stack(rows: list[SequenceBatch]) -> SequenceBatch:
    has_a = rows[0].actions is not None
    has_t = rows[0].timestamps_ms is not None
    return SequenceBatch(items=[r.items[0] for r in rows],
                         actions=[r.actions[0] for r in rows] if has_a else None,
                         timestamps_ms=[r.timestamps_ms[0] for r in rows] if has_t else None)


def deletion_test(model, cases, method: str | None = None, n_cases: int = 1000, seed: int = 0,
                  max_len: int = 50, k_cost: int = 10, n_boot: int = 1000) -> FaithfulnessResult:
    """Run the deletion test (module docstring) on up to ``n_cases`` seeded random cases of
    ``cases`` (a :class:`model_core.splits.TestCases` in the model's vocabulary) that have
    at least two events in the model's window."""
    method = method or default_method(model)
    order = np.random.default_rng(seed).permutation(len(cases))
    top_d, rnd_d, top_r, rnd_r, clusters, windows = [], [], [], [], [], []
    ms_item, ms_pred, ms_score = [], [], []
    tried = unexplained = 0
    for i in order:
        if tried >= n_cases:
            break
        batch = cases.batch([int(i)], max_len=max_len)
        window = model_window(model, batch)
        if len(window) < 2:
            continue
        tried += 1
        t0 = time.perf_counter()
        full = model.score(batch)
        ms_score.append(_ms(t0))
        top_k = np.argsort(-full[0, 1:], kind="stable")[:k_cost] + 1
        item = int(top_k[0])
        t0 = time.perf_counter()
        ex = explain(model, batch, [item], top_n=3, method=method)[0]
        ms_item.append(_ms(t0))
        t0 = time.perf_counter()
        explain(model, batch, top_k, top_n=3, method=method)
        ms_pred.append(_ms(t0))
        if not ex.contributions:
            unexplained += 1
            continue
        p_top = ex.contributions[0].position
        others = window[window != p_top]
        p_rnd = int(np.random.default_rng([seed, int(i)]).choice(others))
        both = model.score(_stack([drop_event(batch, p_top), drop_event(batch, p_rnd)]))
        sc = np.vstack([full, both]).astype(np.float64)
        sc[:, 0] = -np.inf
        ranks = full_ranks(sc, np.full(3, item))
        top_d.append(sc[0, item] - sc[1, item])
        rnd_d.append(sc[0, item] - sc[2, item])
        top_r.append(float(ranks[1] - ranks[0]))
        rnd_r.append(float(ranks[2] - ranks[0]))
        clusters.append(int(cases.rows[i]))
        windows.append(len(window))
    top_d, rnd_d = np.asarray(top_d), np.asarray(rnd_d)
    beats = (top_d > rnd_d).astype(np.float64)
    tied = (top_d == rnd_d).astype(np.float64)
    cl = np.asarray(clusters)
    per_case = {"share_top_beats_random": beats, "share_tied": tied, "drop_top": top_d,
                "drop_random": rnd_d, "rank_drop_top": np.asarray(top_r),
                "rank_drop_random": np.asarray(rnd_r)}
    ci = {k: bootstrap_ci(v, n_boot=n_boot, seed=seed, clusters=cl if len(cl) else None)
          for k, v in per_case.items()}

    def mean(v):
        return float(np.mean(v)) if len(v) else float("nan")

    def median(v):
        return float(np.median(v)) if len(v) else float("nan")

    return FaithfulnessResult(
        model=getattr(model, "name", type(model).__name__), method=method, n_cases=tried,
        n_unexplained=unexplained, n_compared=len(top_d),
        **{k: mean(v) for k, v in per_case.items()},
        ms_per_item=median(ms_item), ms_per_prediction=median(ms_pred),
        ms_per_score=median(ms_score), k_cost=int(k_cost), mean_window=mean(windows), ci=ci)
