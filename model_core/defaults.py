"""Defaults that fit the data: the best recipe known for a model on data of this shape.

    shape = DataShape.of(seqs, vocab, by="session")
    choice = choose("gru4rec", shape, explicit={"dim": 64})
    choice.values   # every declared hyper-parameter of gru4rec, as it will run
    choice.reasons  # one line per non-trivial choice, with why

The shape of a log: whether its sequences are sessions or users' histories, the catalogue
size, the events per sequence and the log size. A recipe is a set of hyper-parameters that
was measured to work on data of that shape (BENCHMARKS.md names each run):

* ``rsc15`` (GRU4Rec on session logs): GRU4Rec's own recipe for the RecSys Challenge 2015
  clicks — session-parallel mini-batches of 32, Adagrad with momentum (lr 0.2, momentum 0.2,
  cosine decay), sampled softmax over 2,048 popularity^0.5 negatives plus the batch's
  targets with logQ correction, output bias, dim 100, dropout 0.4 and input-embedding
  dropout 0.1 (BENCHMARKS.md "YooChoose 100k GRU4Rec: target met", run Y3).
* ``large-catalogue`` (SASRec on user logs of more than 20,000 items): sampled softmax over
  32,000 uniform negatives computed in bfloat16, Adam lr 5e-3 with half an epoch of warm-up
  and cosine decay, dropout 0.3, validation on 5,000 cases, a 23-minute training budget
  (BENCHMARKS.md "Beauty SASRec: target met (narrowly)", run A3).
* ``rsc15-small`` (GRU4Rec on user logs of at most 50,000 events): ``rsc15`` over 30
  epochs; user logs of 50,000 to 200,000 events get ``rsc15`` itself (14 epochs). On a
  synthetic log of 20,000 events the declared defaults (Adam, batch 128, 20 epochs: a few
  dozen steps per epoch) reached HR@10 0.16 where Markov gets 0.67; this recipe 0.68
  (BENCHMARKS.md "Strong models by default").
* ``small-log-sasrec`` (SASRec on logs of at most 200,000 events, catalogues up to 20,000):
  dim 128, dropout 0.3, batches of 32, lr 3e-3, up to 200 epochs with early stopping after
  10 without a better validation NDCG@10, and the counted last-item transition term
  (``transitions``, :mod:`model_core.models.transitions`): with about 20 training events
  per item SASRec alone learnt each item's successors too slowly to match the Markov chain
  (BENCHMARKS.md "README quick start, 100,000 events"). ``large-catalogue`` takes it too:
  the weight is chosen on the validation cases after training, 0 (the network alone) among
  the weights tried, so it cannot make the validation figure worse.
* ``small-log`` (GRU4Rec on small logs with side features or an action head, which
  session-parallel batches cannot train): batches of 32, lr 5e-3, up to 200 epochs,
  patience 10.

GRU4Rec on large user logs and SASRec on large session logs keep the declared defaults: no
recipe was measured for them.

A value given explicitly (``explicit``) always wins; a declared default applies where no
recipe sets a value. The optimiser settings (:data:`OPTIMISER_GROUP`) of a recipe go
together: when a user gives any of them, the others take their declared defaults. Counting models take their declared defaults (the published ones).
Training stops on the validation metric (early stopping in :mod:`model_core.train`), never
on the test part, which this module never sees. The validation ranking keeps a case's
history items where the log's targets repeat earlier items, as ``evaluate`` does by default
(:func:`valid_exclude_history`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from model_core.hparams import hparams_of

__all__ = ["FEW_STEPS_LOG", "LARGE_CATALOGUE", "LOO_VALID_USERS", "REPEAT_SHARE", "SMALL_LOG", "Choice",
           "DataShape", "choose", "default_valid_users", "repeat_share",
           "valid_exclude_history"]

#: A user log with more items than this gets the sampled-softmax (large-catalogue) recipe.
LARGE_CATALOGUE = 20_000
#: Logs of at most this many training events get the small-log recipe.
SMALL_LOG = 200_000
#: GRU4Rec on a user log of at most this many training events gives so few optimiser steps
#: per epoch that rsc15 runs over 30 epochs (rsc15-small); a larger user log (up to
#: :data:`SMALL_LOG`) gets rsc15's own 14, which also keeps training within a few minutes.
FEW_STEPS_LOG = 50_000
#: loo on more users than this validates on this many users only (the others train on their
#: second-last item): what the large-catalogue recipe was measured with.
LOO_VALID_USERS = 10_000


@dataclass(frozen=True)
class DataShape:
    """What the defaults look at: grouping, catalogue size, sequences, events."""

    sequences_by: str  # "session" | "user"
    n_items: int
    n_sequences: int
    n_events: int

    @property
    def events_per_sequence(self) -> float:
        return self.n_events / self.n_sequences if self.n_sequences else 0.0

    @classmethod
    def of(cls, seqs, vocab, by: str) -> DataShape:
        items = getattr(seqs, "items", seqs)
        return cls(by, int(vocab.n_items), len(items), int(sum(len(s) for s in items)))

    def describe(self) -> str:
        kind = "session log" if self.sequences_by == "session" else "user log"
        return (f"{kind}, {_short(self.n_items)} items, {_short(self.n_sequences)} "
                f"{'sessions' if self.sequences_by == 'session' else 'users'}, "
                f"{self.events_per_sequence:.1f} events each")


@dataclass
class Choice:
    """The hyper-parameters that will run and why."""

    values: dict[str, Any]
    sources: dict[str, str]  # name -> "flag" | "recipe" | "default"
    recipe: str | None = None
    reasons: list[str] = field(default_factory=list)


def _short(n: int) -> str:
    return f"{n / 1000:.0f}k" if n >= 10_000 else f"{n:,}"


RECIPES: dict[str, dict[str, Any]] = {
    "rsc15": {
        "dim": 100, "dropout": 0.4, "embed_dropout": 0.1, "loss": "sampled", "in_batch": True,
        "negatives": 2048, "sample_alpha": 0.5, "logq": True, "bias": True,
        "sparse_emb": False, "optimizer": "adagrad", "lr": 0.2, "momentum": 0.2,
        "lr_schedule": "cosine", "grad_clip": 0.0, "batch_order": "parallel",
        "batch_size": 32, "epochs": 14, "patience": 14,
    },
    "large-catalogue": {
        "dim": 64, "layers": 2, "heads": 1, "dropout": 0.3, "loss": "sampled",
        "negatives": 32_000, "loss_dtype": "bfloat16", "lr": 5e-3, "lr_schedule": "cosine",
        "warmup_epochs": 0.5, "batch_size": 128, "epochs": 17, "patience": 30,
        "action_head": False, "transitions": True,
    },
    "small-log": {
        "batch_size": 32, "lr": 5e-3, "epochs": 200, "patience": 10,
    },
}
#: GRU4Rec on small user logs: rsc15 over more epochs (a small log gives few steps each).
RECIPES["rsc15-small"] = {**RECIPES["rsc15"], "epochs": 30, "patience": 30}
#: SASRec on small logs: wider and more regularised than the declared defaults.
RECIPES["small-log-sasrec"] = {**RECIPES["small-log"], "dim": 128, "dropout": 0.3, "lr": 3e-3,
                                "transitions": True}
#: Applied together or not at all: a user who sets one of them gets the declared defaults
#: for the others, not a recipe's values tuned for a different optimiser or schedule.
OPTIMISER_GROUP = ("optimizer", "lr", "momentum", "lr_schedule", "warmup_epochs",
                   "min_lr_ratio")
#: Run options a recipe sets beside its hyper-parameters (explicit values still win).
RECIPE_RUN: dict[str, dict[str, Any]] = {
    "large-catalogue": {"valid_max_cases": 5000, "max_seconds": 1400.0},
}
#: One line on why each recipe fits.
WHY = {
    "rsc15": "GRU4Rec recipe rsc15 (session-parallel Adagrad, cosine lr, "
             "embedding dropout 0.1)",
    "large-catalogue": "SASRec large-catalogue recipe (32,000 bfloat16 sampled "
                       "negatives, lr 5e-3 cosine) + counted last-item transitions, "
                       "weight chosen on validation",
    "small-log": "small-log recipe (batch 32, lr 5e-3, up to 200 epochs, patience 10)",
    "rsc15-small": "GRU4Rec recipe rsc15 over 30 epochs (a small log gives few steps "
                   "per epoch)",
    "small-log-sasrec": "small-log recipe (dim 128, dropout 0.3, batch 32, lr 3e-3, up to "
                        "200 epochs, patience 10) + counted last-item transitions, weight "
                        "chosen on validation",
}


def _recipe(model: str, shape: DataShape, explicit: Mapping[str, Any],
            run: Mapping[str, Any]) -> str | None:
    small = shape.n_events <= SMALL_LOG
    # session-parallel batches train items only: not with side features or an action head
    # (item text vectors are item inputs: metadata-only items added after training get an
    # item-bias slot, model_core.text.fusion.grow_items)
    items_only = not (explicit.get("features") or explicit.get("action_head"))
    if model == "gru4rec" and items_only:
        if shape.sequences_by == "session":
            return "rsc15"
        if shape.n_events <= FEW_STEPS_LOG:
            return "rsc15-small"
        if small:
            return "rsc15"
    if model == "sasrec" and shape.sequences_by == "user" and shape.n_items > LARGE_CATALOGUE:
        return "large-catalogue"
    if model == "sasrec" and small:
        return "small-log-sasrec"
    if model == "gru4rec" and small:
        return "small-log"
    return None


def choose(model: str, shape: DataShape, explicit: Mapping[str, Any] | None = None,
           run: Mapping[str, Any] | None = None) -> Choice:
    """Every declared hyper-parameter of ``model`` for data of ``shape``: ``explicit`` over
    the recipe for the shape over the declared defaults. ``run``: the run options given
    (``max_seconds``, ``valid_max_cases``); a recipe's own run options go into
    ``values`` only where ``run`` does not set them."""
    explicit = dict(explicit or {})
    run = dict(run or {})
    decls = hparams_of(model)
    recipe = _recipe(model, shape, explicit, run)
    rvals = dict(RECIPES.get(recipe, {}))
    if recipe == "large-catalogue":
        rvals["negatives"] = min(rvals["negatives"], shape.n_items)
    # the optimiser settings of a recipe go together: with any of them given, the recipe's
    # others would be tuned for something else (lr 0.2 is Adagrad's, not Adam's)
    mixed = sorted(k for k in OPTIMISER_GROUP if k in explicit and k in rvals)
    if any(k in explicit for k in OPTIMISER_GROUP):
        for k in OPTIMISER_GROUP:
            rvals.pop(k, None)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for h in decls:
        if h.name in explicit:
            values[h.name], sources[h.name] = explicit[h.name], "flag"
        elif h.name in rvals:
            values[h.name], sources[h.name] = rvals[h.name], "recipe"
        else:
            values[h.name], sources[h.name] = h.default, "default"
    choice = Choice(values, sources, recipe)
    if recipe is None:
        return choice
    set_by_flags = sorted(set(k for k in rvals if sources.get(k) == "flag") | set(mixed))
    over = f"; given flags win: {', '.join(set_by_flags)}" if set_by_flags else ""
    if any(k in explicit for k in OPTIMISER_GROUP):
        over += "; optimiser and learning rate as given (the recipe's go together)"
    choice.reasons.append(f"{shape.describe()} → {WHY[recipe]}{over}")
    for k, v in RECIPE_RUN.get(recipe, {}).items():
        if run.get(k) is None:
            values[k], sources[k] = v, "recipe"
            if k == "max_seconds":
                choice.reasons.append(f"time budget {v / 60:.0f} min (as measured for the "
                                      f"recipe; --max-minutes sets another)")
            elif k == "valid_max_cases":
                choice.reasons.append(f"validation on {v:,} random cases per epoch "
                                      f"(--valid-max-cases sets another)")
    return choice


#: Validation ranks history items too when at least this share of its targets repeat an
#: item of their own history (what ``evaluate`` counts without ``--exclude-history``).
REPEAT_SHARE = 0.01


def repeat_share(cases, max_cases: int = 5000) -> float:
    """The share of ``cases`` (:class:`model_core.splits.TestCases`) whose target is an item
    of the case's own history (over the first ``max_cases``; 0.0 without cases)."""
    n = min(len(cases), max_cases)
    if n == 0:
        return 0.0
    hits = sum(int(cases.target_item[i]) in set(
        cases.base.items[cases.rows[i]][: cases.pos[i]].tolist()) for i in range(n))
    return hits / n


def valid_exclude_history(protocol: str, share: float) -> tuple[bool, str | None]:
    """Whether validation ranks a case's history items, from the protocol and the repeat
    share of the validation targets (:func:`repeat_share`): validation should measure what
    ``evaluate`` will. ``evaluate`` keeps history items unless told ``--exclude-history``;
    so does validation when repeats are targets (``session`` always, as before; a user log
    whose validation targets repeat an earlier item in :data:`REPEAT_SHARE` or more of the
    cases), since excluding them makes those cases certain misses and chooses the epoch for
    another task. A log without repeats (Beauty: none) excludes them, as the published
    protocols and ``--exclude-history`` do; there the two differ only in which already-seen
    items compete. Returns ``(exclude, the line to print or None)``."""
    if protocol == "session":
        return False, None
    if share >= REPEAT_SHARE:
        return False, (f"{share:.0%} of targets repeat → validation ranks seen items, "
                       f"as evaluate")
    return True, None


def default_valid_users(protocol: str, n_users: int) -> int | None:
    """``--valid-users`` when none is given: on a ``loo`` split of more than
    :data:`LOO_VALID_USERS` users, that many validate and every other user also trains on
    its second-last item (the large-catalogue recipe was measured so); else None (every
    user holds one out)."""
    if protocol == "loo" and n_users > LOO_VALID_USERS * 2:
        return LOO_VALID_USERS
    return None
