"""Online learning measured honestly: the same replay, frozen and learning, side by side.

    report = compare_learning(model, stream_events, warm_events, LearnSchedule(every=250))
    report["frozen"]["hr@20"], report["online"]["hr@20"], report["paired_windows"]["hr@20"]

Both runs go through :func:`replay_stream`: the stream's prequential engine
(:class:`~model_core.prequential.PrequentialEngine`: each event is scored against the top-K
predicted after its user's previous event, then appended, then predicted from) over the
same events. The **frozen** run uses a copy of the model as it was trained; the **online**
run gives each engine batch, after it was scored and predicted, to an
:class:`~model_core.learn.learner.OnlineLearner`, which updates the model after every
``schedule.every`` events. Engine batches never cross an update, so every prediction was made
by the model version serving at its event, as in a stream whose learner publishes after the
same events; and the figures do not depend on ``batch_size``. Which version serves is the
validation gate's decision (:class:`~model_core.learn.gate.Gate`, the stream learner's own
code; off by default: then every version serves at once): a version serves from the
micro-batch after the one that validated it, and a refused one never serves.

Reported: HR/NDCG/MRR@K over the stream with clustered (per-user) bootstrap intervals; the
share of predictions that name an item born after training (a slot whose item the trained
vocabulary did not hold), the share of scored events whose item is such a new item and how
many of those were hit (``new_item_hits``); the metrics per window of consecutive scored
events and a paired bootstrap of online minus frozen over those windows (the one
sliding-window test, :func:`model_core.significance.paired_windows`, which ``compare
--protocol prequential`` uses too) and over events (clustered by user); the learner's cost
(events learned per second of update time).
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from model_core.exceptions import ModelCoreError
from model_core.learn.gate import Gate
from model_core.learn.learner import OnlineLearner
from model_core.learn.schedule import LearnSchedule
from model_core.metrics import MISS, bootstrap_ci, case_matrix, metric_names, paired_bootstrap
from model_core.prequential import PrequentialEngine, warm_states
from model_core.sequence_state import UserState
from model_core.significance import DEFAULT_WINDOWS, paired_windows


@dataclass
class StreamRun:
    """Per scored event: rank (1-based in the previous top-K, MISS if absent), user, whether
    its item was born after training; and per-run counts."""

    ranks: list[int] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    new_target: list[bool] = field(default_factory=list)
    n_events: int = 0
    n_predictions: int = 0
    n_naming_new: int = 0  # predictions (top-K lists) with at least one new item
    versions: list[str] = field(default_factory=list)  # each version that served, in turn
    refused: int = 0  # versions the gate kept from serving
    seconds: float = 0.0  # wall time of the whole replay
    cpu_seconds: float = 0.0  # CPU time of the whole replay (scoring, learning, retraining)
    train_cpu_seconds: float = 0.0  # CPU time of the periodic retraining in it


def _drop_slots(states: dict, slots: list[int]) -> None:
    """Reused vocabulary slots no longer mean their old item: unknown (0) in every state."""
    drop = np.asarray(slots, dtype=np.int32)
    for st in states.values():
        if np.isin(st.items, drop).any():
            st.items = np.where(np.isin(st.items, drop), 0, st.items).astype(np.int32)
        if len(st.last_pred_items) and np.isin(st.last_pred_items, drop).any():
            st.last_pred_items = np.where(np.isin(st.last_pred_items, drop), 0,
                                          st.last_pred_items).astype(np.int32)


def _remap_states(states: dict, old_vocab, new_vocab) -> None:
    """Item indices of ``old_vocab`` in every state -> the same items in ``new_vocab`` (an
    item the new vocabulary lacks, or one unknown before, is 0)."""
    ids = old_vocab.item_ids(range(len(old_vocab)))
    table = new_vocab.indices(ids).astype(np.int32)
    table[0] = 0
    for st in states.values():
        st.items = table[st.items]
        if len(st.last_pred_items):
            st.last_pred_items = table[st.last_pred_items]


def _new_mask(vocab, trained: frozenset) -> np.ndarray:
    """Per slot of ``vocab``: whether its item was born after training."""
    ids = vocab.item_ids(range(len(vocab)))
    return np.fromiter((i > 0 and x not in trained for i, x in enumerate(ids)), bool, len(ids))


def replay_stream(model, events: Sequence, warm_events: Sequence = (),
                  learner: OnlineLearner | None = None, k: int = 20, max_len: int = 50,
                  batch_size: int = 1000, exclude_history: bool = False,
                  learner_warm: Sequence | None = None,
                  retrain: Callable[[list], object] | None = None,
                  retrain_every_ms: int = 0) -> StreamRun:
    """Test-then-learn over ``events`` (in the order given) with the stream's engine, the
    model learning through ``learner`` when given (see the module docstring).

    ``learner_warm``: the learner's history when it differs from the users' states'
    ``warm_events`` (a stream whose workers start with empty states while ``seqstream
    learner --warm`` reads the training log: ``warm_events=()``, ``learner_warm=train``).

    ``retrain`` (with ``retrain_every_ms`` > 0, no ``learner``): the periodic full
    retraining baseline. At every ``retrain_every_ms`` of event time after the first
    streamed event, before the first event at or past that time, ``retrain(warm_events +
    the events streamed so far)`` returns a new model that replaces the current one; the
    users' sequences and last predictions are carried over into its vocabulary. Its time is
    :attr:`StreamRun.train_cpu_seconds`."""
    t0, c_start = time.perf_counter(), time.process_time()
    trained = frozenset(model.vocab.item_ids(range(1, len(model.vocab))))
    engine = PrequentialEngine(model, max_len=max_len, k=k, exclude_history=exclude_history)
    states: dict[str, UserState] = {}
    warm_states(engine, states, warm_events, batch_size)
    gate = None
    if learner is not None:
        learner.warm(warm_events if learner_warm is None else learner_warm)
        gate = Gate(learner, k, exclude_history)
        if gate.served is not model:  # gated: a copy serves until a version passes
            engine = PrequentialEngine(gate.served, max_len=max_len, k=k,
                                       exclude_history=exclude_history)
        batch: list = []  # the events of the micro-batch under way (the gate's window)
    run = StreamRun()
    events = list(events)
    periodic = retrain is not None and retrain_every_ms > 0 and learner is None and events
    times = np.fromiter((e.timestamp_ms for e in events), np.int64, len(events))
    due = int(times[0]) + retrain_every_ms if periodic else 0
    new_mask = _new_mask(model.vocab, trained) if periodic or gate else None
    i = 0
    while i < len(events):
        size = batch_size if learner is None else min(batch_size, learner.until_update())
        if periodic:
            if times[i] >= due:
                c0 = time.process_time()
                old = engine.model.vocab
                model = retrain([*warm_events, *events[:i]])
                engine = PrequentialEngine(model, max_len=max_len, k=k,
                                           exclude_history=exclude_history)
                _remap_states(states, old, model.vocab)
                new_mask = _new_mask(model.vocab, trained)
                run.train_cpu_seconds += time.process_time() - c0
                run.versions.append(f"retrain@{i}")
                while due <= times[i]:
                    due += retrain_every_ms
            size = min(size, int(np.searchsorted(times, due, side="left")) - i)
        chunk = events[i:i + size]
        i += len(chunk)
        res = engine.process(chunk, states)
        for sc in res.scores:
            ev = chunk[sc.index]
            run.ranks.append(sc.rank)
            run.users.append(ev.user_id)
            run.new_target.append(ev.item_id not in trained)
        run.n_events += len(chunk)
        run.n_predictions += len(res.topk.items)
        if new_mask is not None and learner is None:
            run.n_naming_new += int(new_mask[res.topk.items].any(axis=1).sum())
        if learner is not None:
            named = (learner.items.is_new(res.topk.items) if engine.model is learner.model
                     else new_mask[res.topk.items])  # a held-back version: its own slots
            run.n_naming_new += int(named.any(axis=1).sum())
            batch += chunk
            if learner.until_update() <= len(chunk) and gate.decide(batch) is not None:
                if gate.last.passed:  # the held version serves from the next event on
                    engine = _serve(engine, gate, states, run)
                    new_mask = _new_mask(engine.model.vocab, trained)
                else:
                    run.refused += 1
            for upd in learner.learn(chunk):
                batch = []
                if gate.hold(upd.evicted, upd.users):
                    engine = _serve(engine, gate, states, run)
    run.seconds = time.perf_counter() - t0
    run.cpu_seconds = time.process_time() - c_start
    return run


def _serve(engine: PrequentialEngine, gate: Gate, states: dict, run: StreamRun
           ) -> PrequentialEngine:
    """The gate's served version scores from now on (the states drop the slots reused
    since the version before); the engine is the same one when it serves the learner's
    own model (no gate)."""
    drop = gate.take_evicted()
    if drop:
        _drop_slots(states, drop)
    run.versions.append(str(gate.served.version))
    if engine.model is gate.served:
        return engine
    return PrequentialEngine(gate.served, max_len=engine.max_len, k=engine.k,
                             exclude_history=engine.exclude_history)


def _summary(run: StreamRun, ks: tuple[int, ...], n_boot: int, seed: int) -> tuple[dict, dict]:
    ranks = np.asarray(run.ranks, dtype=np.float64)
    per_case = case_matrix(ranks, ks)
    users = np.asarray(run.users)
    new = np.asarray(run.new_target, dtype=bool)
    out: dict = {}
    for name in metric_names(ks):
        v = per_case[name]
        out[name] = float(v.mean()) if len(v) else float("nan")
        out[f"{name}_ci"] = list(bootstrap_ci(v, n_boot, seed=seed, clusters=users))
    kmax = ks[-1]
    out["new_item_share"] = run.n_naming_new / max(1, run.n_predictions)
    out["new_item_targets"] = float(new.mean()) if len(new) else 0.0
    out["new_item_hits"] = int(((ranks > MISS) & (ranks <= kmax) & new).sum())
    out["versions"] = len(run.versions)
    out["refused"] = run.refused
    out["replay_seconds"] = round(run.seconds, 3)
    return out, per_case


def _paired_windows(a: np.ndarray, b: np.ndarray, n_windows: int, n_boot: int,
                    seed: int) -> tuple[dict, list, list]:
    """:func:`model_core.significance.paired_windows` of the per-case values ``a - b``, its
    two window series taken out; ``windows_online_better`` names the first run's wins (the
    key the learner's JSON has had since session 5)."""
    pw = paired_windows(a, b, n_windows, n_boot, seed)
    aw, bw = pw.pop("a_windows"), pw.pop("b_windows")
    pw["windows_online_better"] = pw["windows_a_better"]
    return pw, aw, bw


def compare_learning(model, events: Sequence, warm_events: Sequence = (),
                     schedule: LearnSchedule | None = None, ks: Sequence[int] = (20,),
                     n_windows: int = DEFAULT_WINDOWS, n_boot: int = 1000, seed: int = 0,
                     max_len: int = 50, batch_size: int = 1000, exclude_history: bool = False,
                     learner_warm: Sequence | None = None,
                     retrain: Callable[[list], object] | None = None,
                     retrain_every_ms: int = 0, texts=None) -> dict:
    """Frozen vs online on the same replay (see the module docstring). ``model`` is the one
    that learns (changed in place); the frozen run uses a deep copy taken first.
    ``learner_warm``: see :func:`replay_stream`.

    With ``retrain`` and ``retrain_every_ms`` (see :func:`replay_stream`) a third replay,
    ``retrain``, retrains the model from scratch on everything seen so far at that period of
    event time (the ADER-style baseline), and the report adds its figures, its per-window
    series, ``paired_windows_retrain`` (retrain - frozen) and
    ``paired_windows_online_vs_retrain`` (online - retrain). ``cpu_seconds`` of each run
    counts the whole replay (scoring included); the learner's and the retraining's own
    share are ``learner.cpu_seconds`` and ``retrain.train_cpu_seconds``. ``texts``: item
    descriptions (:class:`~model_core.learn.texts.ItemTexts`) a text or fused model starts
    new items from."""
    schedule = schedule or LearnSchedule()
    ks = tuple(sorted({int(k) for k in ks}))
    kmax = ks[-1]
    # refuses a model it cannot update, or texts for an ID model
    learner = OnlineLearner(model, schedule, max_len=max_len, texts=texts)
    frozen_model = copy.deepcopy(model)
    periodic = retrain is not None and retrain_every_ms > 0
    base_model = copy.deepcopy(model) if periodic else None
    frozen = replay_stream(frozen_model, events, warm_events, None, kmax, max_len, batch_size,
                           exclude_history)
    online = replay_stream(model, events, warm_events, learner, kmax, max_len, batch_size,
                           exclude_history, learner_warm)
    runs = {"frozen": frozen, "online": online}
    if periodic:
        runs["retrain"] = replay_stream(base_model, events, warm_events, None, kmax, max_len,
                                        batch_size, exclude_history, retrain=retrain,
                                        retrain_every_ms=retrain_every_ms)
    sums, cases = {}, {}
    for key, run in runs.items():
        sums[key], cases[key] = _summary(run, ks, n_boot, seed)
        sums[key]["cpu_seconds"] = round(run.cpu_seconds, 3)
    f_sum, f_case, o_sum, o_case = sums["frozen"], cases["frozen"], sums["online"], cases["online"]
    users = np.asarray(online.users)
    paired_w, paired_e = {}, {}
    per_window: dict = {key: {} for key in runs}
    paired_r: dict = {}
    paired_or: dict = {}
    for name in metric_names(ks):
        pw, ow, fw = _paired_windows(cases["online"][name], cases["frozen"][name], n_windows,
                                     n_boot, seed)
        per_window["frozen"][name] = [round(x, 5) for x in fw]
        per_window["online"][name] = [round(x, 5) for x in ow]
        paired_w[name] = pw
        paired_e[name] = paired_bootstrap(o_case[name], f_case[name], n_boot, seed=seed,
                                          clusters=users)
        if periodic:
            paired_r[name], rw, _ = _paired_windows(cases["retrain"][name],
                                                    cases["frozen"][name], n_windows, n_boot, seed)
            per_window["retrain"][name] = [round(x, 5) for x in rw]
            paired_or[name], _, _ = _paired_windows(cases["online"][name],
                                                    cases["retrain"][name], n_windows, n_boot,
                                                    seed)
    learned = learner.events_learned
    extra: dict = {}
    if periodic:
        r = runs["retrain"]
        sums["retrain"].update(every_ms=int(retrain_every_ms), retrains=len(r.versions),
                               train_cpu_seconds=round(r.train_cpu_seconds, 3))
        extra = {"retrain": sums["retrain"], "paired_windows_retrain": paired_r,
                 "paired_windows_online_vs_retrain": paired_or}
    return _json_ready({
        "schedule": schedule.to_dict(),
        "model": getattr(model, "name", type(model).__name__),
        "model_version_start": learner.base_version,
        "model_version_end": learner.version,
        "n_events": online.n_events, "n_scored": len(online.ranks),
        "ks": list(ks),
        "frozen": f_sum, "online": o_sum,
        "paired_windows": paired_w, "paired_events": paired_e, "per_window": per_window,
        "learner": {
            "updates": learner.n_updates, "events_learned": learned,
            "seconds": round(learner.seconds, 3), "cpu_seconds": round(learner.cpu_seconds, 3),
            "events_per_s": round(learned / learner.seconds, 1) if learner.seconds > 0 else None,
            "items_added": int(learner.items.born.sum()),
            "vocab_size": len(model.vocab) - 1,
            "replay_held": len(learner.replay),
            **({"item_texts": texts.summary()} if texts is not None else {}),
        },
        **extra,
    })


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_period(text: str) -> int:
    """``"1d"``, ``"6h"``, ``"30m"``, ``"90s"``, ``"500ms"`` -> milliseconds (``"0"`` or
    ``"none"``: 0, no periodic retraining)."""
    t = text.strip().lower()
    if t in ("0", "none", "off"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", t)
    if m is None or float(m.group(1)) <= 0:
        raise ModelCoreError(f"--retrain-every: {text!r} is not a period of event time such "
                             "as 1d, 6h, 30m, 90s (or 0 for none)")
    return int(round(float(m.group(1)) * _UNITS_MS[m.group(2)]))


def _json_ready(v):
    """NaN -> None and numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(v, dict):
        return {k: _json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_ready(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


__all__ = ["StreamRun", "compare_learning", "parse_period", "replay_stream"]
