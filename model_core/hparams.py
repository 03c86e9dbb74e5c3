"""Hyper-parameter declarations: each model says once what it takes.

    HParam("dropout", float, 0.2, "dropout on the residual branches", low=0, high=1,
           search=(0.0, 0.5))

Each model's own are declared once in :data:`MODEL_HPARAMS` (its class holds them as
``hparams``); neural models also take the training options of :data:`TRAIN_HPARAMS`. :func:`hparams_of` gives the whole list for
a model name. Everything that builds a model's configuration reads these declarations:
``seqstream train`` / ``evaluate`` / ``compare`` / ``tune`` make their model flags from them
(``stream_app.commands._common.add_hparam_options``), :mod:`model_core.defaults` fills the
values a user did not give, :mod:`model_core.tune` searches the ``search`` ranges, and the
checkpoint's ``meta.json`` records the value of every declared name that ran.

A declaration's ``default`` is the value used when neither the user nor a data-shape recipe
(:mod:`model_core.defaults`) sets it; ``None`` means "chosen at training time" (e.g. ``loss``
``auto``, ``hidden`` = ``dim``). ``low`` / ``high`` bound what a flag accepts (``low_open``:
strictly above ``low``). ``search`` is what ``tune`` tries: ``(lo, hi)`` for numbers (``log``:
on a log scale) or a tuple of choices; ``None`` = not tuned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MODEL_HPARAMS", "NEURAL", "HParam", "TRAIN_HPARAMS", "all_hparams", "check_value",
           "declared", "declared_defaults", "hparams_of", "split_known"]


@dataclass(frozen=True)
class HParam:
    """One hyper-parameter: name, type, default, accepted range or choices, help text."""

    name: str
    kind: type  # int | float | str | bool | list (a list of strings; a flag takes "a,b,c")
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple | None = None
    search: tuple | None = None
    log: bool = False
    flag: str | None = None  # the CLI flag when not --name-with-dashes

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        """What a value must be, in words ("a positive integer", "a number in 0..1")."""
        noun = "an integer" if self.kind is int else "a number"
        lo, hi = self.low, self.high
        if lo == 0 and self.low_open and hi is None:
            return f"a positive {'integer' if self.kind is int else 'number'}"
        if self.kind is int and lo == 1 and hi is None:
            return "a positive integer"
        if lo is not None and hi is not None:
            return f"{noun} in {lo:g}..{hi:g}"
        if lo is not None:
            return f"{noun} {'>' if self.low_open else '>='} {lo:g}"
        if hi is not None:
            return f"{noun} <= {hi:g}"
        return noun

    def check(self, value: Any) -> Any:
        """``value`` converted to this kind, or ValueError saying what was wrong."""
        if value is None:
            return None
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise ValueError(f"{self.name}: {value!r} is not true or false")
        if self.kind is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise ValueError(f"{self.name}: {value!r} is not a list")
            value = [str(v) for v in value]
            bad = [v for v in value if self.choices and v not in self.choices]
            if bad:
                raise ValueError(f"{self.name}: {bad[0]!r} is not one of "
                                 f"{', '.join(self.choices)}")
            return value
        if self.kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"{self.name}: {value!r} is not {self.describe_range()}")
            try:
                v = self.kind(value)
                if self.kind is int and isinstance(value, float) and v != value:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{self.name}: {value!r} is not {self.describe_range()}") from None
            lo, hi = self.low, self.high
            if v != v or (lo is not None and (v <= lo if self.low_open else v < lo)) or (
                    hi is not None and v > hi):
                raise ValueError(f"{self.name}: {value} is not {self.describe_range()}")
            return v
        v = str(value)
        if self.choices and v not in self.choices:
            raise ValueError(f"{self.name}: {v!r} is not one of {', '.join(self.choices)}")
        return v


def _p(name, kind, default, help, **kw) -> HParam:  # noqa: A002 - "help" as argparse names it
    return HParam(name, kind, default, help, **kw)


#: Training options every neural model takes (:data:`model_core.train.TRAIN_DEFAULTS`).
TRAIN_HPARAMS: tuple[HParam, ...] = (
    _p("epochs", int, 20, "training epochs (at most; early stopping on validation NDCG@10)",
       low=1),
    _p("batch_size", int, 128, "sequences per batch (events per step with batch_order "
       "parallel)", low=1, search=(16, 32, 64, 128, 256)),
    _p("lr", float, 1e-3, "learning rate", low=0, low_open=True, search=(1e-4, 0.3), log=True),
    _p("weight_decay", float, 0.0, "Adam weight decay", low=0),
    _p("grad_clip", float, 5.0, "gradient norm clip (0 = none)", low=0),
    _p("patience", int, 3, "epochs without a better validation NDCG@10 before stopping", low=1),
    _p("max_len", int, 50, "longest history a model reads (events)", low=1),
    _p("optimizer", str, "adam", "adam, or adagrad (Adagrad with momentum, GRU4Rec's)",
       choices=("adam", "adagrad")),
    _p("momentum", float, 0.0, "adagrad momentum", low=0, search=(0.0, 0.5)),
    _p("batch_order", str, "length", "length: similar lengths together, shuffled; time: "
       "sequences by start time; parallel (gru4rec): session-parallel mini-batches",
       choices=("length", "time", "parallel")),
    _p("lr_schedule", str, "constant", "learning rate over training: constant, or (after "
       "warmup_epochs) cosine / linear decay to lr * min_lr_ratio",
       choices=("constant", "cosine", "linear")),
    _p("warmup_epochs", float, 0.0, "linear learning-rate warm-up over this many epochs",
       low=0),
    _p("min_lr_ratio", float, 0.0, "final learning rate of a decaying schedule, as a "
       "fraction of lr", low=0, high=1),
)


#: Hyper-parameters of every neural sequence model (``model_core.models.base.SequenceModule``).
#: ``None`` defaults are chosen at training time (:mod:`model_core.train`): ``loss`` "auto"
#: (full cross-entropy up to 20,000 items, else sampled), ``sparse_emb`` by catalogue size,
#: ``action_head`` when the log has actions.
SEQUENCE_HPARAMS: tuple[HParam, ...] = (
    _p("dim", int, 64, "item embedding size", low=1, search=(32, 64, 100, 128)),
    _p("loss", str, "auto", "auto: full cross-entropy up to 20,000 items, else sampled",
       choices=("auto", "ce", "sampled", "gbce")),
    _p("negatives", int, 2048, "sampled / gbce negatives per batch", low=1,
       search=(256, 32768), log=True),
    _p("sample_alpha", float, 0.0, "negatives drawn by popularity**alpha (0 = uniform)",
       low=0, search=(0.0, 1.0)),
    _p("in_batch", bool, False, "sampled: add in-batch negatives"),
    _p("gbce_t", float, 0.75, "gbce calibration", low=0, high=1),
    _p("logq", bool, False, "sampled: subtract log sampling probability (logQ correction)"),
    _p("features", list, [], "side features, comma-separated: action,category,gap",
       choices=("action", "category", "gap")),
    _p("combine", str, "sum", "how side features join the item vector",
       choices=("sum", "concat")),
    _p("action_head", bool, None, "train the next-action head (default: when the log has "
       "actions and batches are not session-parallel)"),
    _p("action_weight", float, 0.5, "weight of the next-action loss", low=0),
    _p("sparse_emb", bool, None, "sparse item-embedding gradients with sampled losses "
       "(default: above 4,000 items)"),
)
_DROPOUT_HELP = "dropout (gru4rec: on the output; sasrec: residual branches and input)"
_LAYERS_HELP = "recurrent layers (gru4rec) / transformer blocks (sasrec)"

GRU4REC_HPARAMS: tuple[HParam, ...] = (
    _p("hidden", int, None, "gru4rec: recurrent units (default dim)", low=1),
    _p("layers", int, 1, _LAYERS_HELP, low=1),
    _p("cell", str, "gru", "gru4rec cell", choices=("gru", "lstm")),
    _p("dropout", float, 0.0, _DROPOUT_HELP, low=0, high=1, search=(0.0, 0.5)),
    _p("embed_dropout", float, 0.0, "gru4rec: dropout on the input item embeddings",
       low=0, high=1, search=(0.0, 0.4)),
    _p("bias", bool, False, "gru4rec: output item bias"),
    _p("final_act", str, "none", "gru4rec: activation of the output state",
       choices=("none", "tanh", "elu")),
    _p("init", str, "default", "gru4rec: uniform = GRU4Rec's +-sqrt(6/(fan_in+fan_out)) "
       "initialisation", choices=("default", "uniform")),
)

SASREC_HPARAMS: tuple[HParam, ...] = (
    _p("layers", int, 2, _LAYERS_HELP, low=1, search=(1, 3)),
    _p("heads", int, 1, "sasrec: attention heads", low=1),
    _p("dropout", float, 0.2, _DROPOUT_HELP, low=0, high=1, search=(0.0, 0.5)),
    _p("attn_dropout", float, 0.0, "sasrec: dropout on attention weights", low=0, high=1),
    _p("block", str, "prenorm", "sasrec block shape: prenorm, or the SASRec paper's "
       "(layer-normed query, post-attention layer norm)", choices=("prenorm", "sasrec")),
    _p("ffn_mult", int, 4, "sasrec: feed-forward width = ffn_mult * dim (paper: 1)", low=1),
    _p("act", str, "gelu", "sasrec: feed-forward activation (paper: relu)",
       choices=("gelu", "relu"), flag="--activation"),
    _p("loss_dtype", str, "float32", "sasrec: score matrix and softmax of the ce/sampled "
       "loss in bfloat16 (faster on AMX CPUs and GPUs)", choices=("float32", "bfloat16")),
    _p("transitions", bool, False, "sasrec: add w * log(1 + count of last item -> item) "
       "from the training log to the scores, w chosen on validation (count/neural hybrid)"),
)


def _k(default: int) -> HParam:
    return _p("k", int, default, "session-kNN: neighbours per history", low=1,
              search=(20, 500), log=True)


def _sample(default: int) -> HParam:
    return _p("sample_size", int, default, "session-kNN: most recent candidate sessions "
              "kept (sknn 500, vsknn 1000, stan/vstan 5000)", low=1, search=(200, 20000),
              log=True)


def _lam(name: str, default: float, text: str, hi: float = 10.0) -> HParam:
    return _p(name, float, default, text + " (0 = off)", low=0, search=(0.0, hi))


_STAN = (_k(100), _sample(5000),
         _lam("lambda_spw", 1.02, "stan/vstan: position decay in the current session"),
         _lam("lambda_snh", 5.0, "stan/vstan: neighbour recency decay, days", hi=100.0),
         _lam("lambda_inh", 2.05, "stan/vstan: decay by distance inside a neighbour"))

#: Each model's own hyper-parameters, declared once (the model classes take theirs from here
#: as ``hparams``; this table imports no model, so the CLI builds its flags without torch).
#: Defaults of the counting models are their published ones (model docstrings).
MODEL_HPARAMS: dict[str, tuple[HParam, ...]] = {
    "popular": (),
    "markov": (),
    "itemknn": (
        _p("window", int, 20, "itemknn: co-occurrence window (events apart)", low=1,
           search=(1, 50)),
        _p("neighbours", int, 100, "itemknn: neighbours kept per item", low=1,
           search=(10, 500), log=True),
        _p("recent", int, 10, "itemknn: history items that vote", low=1, search=(1, 20)),
    ),
    "sknn": (_k(100), _sample(500)),
    "vsknn": (_k(100), _sample(1000),
              _p("weighting", str, "linear", "vsknn: position weights of the current session",
                 choices=("linear", "same", "div", "quadratic")),
              _p("idf_weighting", float, 0.0, "vsknn: item weight 1 + w * idf (0 = off)",
                 low=0, search=(0.0, 10.0))),
    "stan": _STAN,
    "vstan": (*_STAN,
              _lam("lambda_ipw", 1.02, "vstan: decay by the current-session position of the "
                   "shared item"),
              _lam("lambda_idf", 5.0, "vstan: item weight 1 + lambda_idf * idf", hi=20.0)),
    "gru4rec": (*SEQUENCE_HPARAMS, *GRU4REC_HPARAMS),
    "sasrec": (*SEQUENCE_HPARAMS, *SASREC_HPARAMS),
}
#: Models trained by gradient descent: they also take :data:`TRAIN_HPARAMS`.
NEURAL = ("gru4rec", "sasrec")


def declared(model: str) -> tuple[HParam, ...]:
    """``model``'s own declarations (what its class holds as ``hparams``)."""
    return MODEL_HPARAMS[model]


def hparams_of(model: str) -> tuple[HParam, ...]:
    """Every hyper-parameter model ``model`` takes: its own, then (neural models) the
    training options. Raises ValueError for an unknown model."""
    own = MODEL_HPARAMS.get(model)
    if own is None:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_HPARAMS)}")
    return own + (TRAIN_HPARAMS if model in NEURAL else ())


def declared_defaults(model: str) -> dict[str, Any]:
    """``{name: default}`` of every declared hyper-parameter of ``model``."""
    return {h.name: h.default for h in hparams_of(model)}


def check_value(model: str, name: str, value: Any) -> Any:
    """``value`` checked against ``model``'s declaration of ``name`` (ValueError if bad)."""
    for h in hparams_of(model):
        if h.name == name:
            return h.check(value)
    raise ValueError(f"{model} has no hyper-parameter {name!r}")


def split_known(model: str, values: Mapping[str, Any]) -> tuple[dict, dict]:
    """``values`` split into (declared for ``model``, everything else)."""
    names = {h.name for h in hparams_of(model)}
    return ({k: v for k, v in values.items() if k in names},
            {k: v for k, v in values.items() if k not in names})


def all_hparams(models: Iterable[str] | None = None) -> dict[str, list[tuple[str, HParam]]]:
    """``{name: [(model, declaration), ...]}`` over ``models`` (default every model): one
    CLI flag per name serves every model that declares it."""
    out: dict[str, list[tuple[str, HParam]]] = {}
    for m in (models or MODEL_HPARAMS):
        for h in hparams_of(m):
            out.setdefault(h.name, []).append((m, h))
    return out
