"""The one training path behind ``seqstream train`` and ``seqstream evaluate --model NAME``.

    result = fit(split, FitConfig("gru4rec", train={"epochs": 10, "max_seconds": 300}))
    result.model, result.valid_metrics, result.history   # history: one dict per training run

With a validation part (every protocol of :mod:`model_core.splits`):

1. **fit** on ``split.fit_events`` — the events before the validation cases, so the cases
   that choose the epoch (early stopping on NDCG@10) are never trained on;
2. **refit** on ``split.train_events`` for the chosen number of epochs when those are more
   events than the fit saw (``temporal`` and ``session``; ``loo`` fits once, its validation
   targets lie after the train part). ``refit=False`` keeps the validated model, which then
   cannot rank items first seen in the validation period (the evaluator counts those cases
   as misses).

Without a split (the ``prequential`` protocol, whose test is a stream after the training
events) :func:`fit_events` trains once on the given events for the configured epochs.

Time budget: ``train["max_seconds"]`` bounds the whole call, refit included. When a refit
will follow, the fit gets the share of the budget that its events are of the events of both
runs (a refit of the same epochs over more events takes proportionally longer), and the
refit gets whatever the fit left, as its own limit. If the fit's best epoch was cut short by
the budget, the refit's last epoch is cut after the same number of steps, so the refit
repeats what was validated rather than a longer run. With nothing left, the refit is skipped
and ``refit_skipped`` says why.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from model_core.splits import Split
from model_core.terminal import wrapped
from model_core.train import sequences_from_events, train_model

__all__ = ["FitConfig", "FitResult", "fit", "fit_events", "sequences_by", "with_defaults"]


def sequences_by(protocol: str) -> str:
    """How training sequences are grouped for a protocol: per session for ``session`` (its
    test cases are sessions), else per user."""
    return "session" if protocol == "session" else "user"


@dataclass(frozen=True)
class FitConfig:
    """What to train and how.

    ``train``: :func:`model_core.train.train_model`'s config (training options and the
    model's hyper-parameters). ``valid_exclude_history`` unset: validation keeps history
    items where repeats are targets (``session``, and a log whose validation targets repeat
    an earlier item: as ``evaluate`` without ``--exclude-history``), else excludes them
    (:func:`model_core.defaults.valid_exclude_history`).
    ``text``: a :class:`model_core.text.training.TextSetup` for text item vectors, or None.
    """

    model: str
    train: Mapping[str, Any] = field(default_factory=dict)
    refit: bool = True
    seed: int = 0
    progress: bool = False
    text: Any = None
    #: fill every hyper-parameter not in ``train`` from the data's shape
    #: (:func:`model_core.defaults.choose`; what ``seqstream train`` / ``evaluate`` do)
    auto: bool = False
    #: ``on_epoch(epoch, valid_metrics) -> stop?`` during the validated fit (tuning trials:
    #: :mod:`model_core.tune` reports each epoch to Optuna and prunes weak trials)
    on_epoch: Any = None


@dataclass
class FitResult:
    model: Any
    history: list[dict]  # TrainHistory.to_dict() of the fit, then of the refit when it ran
    valid_metrics: dict  # best validation metrics of the fit ({} without validation)
    refit: bool  # whether the returned model is the refit one
    sequences_by: str
    n_valid_cases: int = 0
    n_valid_dropped: int = 0  # validation cases whose target the fit never saw
    refit_skipped: str | None = None  # why a planned refit did not run
    seconds: float = 0.0  # wall time of the whole call
    #: with ``FitConfig.auto``: the hyper-parameters that ran, where each came from and why
    #: (a :class:`model_core.defaults.Choice`)
    choice: Any = None


def _stderr(msg: str) -> None:
    print(wrapped(msg), file=sys.stderr)


def _train(config: FitConfig, events: Sequence, by: str, valid_split=None,
           overrides: Mapping[str, Any] | None = None, grouped=None):
    seqs, vocab, cats = grouped or sequences_from_events(events, by=by)
    valid, dropped = (valid_split.for_vocab(vocab) if valid_split is not None else (None, 0))
    cfg = {**config.train, **(overrides or {})}
    model, hist = train_model(config.model, seqs, valid if valid is not None and len(valid) else None,
                              config=cfg, progress=config.progress, seed=config.seed,
                              vocab=vocab, item_categories=cats,
                              text_vectors=config.text.vectors_for(vocab) if config.text else None,
                              on_epoch=config.on_epoch if valid_split is not None else None)
    return model, hist, seqs, vocab, (len(valid) if valid is not None else 0), dropped


def with_defaults(config: FitConfig, grouped, by: str,
                  log: Callable[[str], None]) -> tuple[FitConfig, Any]:
    """``config`` with every hyper-parameter it does not set chosen from the shape of the
    grouped training data ``(seqs, vocab, cats)`` (:func:`model_core.defaults.choose`),
    each non-trivial choice logged; unchanged (and None) without ``config.auto``."""
    if not config.auto:
        return config, None
    from model_core.defaults import DataShape, choose
    from model_core.hparams import split_known

    seqs, vocab, _ = grouped
    explicit, run = split_known(config.model, config.train)
    choice = choose(config.model, DataShape.of(seqs, vocab, by), explicit, run)
    for line in choice.reasons:
        log(f"defaults: {line}")
    cfg = {**run, **choice.values}
    return FitConfig(config.model, cfg, config.refit, config.seed, config.progress,
                     config.text, config.auto, config.on_epoch), choice


def fit(split: Split, config: FitConfig, log: Callable[[str], None] = _stderr) -> FitResult:
    """Fit on ``split.fit_events`` with early stopping on ``split.valid``, then refit on
    ``split.train_events`` (see the module docstring)."""
    t0 = time.perf_counter()
    by = sequences_by(split.protocol)
    grouped = sequences_from_events(split.fit_events, by=by)
    config, choice = with_defaults(config, grouped, by, log)
    train_cfg = dict(config.train)
    if "valid_exclude_history" not in train_cfg:
        from model_core.defaults import repeat_share, valid_exclude_history

        share = repeat_share(split.valid) if split.valid is not None else 0.0
        exclude, why = valid_exclude_history(split.protocol, share)
        train_cfg["valid_exclude_history"] = exclude
        if why and config.auto:
            log(f"defaults: {why}")
    config = FitConfig(config.model, train_cfg, config.refit, config.seed, config.progress,
                       config.text, on_epoch=config.on_epoch)  # auto done: the refit uses
    # the same values
    planned = (config.refit and split.fit_events is not split.train_events
               and len(split.fit_events) != len(split.train_events))
    budget = train_cfg.get("max_seconds")
    fit_over = {}
    if budget and planned:
        n_fit, n_all = len(split.fit_events), len(split.train_events)
        fit_over["max_seconds"] = float(budget) * n_fit / (n_fit + n_all)
    model, hist, seqs, vocab, n_valid, dropped = _train(config, split.fit_events, by,
                                                        split.valid, fit_over, grouped)
    log(f"{config.model}: {seqs.n_events:,} training events, {len(seqs):,} sequences, "
        f"{vocab.n_items:,} items; {n_valid:,} validation cases "
        f"({dropped:,} with an item unseen in training skipped)")
    # the weight a transition term got (with a progress display, training printed it)
    if hist.config.get("transition_weight") is not None and not config.progress:
        log(f"defaults: transition term weight {hist.config['transition_weight']:g}, chosen "
            f"on validation (ndcg@10 {hist.best_valid.get('ndcg@10', float('nan')):.4f})")
    result = FitResult(model, [hist.to_dict()], dict(hist.best_valid), False, by, n_valid,
                       dropped, choice=choice)
    if planned:
        over: dict[str, Any] = {"epochs": hist.best_epoch or int(train_cfg.get("epochs", 1)),
                                "max_seconds": None, "init_from": None}
        if hist.config.get("transition_weight") is not None:  # chosen on the fit's validation
            over["transition_weight"] = hist.config["transition_weight"]
        best = next((e for e in hist.epochs if e.get("epoch") == hist.best_epoch), {})
        if best.get("partial"):
            over["final_epoch_steps"] = int(best["steps"])
        if budget:
            over["max_seconds"] = float(budget) - (time.perf_counter() - t0)
        if over["max_seconds"] is not None and over["max_seconds"] <= 0:
            result.refit_skipped = (f"no time left of --max-seconds {budget:g} after the fit; "
                                    "the validated model is kept")
            log(f"refit skipped: {result.refit_skipped}")
        else:
            part = (f", the last one cut after {over['final_epoch_steps']} steps as in the fit"
                    if "final_epoch_steps" in over else "")
            limit = (f", at most {over['max_seconds']:.0f} s" if over["max_seconds"] else "")
            log(f"refit on {len(split.train_events):,} events for {over['epochs']} epoch(s){part}{limit}")
            model2, hist2, *_ = _train(config, split.train_events, by, None, over)
            result.model, result.refit = model2, True
            result.history.append(hist2.to_dict())
    result.seconds = time.perf_counter() - t0
    return result


def fit_events(events: Sequence, config: FitConfig, by: str = "user",
               log: Callable[[str], None] = _stderr) -> FitResult:
    """Train once on ``events`` for the configured epochs, without validation (the
    ``prequential`` protocol's training period)."""
    t0 = time.perf_counter()
    grouped = sequences_from_events(events, by=by)
    config, choice = with_defaults(config, grouped, by, log)
    model, hist, *_ = _train(config, events, by, grouped=grouped)
    return FitResult(model, [hist.to_dict()], {}, False, by,
                     seconds=time.perf_counter() - t0, choice=choice)
