"""Online learning measured honestly: the same replay, frozen and learning, side by side.

    report = compare_learning(model, stream_events, warm_events, LearnSchedule(every=1000))
    report["frozen"]["hr@20"], report["online"]["hr@20"], report["paired_windows"]["hr@20"]

Both runs go through :func:`replay_stream`: the stream's prequential engine
(:class:`~model_core.prequential.PrequentialEngine`: each event is scored against the top-K
predicted after its user's previous event, then appended, then predicted from) over the
same events. The **frozen** run uses a copy of the model as it was trained; the **online**
run gives each engine batch, after it was scored and predicted, to an
:class:`~model_core.learn.learner.OnlineLearner`, which updates the model after every
``schedule.every`` events. Engine batches never cross an update, so every prediction was made
by the model version current at its event, as in a stream whose learner publishes after the
same events; and the figures do not depend on ``batch_size``.

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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from model_core.learn.learner import OnlineLearner
from model_core.learn.schedule import LearnSchedule
from model_core.metrics import MISS, bootstrap_ci, case_matrix, metric_names, paired_bootstrap
from model_core.prequential import PrequentialEngine, warm_states
from model_core.sequence_state import UserState
from model_core.significance import DEFAULT_WINDOWS, paired_windows, window_means


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
    versions: list[str] = field(default_factory=list)  # the model version after each update
    seconds: float = 0.0  # wall time of the whole replay


def _drop_slots(states: dict, slots: list[int]) -> None:
    """Reused vocabulary slots no longer mean their old item: unknown (0) in every state."""
    drop = np.asarray(slots, dtype=np.int32)
    for st in states.values():
        if np.isin(st.items, drop).any():
            st.items = np.where(np.isin(st.items, drop), 0, st.items).astype(np.int32)
        if len(st.last_pred_items) and np.isin(st.last_pred_items, drop).any():
            st.last_pred_items = np.where(np.isin(st.last_pred_items, drop), 0,
                                          st.last_pred_items).astype(np.int32)


def replay_stream(model, events: Sequence, warm_events: Sequence = (),
                  learner: OnlineLearner | None = None, k: int = 20, max_len: int = 50,
                  batch_size: int = 1000, exclude_history: bool = False,
                  learner_warm: Sequence | None = None) -> StreamRun:
    """Test-then-learn over ``events`` (in the order given) with the stream's engine, the
    model learning through ``learner`` when given (see the module docstring).

    ``learner_warm``: the learner's history when it differs from the users' states'
    ``warm_events`` (a stream whose workers start with empty states while ``seqstream
    learner --warm`` reads the training log: ``warm_events=()``, ``learner_warm=train``)."""
    t0 = time.perf_counter()
    trained = frozenset(model.vocab.item_ids(range(1, len(model.vocab))))
    engine = PrequentialEngine(model, max_len=max_len, k=k, exclude_history=exclude_history)
    states: dict[str, UserState] = {}
    warm_states(engine, states, warm_events, batch_size)
    if learner is not None:
        learner.warm(warm_events if learner_warm is None else learner_warm)
    run = StreamRun()
    events = list(events)
    i = 0
    while i < len(events):
        size = batch_size if learner is None else min(batch_size, learner.until_update())
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
        if learner is not None:
            run.n_naming_new += int(learner.items.is_new(res.topk.items).any(axis=1).sum())
            for upd in learner.learn(chunk):
                run.versions.append(upd.version)
                if upd.evicted:
                    _drop_slots(states, upd.evicted)
    run.seconds = time.perf_counter() - t0
    return run


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
    out["replay_seconds"] = round(run.seconds, 3)
    return out, per_case


_windows = window_means  # the old private name, kept for callers that used it


def compare_learning(model, events: Sequence, warm_events: Sequence = (),
                     schedule: LearnSchedule | None = None, ks: Sequence[int] = (20,),
                     n_windows: int = DEFAULT_WINDOWS, n_boot: int = 1000, seed: int = 0,
                     max_len: int = 50, batch_size: int = 1000, exclude_history: bool = False,
                     learner_warm: Sequence | None = None) -> dict:
    """Frozen vs online on the same replay (see the module docstring). ``model`` is the one
    that learns (changed in place); the frozen run uses a deep copy taken first.
    ``learner_warm``: see :func:`replay_stream`."""
    schedule = schedule or LearnSchedule()
    ks = tuple(sorted({int(k) for k in ks}))
    kmax = ks[-1]
    learner = OnlineLearner(model, schedule, max_len=max_len)  # refuses a model it cannot update
    frozen_model = copy.deepcopy(model)
    frozen = replay_stream(frozen_model, events, warm_events, None, kmax, max_len, batch_size,
                           exclude_history)
    online = replay_stream(model, events, warm_events, learner, kmax, max_len, batch_size,
                           exclude_history, learner_warm)
    f_sum, f_case = _summary(frozen, ks, n_boot, seed)
    o_sum, o_case = _summary(online, ks, n_boot, seed)
    users = np.asarray(online.users)
    paired_w, paired_e, per_window = {}, {}, {"frozen": {}, "online": {}}
    for name in metric_names(ks):
        pw = paired_windows(o_case[name], f_case[name], n_windows, n_boot, seed)
        per_window["frozen"][name] = [round(x, 5) for x in pw.pop("b_windows")]
        per_window["online"][name] = [round(x, 5) for x in pw.pop("a_windows")]
        pw["windows_online_better"] = pw["windows_a_better"]
        paired_w[name] = pw
        paired_e[name] = paired_bootstrap(o_case[name], f_case[name], n_boot, seed=seed,
                                          clusters=users)
    learned = learner.events_learned
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
        },
    })


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


__all__ = ["StreamRun", "compare_learning", "replay_stream"]
