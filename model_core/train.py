"""Training: one loop for every model, validation every epoch, early stopping on NDCG@10.

    model, history = train_model("sasrec", train_sequences, valid_cases,
                                 config={"epochs": 50, "dim": 64, "loss": "sampled"}, seed=0)

``train_sequences``: per-user item-index sequences (anything
:func:`model_core.models.data.as_seqdata` accepts: arrays, records with ``items`` /
``actions`` / ``timestamps_ms``, a :class:`~model_core.predictor.SequenceBatch`).
``valid_cases``: histories and the next item of each (see :func:`as_cases`).
``config`` mixes training options (:data:`TRAIN_DEFAULTS`) and model hyper-parameters
(everything else, passed to :func:`model_core.models.create_model`).

Count-based baselines are "trained" by counting; neural models by mini-batch gradient
descent over right-padded, length-bucketed batches with a next-item target at every
position (and the next action when the log has actions).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from model_core.device import resolve_device
from model_core.metrics import full_ranks, ranking_metrics
from model_core.models import NEURAL_MODELS, NeuralRecommender, create_model
from model_core.models.base import NegativeSampler, exclude_items
from model_core.models.data import (
    Padded,
    SeqData,
    as_seqdata,
    by_start_time,
    gap_buckets,
    session_parallel_steps,
)
from model_core.models.optim import AdagradM
from model_core.predictor import SequenceBatch
from model_core.vocab import ItemVocab

TRAIN_DEFAULTS: dict = {
    "epochs": 20,
    "batch_size": 128,  # sequences per batch
    "lr": 1e-3,
    "weight_decay": 0.0,
    "grad_clip": 5.0,
    "patience": 3,  # epochs without a better validation NDCG@10 before stopping
    "max_len": 50,
    "device": "auto",
    "threads": None,  # torch CPU threads; None = idle cores (1..4)
    "valid_max_cases": None,  # validate on a fixed random subset of this many cases
    "valid_exclude_history": True,
    "valid_batch_size": 1024,
    "max_seconds": None,  # stop training after this many seconds (checked per batch)
    # the last epoch stops after this many optimiser steps: a refit repeating a fit whose
    # best epoch was cut short by max_seconds (model_core.fit)
    "final_epoch_steps": None,
    "windows": True,  # long sequences also train on their earlier max_len windows
    "init_from": None,  # checkpoint directory to start from (same model, same vocabulary)
    # the weight of a transition term (models.transitions): None = chosen on the validation
    # cases after training (0 without them); a refit takes the fit's
    "transition_weight": None,
    "optimizer": "adam",  # adam | adagrad (Adagrad with momentum, GRU4Rec's optimiser)
    "momentum": 0.0,  # adagrad only
    # length: similar lengths together, batches shuffled; time: sequences by start time,
    # blocks of batches in that order every epoch; parallel (gru4rec): GRU4Rec's
    # session-parallel mini-batches, one event per sequence per step, truncated BPTT of 1
    "batch_order": "length",
    # learning rate over training: constant, or linear warm-up (warmup_epochs) then cosine /
    # linear decay to lr * min_lr_ratio at the end of `epochs` (or of max_seconds, whichever
    # comes first: progress is the larger of the step and the time fraction)
    "lr_schedule": "constant",
    "warmup_epochs": 0.0,
    "min_lr_ratio": 0.0,
}
LR_SCHEDULES = ("constant", "cosine", "linear")
#: Training options that also belong to the model's config.
_SHARED = ("max_len",)
VALID_KS = (10, 20)
#: batch_order "time": batches per block of consecutive (time-ordered) rows
TIME_BLOCK = 16


@dataclass
class TrainHistory:
    """What happened during training (also stored in the checkpoint's meta.json)."""

    model: str
    config: dict
    epochs: list[dict] = field(default_factory=list)  # per epoch: loss, valid metrics, seconds
    best_epoch: int | None = None
    best_valid: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0  # process CPU time of the training steps (all threads)
    train_events: int = 0  # target events processed (all epochs)
    stopped: str = "epochs"  # epochs | early_stopping | time_limit | counted | pruned

    @property
    def events_per_s(self) -> float:
        return self.train_events / self.train_seconds if self.train_seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"model": self.model, "config": self.config, "epochs": self.epochs,
                "best_epoch": self.best_epoch, "best_valid": self.best_valid,
                "train_seconds": round(self.train_seconds, 3),
                "train_cpu_seconds": round(self.train_cpu_seconds, 3),
                "train_events": self.train_events,
                "train_events_per_s": round(self.events_per_s, 1)
                if math.isfinite(self.events_per_s) else None,
                "stopped": self.stopped}


# --------------------------------------------------------------------------- validation cases
@dataclass(slots=True)
class Cases:
    """Test/validation cases: ``histories`` (a SequenceBatch) and the next item of each."""

    histories: SequenceBatch
    targets: np.ndarray  # [N] int64 vocabulary indices

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, idx: np.ndarray) -> Cases:
        h = self.histories
        return Cases(SequenceBatch(
            items=[h.items[i] for i in idx],
            actions=[h.actions[i] for i in idx] if h.actions is not None else None,
            timestamps_ms=[h.timestamps_ms[i] for i in idx] if h.timestamps_ms is not None else None,
        ), self.targets[idx])


def as_cases(cases) -> Cases:
    """Adapt validation/test cases from any caller to :class:`Cases`.

    Accepts :class:`Cases`; an object or dict with ``histories`` (SequenceBatch or list of
    arrays) or ``items``, and ``targets`` (or ``target``); or a sequence of
    ``(history, target)`` pairs or of records with ``history``/``items`` and ``target``.
    """
    if isinstance(cases, Cases):
        return cases

    def get(o, *names):
        for n in names:
            if isinstance(o, dict) and n in o:
                return o[n]
            if hasattr(o, n):
                return getattr(o, n)
        return None

    if hasattr(cases, "target_item") and callable(getattr(cases, "batch", None)):
        # model_core.splits.TestCases (already in the model's vocabulary: see for_vocab)
        return Cases(cases.batch(np.arange(len(cases))),
                     np.asarray(cases.target_item, dtype=np.int64))
    hist = get(cases, "histories", "history")
    targets = get(cases, "targets", "target")
    if hist is None and targets is not None:
        hist = get(cases, "items")
    if hist is not None and targets is not None:
        if not isinstance(hist, SequenceBatch):
            hist = SequenceBatch(items=[np.asarray(h, dtype=np.int32) for h in hist],
                                 actions=get(cases, "actions"),
                                 timestamps_ms=get(cases, "timestamps_ms"))
        return Cases(hist, np.asarray(targets, dtype=np.int64))
    items, actions, ts, tg = [], [], [], []
    for c in cases:
        if isinstance(c, tuple):
            h, t = c[0], c[1]
            a = s = None
        else:
            h, t = get(c, "history", "items"), get(c, "target", "target_item")
            a, s = get(c, "actions"), get(c, "timestamps_ms")
            if isinstance(h, SequenceBatch):
                h, a, s = h.items[0], (h.actions or [None])[0], (h.timestamps_ms or [None])[0]
        items.append(np.asarray(h, dtype=np.int32))
        actions.append(a)
        ts.append(s)
        tg.append(int(t))
    batch = SequenceBatch(
        items=items,
        actions=actions if all(a is not None for a in actions) and actions else None,
        timestamps_ms=ts if all(s is not None for s in ts) and ts else None)
    return Cases(batch, np.asarray(tg, dtype=np.int64))


def case_ranks(model, cases: Cases, exclude_history: bool = True, ties: str = "conservative",
               batch_size: int = 1024) -> np.ndarray:
    """1-based full-catalogue rank of each case's target (metric maths in model_core.metrics)."""
    out = np.empty(len(cases), dtype=np.float64)
    for s in range(0, len(cases), batch_size):
        sub = cases.subset(np.arange(s, min(len(cases), s + batch_size)))
        sc = torch.from_numpy(model.score(sub.histories))
        if exclude_history:
            exclude_items(sc, sub.histories.items)
        out[s: s + len(sub)] = full_ranks(sc.numpy(), sub.targets, ties=ties)
    return out


def validate(model, cases: Cases, exclude_history: bool = True, batch_size: int = 1024) -> dict:
    """``hr@K``, ``ndcg@K``, ``mrr@K`` for K in (10, 20) over ``cases``."""
    ranks = case_ranks(model, cases, exclude_history=exclude_history, batch_size=batch_size)
    return ranking_metrics(ranks, VALID_KS)


# --------------------------------------------------------------------------- batches
@dataclass(slots=True)
class _Rows:
    """Training rows: each an input window and the next item (and action) at every step."""

    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    in_actions: list[np.ndarray] | None
    out_actions: list[np.ndarray] | None
    gaps: list[np.ndarray] | None

    @property
    def n_targets(self) -> int:
        return int(sum(len(t) for t in self.targets))


def build_rows(data: SeqData, max_len: int, windows: bool = True) -> _Rows:
    """Split every sequence into (input, next-item) rows of at most ``max_len`` steps.

    A sequence of n events gives targets for events 2..n. With ``windows`` a long one is cut
    into consecutive windows (the last ending at the newest event); otherwise only its last
    ``max_len`` steps are trained on.
    """
    has_a = data.actions is not None
    has_t = data.timestamps_ms is not None
    ins, tgs, ia, oa, gp = [], [], [], [], []
    for u, s in enumerate(data.items):
        n = len(s)
        if n < 2:
            continue
        s = np.asarray(s, dtype=np.int64)
        a = np.asarray(data.actions[u], dtype=np.int64) + 1 if has_a else None
        g = gap_buckets(data.timestamps_ms[u]) if has_t else None
        ends = [n]
        if windows:
            while ends[-1] - max_len > 1:
                ends.append(ends[-1] - max_len)
        for e in ends:
            b = max(0, e - 1 - max_len)
            ins.append(s[b: e - 1])
            tgs.append(s[b + 1: e])
            if has_a:
                ia.append(a[b: e - 1])
                oa.append(a[b + 1: e])
            if has_t:
                gp.append(g[b: e - 1])
    return _Rows(ins, tgs, ia if has_a else None, oa if has_a else None, gp if has_t else None)


def _batches(rows: _Rows, batch_size: int, rng: np.random.Generator, order: str = "length"):
    """Indices of rows per batch: similar lengths together (little padding), random order.

    ``order="time"`` keeps the rows' given order (by start time) at a coarse grain: blocks of
    ``TIME_BLOCK`` batches' worth of consecutive rows come in order, and only within a block
    are rows grouped by length and batches shuffled, so the last updates of every epoch see
    the newest sequences (as GRU4Rec's session-parallel mini-batches do) without padding
    every batch to its longest sequence.
    """
    if order == "time":
        n, size = len(rows.inputs), batch_size * TIME_BLOCK
        out = []
        for s in range(0, n, size):
            sub = _Rows(rows.inputs[s: s + size], [], None, None, None)
            out += [b + s for b in _batches(sub, batch_size, rng, "length")]
        return out
    if order != "length":
        raise ValueError(f"batch_order must be 'length' or 'time', not {order!r}")
    lens = np.array([len(x) for x in rows.inputs])
    order = np.lexsort((rng.random(len(lens)), lens))
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _pad(rows: _Rows, idx: np.ndarray, device, use_actions: bool, use_gaps: bool):
    width = max(len(rows.inputs[i]) for i in idx)
    n = len(idx)
    items = np.zeros((n, width), np.int64)
    targets = np.zeros((n, width), np.int64)
    lengths = np.empty(n, np.int64)
    acts = np.zeros((n, width), np.int64) if use_actions and rows.in_actions is not None else None
    tacts = np.zeros((n, width), np.int64) if rows.out_actions is not None else None
    gaps = np.zeros((n, width), np.int64) if use_gaps and rows.gaps is not None else None
    for r, i in enumerate(idx):
        m = len(rows.inputs[i])
        items[r, :m] = rows.inputs[i]
        targets[r, :m] = rows.targets[i]
        lengths[r] = m
        if acts is not None:
            acts[r, :m] = rows.in_actions[i]
        if tacts is not None:
            tacts[r, :m] = rows.out_actions[i]
        if gaps is not None:
            gaps[r, :m] = rows.gaps[i]

    def t(x):
        return None if x is None else torch.from_numpy(x).to(device, non_blocking=True)

    return Padded(t(items), t(lengths), t(acts), t(gaps)), t(targets), t(tacts)


# --------------------------------------------------------------------------- progress
#: Width of a progress line (the time prefix of plain output included): an 80-column terminal.
LINE_WIDTH = 80


def epoch_line(epoch: int, n_epochs: int, rec: dict, metrics: dict | None, best: bool,
               elapsed_s: float, budget_s: float | None = None) -> str:
    """One line per epoch, at most ``LINE_WIDTH - 9`` characters (room for the ``HH:MM:SS``
    prefix of plain output): epoch, loss, validation NDCG@10 / HR@10 (``*`` at a new best),
    the epoch's seconds and the time used of the budget."""
    head = f"epoch {epoch}/{n_epochs} loss {rec['loss']:.4f}"
    val = (f" ndcg@10 {metrics['ndcg@10']:.4f}{'*' if best else ' '} hr@10 "
           f"{metrics['hr@10']:.4f}") if metrics else ""
    used = f"{_mmss(elapsed_s)}/{_mmss(budget_s)}" if budget_s else _mmss(elapsed_s)
    line = f"{head}{val} {rec['seconds']:.0f}s {used}"
    return line[: LINE_WIDTH - 9]


def _mmss(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class _Progress:
    """On a terminal: a bar for the running epoch (replaced at its end by the epoch's line,
    :func:`epoch_line`), all within 80 columns. Otherwise (logs, CI): only the epoch lines,
    one per epoch, with an ``HH:MM:SS`` prefix."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.plain = enabled and not sys.stderr.isatty()
        self.p = None
        if enabled and not self.plain:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.p = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=20),
                MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
                console=Console(file=sys.stderr, width=min(LINE_WIDTH,
                                                           Console(file=sys.stderr).width)))
        self._task = None

    def __enter__(self):
        if self.p is not None:
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        if self.p is not None:
            self.p.__exit__(*exc)

    def task(self, desc: str, total: int):
        if self.p is None:
            return None
        if self._task is not None:
            self.p.remove_task(self._task)
        self._task = self.p.add_task(desc, total=total, loss=float("nan"), rate=0.0)
        return self._task

    def update(self, task, **kw):
        if self.p is not None and task is not None:
            self.p.update(task, **kw)

    def log(self, msg: str):
        if self.p is not None:
            if self._task is not None:
                self.p.remove_task(self._task)
                self._task = None
            self.p.console.print(time.strftime("%H:%M:%S ") + msg, highlight=False,
                                 markup=False)
        elif self.plain:
            print(time.strftime("%H:%M:%S ") + msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- training
def _configure_threads(threads: int | None, device: torch.device) -> None:
    if device.type != "cpu":
        return
    if not threads:
        # the idle cores, at most 4: on a shared 2-core machine a second thread that keeps
        # being descheduled makes every parallel region wait for it (slower than one thread)
        cpus = os.cpu_count() or 1
        try:
            busy = int(round(os.getloadavg()[0]))
        except OSError:
            busy = 0
        threads = max(1, min(4, cpus - busy))
    n = threads
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _vocab_for(train_sequences, data: SeqData, vocab: ItemVocab | None) -> ItemVocab:
    if vocab is not None:
        return vocab
    v = getattr(train_sequences, "vocab", None)
    if isinstance(v, ItemVocab):
        return v
    top = max((int(s.max()) for s in data.items if len(s)), default=0)
    return ItemVocab(str(i) for i in range(1, top + 1))


def _warm_start(model: NeuralRecommender, directory: str) -> None:
    """Copy the weights of checkpoint ``directory`` (same model and vocabulary) into ``model``
    (a continued training run; the optimizer starts afresh)."""
    from model_core.checkpoint import load_model
    from model_core.exceptions import CheckpointError

    src = load_model(directory, device="cpu")
    if src.name != model.name or src.vocab.fingerprint() != model.vocab.fingerprint():
        raise CheckpointError(f"{directory}: cannot start {model.name} from a {src.name} "
                              "checkpoint over a different vocabulary")
    try:
        model.module.load_state_dict(src.module.state_dict(), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{directory}: weights do not fit this configuration: "
                              f"{str(e)[:200]}") from None


def lr_factor(schedule: str, progress: float, warm: float = 0.0, floor: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``progress`` in [0, 1] of the training budget.

    ``warm``: the fraction of the budget spent warming up linearly from 0; after it, constant,
    or a cosine / linear decay from 1 to ``floor`` at progress 1.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {schedule!r}")
    p = min(max(progress, 0.0), 1.0)
    if warm > 0 and p < warm:
        return p / warm
    if schedule == "constant":
        return 1.0
    q = (p - warm) / (1.0 - warm) if warm < 1 else 1.0
    if schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * q))
    return floor + (1.0 - floor) * (1.0 - q)


def _auto_loss(n_items: int) -> str:
    return "ce" if n_items <= 20_000 else "sampled"


#: Sampled losses train the item embedding with dense gradients up to this many items, sparse
#: ones (only the rows a step touches) above: a dense step updates the whole item matrix, which
#: is as cheap as the ~2,000 sampled rows near 4,000 items and 6x slower at 40,000
#: (``python -m model_core.bench_train``, BENCHMARKS.md "Training speed").
DENSE_EMB_MAX_ITEMS = 4_000


def _auto_sparse_emb(loss: str, n_items: int) -> bool:
    return loss != "ce" and n_items > DENSE_EMB_MAX_ITEMS


def train_model(name: str, train_sequences, valid_cases=None, config: dict | None = None,
                progress: bool = True, seed: int = 0, vocab: ItemVocab | None = None,
                item_categories: np.ndarray | None = None,
                text_vectors: np.ndarray | None = None, on_epoch=None):
    """Train model ``name``; returns ``(model, history)``.

    ``on_epoch(epoch, valid_metrics)`` is called after each validated epoch; when it returns
    True training stops there (``history.stopped = "pruned"``: a tuning trial cut short).

    The returned model holds the weights of the best validation epoch (NDCG@10) when
    ``valid_cases`` are given, else those of the last epoch. ``vocab`` defaults to
    ``train_sequences.vocab`` when present. ``item_categories`` [n_items + 1] (category index
    per item, 0 = none) feeds the ``category`` side feature. ``text_vectors``
    [len(vocab), text_dim]: frozen per-item text vectors for ``item_mode`` "text" / "fused"
    (see :mod:`model_core.text`), installed before the first step.
    """
    cfg = {**TRAIN_DEFAULTS, **(config or {})}
    train_keys = set(TRAIN_DEFAULTS)
    model_cfg = {k: v for k, v in cfg.items() if k not in train_keys or k in _SHARED}
    tcfg = {k: cfg[k] for k in train_keys}
    data = as_seqdata(train_sequences, item_categories)
    vocab = _vocab_for(train_sequences, data, vocab)
    device = resolve_device(tcfg["device"])
    _configure_threads(tcfg["threads"], device)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    rng = np.random.default_rng(seed)
    cases = as_cases(valid_cases) if valid_cases is not None else None
    if cases is not None and tcfg["valid_max_cases"] and len(cases) > tcfg["valid_max_cases"]:
        pick = np.sort(np.random.default_rng(seed + 1).choice(
            len(cases), int(tcfg["valid_max_cases"]), replace=False))
        cases = cases.subset(pick)
    history = TrainHistory(model=name, config={k: v for k, v in cfg.items()})
    vbs = int(tcfg["valid_batch_size"])
    vex = bool(tcfg["valid_exclude_history"])

    if name not in NEURAL_MODELS:
        model_cfg.pop("max_len", None)
        model = create_model(name, vocab, device="cpu", seed=seed, **model_cfg)
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(data)
        history.train_seconds = time.perf_counter() - t0
        history.train_cpu_seconds = time.process_time() - c0
        history.train_events = data.n_events
        history.stopped = "counted"
        if cases is not None:
            metrics = validate(model, cases, vex, vbs)
            history.epochs.append({"epoch": 1, "valid": metrics,
                                   "seconds": round(history.train_seconds, 3)})
            history.best_epoch, history.best_valid = 1, metrics
        return model, history

    # ---- neural
    if model_cfg.get("loss", "auto") == "auto":
        model_cfg["loss"] = _auto_loss(vocab.n_items)
    if model_cfg.get("sparse_emb") is None:
        model_cfg["sparse_emb"] = _auto_sparse_emb(model_cfg["loss"], vocab.n_items)
    has_actions = data.actions is not None and any(len(a) for a in data.actions)
    if model_cfg.get("action_head") is None:  # session-parallel steps train items only
        model_cfg["action_head"] = bool(has_actions) and tcfg["batch_order"] != "parallel"
    feats = tuple(model_cfg.get("features") or ())
    if "category" in feats and data.item_categories is not None:
        model_cfg.setdefault("n_categories", int(data.n_categories))
    if text_vectors is not None:
        model_cfg.setdefault("text_dim", int(np.shape(text_vectors)[1]))
    model: NeuralRecommender = create_model(name, vocab, device=str(device), seed=seed, **model_cfg)
    module = model.module
    if text_vectors is not None:
        module.item_emb.set_text_vectors(torch.as_tensor(np.asarray(text_vectors, np.float32)))
    if data.item_categories is not None:
        module.inputs.set_item_categories(data.item_categories)
    if tcfg["init_from"]:
        _warm_start(model, str(tcfg["init_from"]))
    counts = np.bincount(np.concatenate(data.items) if data.items else np.zeros(0, np.int64),
                         minlength=len(vocab))[: len(vocab)]
    model.item_counts = counts.astype(np.float32)  # saved with the weights (beyond accuracy)
    model.item_counts[0] = 0
    sampler = NegativeSampler(vocab.n_items, counts, float(module.sample_alpha), device, seed)
    order = str(tcfg["batch_order"])
    ordered = by_start_time(data) if order in ("time", "parallel") else data
    rows = build_rows(ordered, model.max_len, bool(tcfg["windows"]))
    if not rows.inputs:
        raise ValueError("no training sequence has two or more known events; nothing to learn")
    steps = None
    if order == "parallel":  # GRU4Rec's session-parallel mini-batches, sequences by start time
        if not hasattr(module, "parallel_loss"):
            raise ValueError(f"batch_order 'parallel' needs a recurrent model, not {name}")
        if module.inputs.features or model_cfg["action_head"]:
            raise ValueError("batch_order 'parallel' trains items only: no side features, "
                             "no action head (action_head=False)")
        steps = session_parallel_steps(ordered.items, int(tcfg["batch_size"]))
    if hasattr(module, "set_item_counts"):
        module.set_item_counts(counts)
    if module.transitions is not None:  # counted from the training sequences only
        module.transitions.fit(data.items, vocab.n_items)
    sparse_w = module.item_emb.sparse_weight
    dense = [p for p in module.parameters() if p is not sparse_w]
    if tcfg["optimizer"] == "adagrad":
        # one optimiser for dense and sparse gradients; no weight decay
        opts = [AdagradM(list(module.parameters()), lr=float(tcfg["lr"]),
                         momentum=float(tcfg["momentum"]))]
    elif tcfg["optimizer"] == "adam":
        opts = [torch.optim.Adam(dense, lr=float(tcfg["lr"]),
                                 weight_decay=float(tcfg["weight_decay"]))]
        if sparse_w is not None:
            opts.append(torch.optim.SparseAdam([sparse_w], lr=float(tcfg["lr"])))
    else:
        raise ValueError(f"optimizer must be 'adam' or 'adagrad', not {tcfg['optimizer']!r}")
    use_a = module.inputs.uses_actions
    use_g = module.inputs.uses_gaps
    best_score, best_state, bad = -1.0, None, 0
    max_s = tcfg["max_seconds"]
    schedule = str(tcfg["lr_schedule"])
    lr_factor(schedule, 0.0)  # a bad name fails before the first epoch
    base_lrs = [[g["lr"] for g in o.param_groups] for o in opts]
    n_epochs = int(tcfg["epochs"])
    warm = min(1.0, float(tcfg["warmup_epochs"]) / max(1, n_epochs))
    scheduled = schedule != "constant" or warm > 0
    steps_per_epoch = 1
    if scheduled:  # batches per epoch (their count does not depend on the shuffling)
        steps_per_epoch = len(steps) if steps is not None else len(
            _batches(rows, int(tcfg["batch_size"]), np.random.default_rng(0), order))
    final_steps = tcfg["final_epoch_steps"]
    final_steps = int(final_steps) if final_steps else None
    if scheduled and final_steps is not None:
        total_steps = max(1, (n_epochs - 1) * steps_per_epoch + min(final_steps, steps_per_epoch))
    else:
        total_steps = max(1, n_epochs * steps_per_epoch)
    step_no = 0
    t_start = time.perf_counter()
    with _Progress(progress) as prog:
        for epoch in range(1, int(tcfg["epochs"]) + 1):
            module.train()
            batches = steps if steps is not None else _batches(rows, int(tcfg["batch_size"]),
                                                                 rng, order)
            state = None
            task = prog.task(f"epoch {epoch}/{n_epochs}", len(batches))
            t0, c0 = time.perf_counter(), time.process_time()
            total_loss, n_ev, timed_out, n_steps = 0.0, 0, False, 0
            cut = final_steps if epoch == n_epochs and final_steps is not None else None
            for bi, idx in enumerate(batches):
                if cut is not None and bi >= cut:
                    break
                if steps is not None:
                    loss, state = module.parallel_loss(
                        state, *(torch.from_numpy(a).to(device)
                                 for a in (idx.inputs, idx.targets, idx.prev)), sampler)
                    k = len(idx.targets)
                else:
                    batch, targets, tacts = _pad(rows, idx, device, use_a, use_g)
                    loss, _ = module.loss(batch, targets,
                                          tacts if model_cfg["action_head"] else None, sampler)
                    k = int((targets > 0).sum())
                if scheduled:
                    prog_f = (step_no + 1) / total_steps  # the last step ends the schedule
                    if max_s:
                        prog_f = max(prog_f, (time.perf_counter() - t_start) / float(max_s))
                    f = lr_factor(schedule, prog_f, warm, float(tcfg["min_lr_ratio"]))
                    for opt, lrs in zip(opts, base_lrs, strict=True):
                        for g, lr0 in zip(opt.param_groups, lrs, strict=True):
                            g["lr"] = lr0 * f
                step_no += 1
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                if tcfg["grad_clip"]:
                    torch.nn.utils.clip_grad_norm_(dense, float(tcfg["grad_clip"]))
                for opt in opts:
                    opt.step()
                n_ev += k
                n_steps += 1
                total_loss += float(loss.detach()) * k
                if bi % 10 == 0 or bi == len(batches) - 1:
                    el = time.perf_counter() - t0
                    prog.update(task, completed=bi + 1, loss=total_loss / max(1, n_ev),
                                rate=n_ev / el if el > 0 else 0.0)
                if max_s and time.perf_counter() - t_start > max_s:
                    timed_out = True
                    break
            secs = time.perf_counter() - t0
            history.train_seconds += secs
            history.train_cpu_seconds += time.process_time() - c0
            history.train_events += n_ev
            rec = {"epoch": epoch, "loss": round(total_loss / max(1, n_ev), 5),
                   "lr": float(f"{opts[0].param_groups[0]['lr']:.3g}"),
                   "seconds": round(secs, 2), "cpu_seconds": round(time.process_time() - c0, 2),
                   "events_per_s": round(n_ev / max(secs, 1e-9), 1),
                   # steps taken; partial: the epoch ended before its last batch
                   "steps": n_steps, "partial": n_steps < len(batches)}
            module.eval()
            if cases is not None:
                tv = time.perf_counter()
                metrics = validate(model, cases, vex, vbs)
                rec["valid"] = {k: round(v, 5) for k, v in metrics.items()}
                rec["valid_seconds"] = round(time.perf_counter() - tv, 2)
                score = metrics["ndcg@10"]
                if score > best_score:
                    best_score, bad = score, 0
                    best_state = copy.deepcopy(module.state_dict())
                    history.best_epoch, history.best_valid = epoch, rec["valid"]
                else:
                    bad += 1
                prog.log(epoch_line(epoch, n_epochs, rec, metrics, history.best_epoch == epoch,
                                    time.perf_counter() - t_start, max_s))
            else:
                history.best_epoch = epoch
                prog.log(epoch_line(epoch, n_epochs, rec, None, False,
                                    time.perf_counter() - t_start, max_s))
            history.epochs.append(rec)
            if cases is not None and on_epoch is not None and on_epoch(epoch, metrics):
                history.stopped = "pruned"
                break
            if timed_out:
                history.stopped = "time_limit"
                break
            if cases is not None and bad >= int(tcfg["patience"]):
                history.stopped = "early_stopping"
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    if module.transitions is not None:
        w = tcfg["transition_weight"]
        if w is None and cases is not None:
            w, scan = choose_transition_weight(model, cases, vex, vbs)
            history.best_valid = {k: round(v, 5) for k, v in scan[w].items()}
            prog.log(f"transition term: weight {w:g} on validation, ndcg@10 "
                     f"{scan[0.0]['ndcg@10']:.4f} → {scan[w]['ndcg@10']:.4f}")
        module.transitions.weight.fill_(float(w or 0.0))
        history.config["transition_weight"] = float(w or 0.0)
    model.trained_actions = bool(model_cfg["action_head"] and has_actions)
    return model, history


def choose_transition_weight(model, cases: Cases, exclude_history: bool,
                             batch_size: int = 1024) -> tuple[float, dict[float, dict]]:
    """The weight of ``model``'s transition term (:mod:`model_core.models.transitions`) with
    the best validation NDCG@10 over :data:`~model_core.models.transitions.WEIGHTS` (the
    smaller on a tie), and every weight's validation metrics. Leaves the weight at 0."""
    from model_core.models.transitions import WEIGHTS

    term = model.module.transitions
    scan: dict[float, dict] = {}
    for w in WEIGHTS:
        term.weight.fill_(w)
        scan[w] = validate(model, cases, exclude_history, batch_size)
    term.weight.fill_(0.0)
    best = max(WEIGHTS, key=lambda w: (scan[w]["ndcg@10"], -w))
    return best, scan


def item_category_table(events, vocab: ItemVocab) -> tuple[np.ndarray, list[str]]:
    """``table[item index]`` = category index (1.., 0 = none) learned from events'
    ``category_id`` (the last one seen per item), and the category ids by index - 1."""
    cats: dict[str, int] = {}
    table = np.zeros(len(vocab), dtype=np.int64)
    for e in events:
        c = getattr(e, "category_id", None)
        if not c:
            continue
        ci = cats.get(c)
        if ci is None:
            ci = cats[c] = len(cats) + 1
        i = vocab.index(e.item_id)
        if i:
            table[i] = ci
    return table, list(cats)


def sequences_from_events(events, vocab: ItemVocab | None = None, by: str = "user"):
    """Per-user (``by="user"``) or per-session (``"session"``) sequences of ``events``, the
    vocabulary (built from ``events`` when not given) and the item -> category table."""
    from model_core.sequences import build_vocab, group_by_user, session_keys

    events = list(events)
    vocab = vocab if vocab is not None else build_vocab(events)
    if by == "session":
        seqs = group_by_user(events, vocab, keys=session_keys(events))
    elif by == "user":
        seqs = group_by_user(events, vocab)
    else:
        raise ValueError(f"group sequences by 'user' or 'session', not {by!r}")
    table, cat_ids = item_category_table(events, vocab)
    return seqs, vocab, (table if cat_ids else None)


def data_hash(paths: Sequence[str]) -> str:
    """sha256 (first 16 hex digits) of the given files' bytes, for checkpoint metadata."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


__all__ = ["DENSE_EMB_MAX_ITEMS", "LR_SCHEDULES", "TRAIN_DEFAULTS", "Cases", "TrainHistory", "as_cases", "case_ranks",
           "choose_transition_weight",
           "data_hash", "item_category_table", "lr_factor", "sequences_from_events", "train_model",
           "validate"]
