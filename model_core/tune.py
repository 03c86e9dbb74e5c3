"""Hyper-parameter search on the validation part: Optuna's TPE sampler with pruning.

    result = tune(split, TuneConfig("gru4rec", minutes=20, storage="runs/t/study.sqlite3"))
    result.best_values, result.best_valid, result.model   # the chosen configuration, refitted

What is searched: every hyper-parameter the model declares with a ``search`` range
(:mod:`model_core.hparams`) that the user did not fix; everything else is what ``train``
would use (:mod:`model_core.defaults`: the data-shape recipe, or the given flags). The first
trial of a new study is that default configuration itself, so the search reports the
defaults' validation score and anything it keeps is at least as good on validation.

Each trial is :func:`model_core.fit.fit` without the refit: trained on ``split.fit_events``,
scored every epoch on ``split.valid`` (NDCG@10, the trainer's early-stopping metric), each
epoch's score reported to Optuna, which prunes a trial whose score falls below the median of
the earlier trials at the same epoch (``MedianPruner``). The test part is never looked at
here: the caller evaluates the returned model once.

Time: ``minutes`` is the budget of the whole call. Trials start until ``SEARCH_SHARE`` of it
has passed, each with a time limit of what is left of that share; then the best
configuration is trained once more as ``train`` would (fit, then refit on all training
events for temporal and session splits).

Resuming: with ``storage`` (an SQLite file) the study is kept there; calling again with the
same file continues it (earlier trials count for the sampler, the pruner and the choice).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from model_core.fit import FitConfig, FitResult, fit, sequences_by
from model_core.hparams import HParam, hparams_of
from model_core.splits import Split
from model_core.train import sequences_from_events

__all__ = ["METRIC", "SEARCH_SHARE", "TuneConfig", "TuneResult", "search_space", "trial_lines",
           "tune"]

#: The validation metric maximised (the trainer's early-stopping metric).
METRIC = "ndcg@10"
#: Share of the budget in which trials may start; the rest is for the final training.
SEARCH_SHARE = 0.75


@dataclass(frozen=True)
class TuneConfig:
    model: str
    minutes: float = 20.0
    n_trials: int | None = None  # at most this many trials in this call (None: until time)
    fixed: Mapping[str, Any] = field(default_factory=dict)  # given values: not searched
    run: Mapping[str, Any] = field(default_factory=dict)  # device, threads, ...
    storage: str | None = None  # SQLite file of the study (resumable)
    study_name: str | None = None  # default: "seqstream-<model>"
    seed: int = 0


@dataclass
class TuneResult:
    best_values: dict  # the chosen configuration (every declared hyper-parameter)
    best_valid: float  # its validation METRIC
    defaults_valid: float | None  # the default configuration's, when its trial completed
    n_trials: int  # trials in the study (all calls)
    n_new: int  # trials run by this call
    fit: FitResult  # the final training of the chosen configuration
    rows: list[dict]  # one per trial: number, state, value, seconds, params
    searched: list[str]

    @property
    def model(self):
        return self.fit.model


def search_space(model: str, fixed: Mapping[str, Any] = ()) -> list[HParam]:
    """The declared hyper-parameters of ``model`` that have a search range and are not
    fixed by the user."""
    return [h for h in hparams_of(model) if h.search is not None and h.name not in fixed]


def _is_range(h: HParam) -> bool:
    return h.kind in (int, float) and len(h.search) == 2


def _suggest(trial, h: HParam):
    if _is_range(h):
        lo, hi = h.search
        if h.kind is int:
            return trial.suggest_int(h.name, int(lo), int(hi), log=h.log)
        return trial.suggest_float(h.name, float(lo), float(hi), log=h.log)
    return trial.suggest_categorical(h.name, list(h.search))


def _in_space(h: HParam, v) -> bool:
    if v is None:
        return False
    if _is_range(h):
        return h.search[0] <= v <= h.search[1]
    return v in h.search


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def trial_lines(rows: list[dict], searched: list[str], width: int = 80) -> list[str]:
    """The trials as a table of lines at most ``width`` wide: number, state, validation
    METRIC, minutes, then the searched values (``name=value``, cut at the width)."""
    head = f"{'#':>3} {'state':<8} {METRIC:>8} {'min':>5}  searched values"
    out = [head[:width]]
    for r in rows:
        val = f"{r['value']:.4f}" if r["value"] is not None else "-"
        params = " ".join(f"{k}={_short(r['params'][k])}" for k in searched
                          if k in r["params"])
        line = f"{r['number']:>3} {r['state']:<8} {val:>8} {r['seconds'] / 60:>5.1f}  {params}"
        out.append(line if len(line) <= width else line[: width - 1] + "…")
    return out


def tune(split: Split, config: TuneConfig, log: Callable[[str], None] = print) -> TuneResult:
    """Search ``config.model``'s declared ranges on ``split.valid`` within ``config.minutes``,
    then train the chosen configuration as ``train`` would (see the module docstring)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.monotonic()
    budget_s = float(config.minutes) * 60.0
    search_end = t0 + SEARCH_SHARE * budget_s
    by = sequences_by(split.protocol)
    # what train would run: the data-shape defaults with the fixed values
    from model_core.defaults import DataShape, choose

    seqs, vocab, _ = sequences_from_events(split.fit_events, by=by)
    choice = choose(config.model, DataShape.of(seqs, vocab, by), config.fixed, config.run)
    base = {**config.run, **choice.values}
    for line in choice.reasons:
        log(f"defaults: {line}")
    space = search_space(config.model, config.fixed)
    searched = [h.name for h in space]
    storage = f"sqlite:///{config.storage}" if config.storage else None
    study = optuna.create_study(
        study_name=config.study_name or f"seqstream-{config.model}", storage=storage,
        load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.seed + len_trials(storage, config)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    defaults_params = {h.name: base[h.name] for h in space if _in_space(h, base.get(h.name))}
    n_before = len(study.trials)
    if not study.trials:
        study.enqueue_trial(defaults_params, user_attrs={"defaults": True})

    def objective(trial) -> float:
        t_start = time.monotonic()
        params = {h.name: _suggest(trial, h) for h in space}
        cfg = {**base, **params}
        left = search_end - time.monotonic()
        budget = cfg.get("max_seconds")
        cfg["max_seconds"] = max(1.0, min(left, budget) if budget else left)

        def on_epoch(epoch: int, metrics: dict) -> bool:
            trial.report(float(metrics[METRIC]), epoch)
            return trial.should_prune()

        res = fit(split, FitConfig(config.model, cfg, refit=False, seed=config.seed,
                                   on_epoch=on_epoch), log=lambda m: None)
        value = float(res.valid_metrics.get(METRIC, 0.0))
        trial.set_user_attr("seconds", time.monotonic() - t_start)
        trial.set_user_attr("best_epoch", res.history[0].get("best_epoch"))
        if res.history[0].get("stopped") == "pruned":
            log(trial_lines([_row(trial.number, "pruned", value, trial, params)],
                            searched)[1])
            raise optuna.TrialPruned()
        log(trial_lines([_row(trial.number, "complete", value, trial, params)], searched)[1])
        return value

    log(trial_lines([], searched)[0])
    left = search_end - time.monotonic()
    if left > 0:
        study.optimize(objective, n_trials=config.n_trials, timeout=left,
                       catch=(ValueError, RuntimeError))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        from model_core.exceptions import ModelCoreError

        raise ModelCoreError(f"no trial completed within {config.minutes:g} minutes; give "
                             "--minutes more time")
    best = study.best_trial
    best_values = {**base, **{k: v for k, v in best.params.items() if k in searched}}
    default_trials = [t for t in done if t.user_attrs.get("defaults")]
    rows = [_row(t.number, t.state.name.lower(), t.value if t.value is not None else
                 (t.intermediate_values[max(t.intermediate_values)]
                  if t.intermediate_values else None), t, t.params)
            for t in study.trials]
    res = fit(split, FitConfig(config.model, dict(best_values), refit=True, seed=config.seed),
              log=log)
    return TuneResult(best_values, float(best.value),
                      float(default_trials[0].value) if default_trials else None,
                      len(study.trials), len(study.trials) - n_before, res, rows, searched)


def len_trials(storage: str | None, config: TuneConfig) -> int:
    """Trials already in the stored study (0 for a new one): the sampler's seed moves on
    with them, so a resumed study does not draw the first call's values again."""
    if storage is None:
        return 0
    import optuna

    try:
        s = optuna.load_study(study_name=config.study_name or f"seqstream-{config.model}",
                              storage=storage)
    except KeyError:
        return 0
    return len(s.trials)


def _row(number: int, state: str, value, trial, params) -> dict:
    secs = trial.user_attrs.get("seconds", 0.0) if hasattr(trial, "user_attrs") else 0.0
    v = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
    return {"number": number, "state": state, "value": v, "seconds": float(secs or 0.0),
            "params": dict(params)}
