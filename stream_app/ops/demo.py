"""The demo: the whole of seqstream on one machine, from nothing.

Start the embedded broker; take a log (``--data``) or generate one; train a model on the first
part of the timeline; start a worker; replay the rest through Kafka while showing live
progress; shut everything down cleanly; compare the stream's online figures with the offline
prequential computation over the same replayed events; end with a summary (and ``--json``).

With ``--learn SCHEDULE`` (``demo --learn every=250``) a learner (``seqstream learner``) runs
beside the worker: the synthetic log's transitions change at ``change_at`` and
``new_items`` items are born from ``born_from`` (after the training part); the learner
publishes a version every N events and the worker swaps to each. The demo runs them in
**lockstep** (``SEQSTREAM_LEARN_LOCKSTEP=N``, a one-partition events topic; see
:mod:`stream_app.worker.model_swap`) so each event is scored by the version the offline
replay uses for it, and compares three figures over the replayed events (HR/NDCG/MRR@20 and
``new_item_hits``, hits on items born after training): ``online`` (the worker's windows),
``prequential_offline`` (the same learner code over the same events,
:func:`model_core.learn.measure.compare_learning`) and ``frozen`` (that replay without
learning). ``online_equals_offline`` says whether the first two agree (to 1e-9). A gated
schedule (``--learn every=100,max_items=80,gate=100,margin=0``: the gate of
:mod:`model_core.learn.gate`) runs the same way, the worker keeping the served version for
the events of a refused one; ``versions_refused`` counts them, the learner's and the
replay's.

Beyond accuracy (``beyond``, without ``--learn``): novelty, ARP, long-tail share and (where
the events carry categories) ILD at the first metric K over the replayed events, ``online``
from the windows (:func:`~stream_app.windows.aggregation.aggregate_beyond`) beside
``prequential_offline`` (:func:`model_core.evaluate.evaluate_prequential` over the same
events, the log's categories). Novelty, ARP and the long-tail share use the model's training
counts and agree to 1e-9 (``equal``); the worker learns categories from the stream, so online
ILD leaves out the pairs of an item before its first event (``ild_differs_by``: online minus
offline).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from model_core.checkpoint import save_model
from model_core.metrics import percentiles
from model_core.models import create_model
from model_core.prequential import run_prequential
from model_core.terminal import wrapped
from model_core.train import sequences_from_events, train_model
from schemas.event import Event
from schemas.metrics import MetricsWindow
from stream_app.kafka.broker import EmbeddedBroker
from stream_app.kafka.replay import load_guessed, replay_events
from stream_app.kafka.topics import Follower, ensure_topics, read_topic
from stream_app.learner.service import LearnerProcess
from stream_app.settings import Settings, load_settings
from stream_app.windows.aggregation import aggregate_beyond, aggregate_windows
from stream_app.windows.persistence import latest_windows
from stream_app.worker.process import WorkerProcess

#: Training settings of the demo's sequence model (small data, CPU, about a minute).
DEMO_TRAIN = {"epochs": 10, "batch_size": 32, "lr": 3e-3, "dim": 64, "max_seconds": 120}


@dataclass
class DemoOptions:
    events: int = 20000
    data: str | None = None
    fmt: str | None = None
    model: str = "gru4rec"
    train_fraction: float = 0.5
    speed: float | None = None
    seed: int = 0
    window_s: int = 600
    out_dir: str | None = None
    live: bool = True
    report: bool = True
    learn: str | None = None  # a learner schedule ("every=250"): the learner runs beside
    change_at: float = 0.6  # --learn's synthetic log: transitions change here (fraction)
    new_items: int = 200  # ... items born during the log
    born_from: float = 0.5  # ... from this fraction on


@dataclass
class _ReplayProgress:
    """The replay thread's progress, read by the live view."""

    sent: int = 0
    report: object = None


@dataclass
class LiveCounts:
    predictions: int = 0
    dead_letters: int = 0
    windows: list[MetricsWindow] = field(default_factory=list)


def _load_events(opts: DemoOptions, say=print) -> tuple[list[Event], int, str]:
    """The demo's log, sorted by time: ``--data`` read as ``seqstream train`` reads a file
    without reader flags (``--format``, else as ``seqstream inspect`` guesses, one line
    saying so; :func:`~stream_app.kafka.replay.load_guessed`), its first ``events`` kept,
    else a synthetic one. Before, ``--data`` went by the file name alone, so a CSV whose
    columns are not named like the Event fields (RetailRocket's) could not be read."""
    if opts.data:
        events, rejected, fmt, how = load_guessed(opts.data, opts.fmt, "--data", "--format")
        if how:
            say(wrapped(f"read as `seqstream inspect` guesses: {how}", f"{opts.data}: "))
        if opts.events and len(events) > opts.events:
            events = events[: opts.events]
        return events, len(rejected), f"{opts.data} ({fmt})"
    from model_core.datasets.synth import generate

    if opts.learn:
        events = generate(opts.events, seed=opts.seed, change_at=opts.change_at,
                          new_items=opts.new_items, born_from=opts.born_from)
        what = (f"synthetic ({opts.events} events, seed {opts.seed}, change at "
                f"{opts.change_at:g}, {opts.new_items} items born from {opts.born_from:g})")
    else:
        events = generate(opts.events, seed=opts.seed)
        what = f"synthetic ({opts.events} events, seed {opts.seed})"
    events.sort(key=lambda e: e.timestamp_ms)
    return events, 0, what


def _train(name: str, train: list[Event], out: Path, say) -> tuple[object, object, float]:
    seqs, vocab, cats = sequences_from_events(train)
    t0 = time.monotonic()
    if name in ("gru4rec", "sasrec"):
        model, _ = train_model(name, seqs, config=dict(DEMO_TRAIN), progress=False,
                               vocab=vocab, item_categories=cats)
    else:
        model = create_model(name, vocab).fit(seqs)
    seconds = time.monotonic() - t0
    save_model(model, out, meta={"source": "demo", "train_events": len(train)})
    popular = create_model("popular", vocab).fit(seqs)
    say(f"trained {name} on {len(train):,} events ({vocab.n_items:,} items) in {seconds:.1f} s")
    return model, popular, seconds


def _follow(settings: Settings, live: LiveCounts, expect: int) -> list[Follower]:
    """Count predictions (up to ``expect``, the replayed events) and dead letters and collect
    metrics windows while the demo runs: three :class:`~stream_app.kafka.topics.Follower` s,
    stopped (and joined) by the demo before its broker stops."""

    def count(attr: str):
        return lambda _m: setattr(live, attr, getattr(live, attr) + 1)

    return [Follower(settings, "predictions", count("predictions"), expect).start(),
            Follower(settings, "dead-letters", count("dead_letters")).start(),
            Follower(settings, "metrics",
                     lambda m: live.windows.append(MetricsWindow.from_json(m.value))).start()]


def _live_table(live: LiveCounts, sent: int, total: int):
    from rich.table import Table

    t = Table(title="seqstream demo (HR, NDCG, p99: the last closed window)",
              show_header=True)
    # short headers, unwrapped figures: it fits 80 columns without cutting a count
    t.add_column("events sent", no_wrap=True)
    t.add_column("predictions", no_wrap=True)
    t.add_column("dead letters")
    t.add_column("windows")
    t.add_column("HR@10/NDCG@10", no_wrap=True)
    t.add_column("p99 ms")
    last = live.windows[-1] if live.windows else None
    hr = (f"{last.metrics.get('hr@10', 0):.3f}/{last.metrics.get('ndcg@10', 0):.3f}"
          if last and last.metrics else "-")
    p99 = f"{last.latency_p99_ms:.0f}" if last and last.latency_p99_ms is not None else "-"
    t.add_row(f"{sent:,}/{total:,}", f"{live.predictions:,}", f"{live.dead_letters:,}",
              str(len(live.windows)), hr, p99)
    return t


def run_demo(opts: DemoOptions, say=print) -> dict:
    out = Path(opts.out_dir or tempfile.mkdtemp(prefix="seqstream-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    events, file_rejected, source = _load_events(opts, say)
    if len(events) < 100:
        from schemas.exceptions import SeqstreamError

        raise SeqstreamError(f"the demo needs at least 100 events, got {len(events)}")
    cut = int(len(events) * opts.train_fraction)
    train, replay = events[:cut], events[cut:]
    say(wrapped(f"{source}; training on the first {len(train):,} events, "
                f"replaying the last {len(replay):,}", "data: "))
    model, popular, train_s = _train(opts.model, train, out / "checkpoint", say)
    schedule = learn_overrides = None
    if opts.learn:
        schedule, learn_overrides = _learn_settings(opts, train, replay, out)

    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        settings = load_settings(broker_url=broker.url, model_path=str(out / "checkpoint"),
                                 window_s=opts.window_s, data_dir=str(out / "worker-data"),
                                 web_port=0, idle_close_s=2.0, app_id="seqstream-demo",
                                 **(learn_overrides or {}))
        ensure_topics(settings)
        say(wrapped(f"broker {broker.url}; starting a worker"
                    + (f" and a learner ({opts.learn}, in lockstep)" if opts.learn else "")))
        worker = WorkerProcess(settings, out / "worker.log").start()
        learner = LearnerProcess(settings, out / "learner.log").start() if opts.learn else None
        followers: list[Follower] = []
        try:
            worker.wait_ready(120)
            if learner is not None:
                learner.wait_ready(120)
            live = LiveCounts()
            followers = _follow(settings, live, len(replay))
            progress = _ReplayProgress()
            t0 = time.monotonic()

            def on_progress(n: int) -> None:
                progress.sent = n

            def do_replay() -> None:
                progress.report = replay_events(settings, replay, speed=opts.speed,
                                                progress=False, on_progress=on_progress)

            th = threading.Thread(target=do_replay, daemon=True)
            th.start()
            deadline = time.monotonic() + max(300.0, len(replay) / 200.0)
            with _maybe_live(opts.live) as update:
                while time.monotonic() < deadline:
                    if not th.is_alive():
                        progress.sent = len(replay)
                    update(_live_table(live, progress.sent, len(replay)))
                    if not th.is_alive() and live.predictions >= len(replay):
                        break
                    time.sleep(0.25)
            stream_s = time.monotonic() - t0
            th.join(5)
            worker.stop()  # clean shutdown: open windows are flushed to the metrics topic
            if learner is not None:
                learner.stop()
        finally:
            for proc in (worker, learner):
                if proc is not None and proc.alive():
                    proc.kill()
            for f in followers:  # their consumers closed while the broker is up
                f.stop()
        preds = read_topic(settings, "predictions", idle_s=2)
        # a window can be republished (crash, clean stop): keep the latest record per key
        windows = latest_windows(read_topic(settings, "metrics", idle_s=2))
        dead = read_topic(settings, "dead-letters", idle_s=1)
        alerts = _read_alerts(settings)

    tumbling = [w for w in windows if w.window_kind == "tumbling"]
    online = aggregate_windows(tumbling)
    offline = run_prequential(model, replay, max_len=settings.max_seq_len, k=settings.top_k,
                              ks=settings.metric_ks)
    base = run_prequential(popular, replay, max_len=settings.max_seq_len, k=settings.top_k,
                           ks=settings.metric_ks)
    # Windows carry latency percentiles; the worst window's p99 bounds the run's p99.
    lat = [w.latency_p99_ms for w in tumbling if w.latency_p99_ms is not None]
    summary = {
        "source": source,
        "model": opts.model,
        "model_version": model.version,
        "train_events": len(train),
        "train_seconds": round(train_s, 2),
        "events_in": len(replay),
        "file_rejected": file_rejected,
        "predictions_out": len(preds),
        "dead_letters": len(dead),
        "windows": len(tumbling),
        "alerts": len(alerts),
        "hr_at_10": online.get("hr@10"),
        "ndcg_at_10": online.get("ndcg@10"),
        "mrr": online.get("mrr@10"),
        "events_per_s": round(len(replay) / stream_s, 1) if stream_s > 0 else None,
        "latency_p99_ms": max(lat) if lat else None,
        "latency_p99_ms_median_window": percentiles(lat, [50])[0] if lat else None,
        "online": {k: online.get(k) for k in ("hr@10", "ndcg@10", "mrr@10")},
        "prequential_offline": {k: offline.metrics().get(k) for k in ("hr@10", "ndcg@10",
                                                                        "mrr@10")},
        "baseline_popular": {k: base.metrics().get(k) for k in ("hr@10", "ndcg@10", "mrr@10")},
        "scored_online": sum(w.scored for w in tumbling),
        "scored_offline": offline.n_scored,
        "out_dir": str(out),
        "wall_seconds": round(time.monotonic() - t_start, 1),
    }
    if opts.learn:
        summary.update(_learning_summary(model, train, replay, schedule, settings, online,
                                         preds, tumbling, learner))
    else:
        summary["beyond"] = _beyond_summary(model, events, replay, settings, tumbling)
    if opts.report:
        summary["report"] = _write_report(windows, alerts, out / "report", say)
    return summary


def _beyond_summary(model, events: list[Event], replay: list[Event], settings,
                    tumbling: list) -> dict:
    """Beyond-accuracy figures at the first metric K: the windows' against
    evaluate_prequential's over the same replayed events (see the module's docstring)."""
    from model_core.evaluate import evaluate_prequential, item_category_table

    k = settings.metric_ks[0]
    cats = item_category_table(model, {e.item_id: e.category_id for e in events
                                       if e.category_id is not None})
    offline = evaluate_prequential(model, replay, ks=settings.metric_ks,
                                   exclude_history=settings.exclude_history,
                                   max_len=settings.max_seq_len, n_boot=0,
                                   item_categories=cats)
    keys = [f"{m}@{k}" for m in ("novelty", "arp", "aplt", "ild")]
    on_all = aggregate_beyond(tumbling)
    on = {key: on_all[key] for key in keys if key in on_all}
    off = {key: offline.metrics[key] for key in keys if key in offline.metrics}
    counted = [key for key in keys[:3] if key in off]
    return {
        "k": k, "online": on, "prequential_offline": off,
        "equal": bool(counted) and all(key in on and abs(on[key] - off[key]) <= 1e-9
                                       for key in counted),
        "ild_differs_by": ((on[keys[3]] - off[keys[3]])
                           if keys[3] in on and keys[3] in off else None),
        "gini_offline": offline.metrics.get(f"gini@{k}"),
    }


def _learn_settings(opts: DemoOptions, train: list[Event], replay: list[Event],
                    out: Path) -> tuple[object, dict]:
    """The schedule and the settings of a learning demo: one partition, lockstep, every
    version kept (the worker loads each by name), the learner warmed on the training log."""
    from model_core.datasets.synth import write_jsonl
    from model_core.learn import LearnSchedule

    schedule = LearnSchedule.parse(opts.learn)
    write_jsonl(train, out / "train.jsonl")
    return schedule, {
        "partitions": 1, "model_watch_dir": str(out / "versions"), "model_poll_s": 0.2,
        "learn_schedule": opts.learn, "learn_lockstep": schedule.every,
        "learn_keep": len(replay) // schedule.every + 2, "learn_max_lag": 0,
        "learn_warm_path": str(out / "train.jsonl")}


#: bootstrap resamples of the learning demo's paired test (p < 2/LEARN_BOOT is resolved)
LEARN_BOOT = 200


def _learning_summary(model, train: list[Event], replay: list[Event], schedule, settings,
                      online: dict, preds: list, tumbling: list, learner) -> dict:
    """``online`` / ``prequential_offline`` / ``frozen`` at @20 and the new-item hits."""
    import copy

    from model_core.learn import compare_learning

    trained = frozenset(model.vocab.item_ids(range(1, len(model.vocab))))
    keys = ("hr@20", "ndcg@20", "mrr@20")
    rep = compare_learning(copy.deepcopy(model), replay, (), schedule, ks=(20,),
                           n_boot=LEARN_BOOT,
                           max_len=settings.max_seq_len, learner_warm=train,
                           exclude_history=settings.exclude_history)
    on = {k: online.get(k) for k in keys}
    on["new_item_hits"] = new_item_hits(preds, replay, trained, 20)
    off = {k: rep["online"][k] for k in keys + ("new_item_hits",)}
    frozen = {k: rep["frozen"][k] for k in keys + ("new_item_hits",)}
    scored_online = sum(w.scored for w in tumbling)
    diff = max((abs(on[k] - off[k]) for k in keys if on[k] is not None and off[k] is not None),
               default=None)
    stats = learner.final_stats() if learner is not None else None
    return {
        "learn_schedule": schedule.to_dict(),
        "online": on, "prequential_offline": off, "frozen": frozen,
        "new_item_hits": {"online": on["new_item_hits"], "prequential_offline":
                          off["new_item_hits"], "frozen": frozen["new_item_hits"]},
        "online_equals_offline": bool(diff is not None and diff <= 1e-9
                                      and scored_online == rep["n_scored"]
                                      and on["new_item_hits"] == off["new_item_hits"]),
        "online_offline_max_abs_diff": diff,
        "scored_online": scored_online, "scored_offline": rep["n_scored"],
        "versions_published": len(learner.published()) if learner is not None else 0,
        "versions_offline": rep["online"]["versions"],
        # versions the gate (schedule gate=N) kept from serving: the learner's and the replay's
        "versions_refused": {"online": stats["refused"] if stats is not None else None,
                             "prequential_offline": rep["online"]["refused"]},
        "prediction_versions": len({orjson.loads(m.value)["model_version"] for m in preds}),
        "paired_windows_hr@20": {**rep["paired_windows"]["hr@20"], "n_boot": LEARN_BOOT},
        "learner": stats,
        "learner_offline": rep["learner"],
    }


def new_item_hits(preds: list, events: list[Event], trained: frozenset, k: int) -> int:
    """Events of ``events`` whose item was born after training (not in ``trained``) and is
    in the top ``k`` of the prediction made after its user's previous event — read from the
    predictions topic (per user in offset order: a user's predictions share a partition)."""
    item_of = {e.event_id: e.item_id for e in events}
    last: dict[str, list[str]] = {}
    hits = 0
    for m in sorted(preds, key=lambda m: (m.partition, m.offset)):
        p = orjson.loads(m.value)
        item = item_of.get(p["event_id"])
        prev = last.get(p["user_id"])
        if item is not None and item not in trained and prev is not None and item in prev[:k]:
            hits += 1
        last[p["user_id"]] = p["items"]
    return hits


def _read_alerts(settings: Settings) -> list:
    try:
        return [orjson.loads(m.value) for m in read_topic(settings, "alerts", idle_s=1)]
    except Exception:  # the alerts topic is optional for the demo's figures
        return []


def _write_report(windows, alerts, out: Path, say) -> str | None:
    try:
        from stream_app.observe.report import write_report
    except ImportError:
        return None
    path = write_report(windows, alerts, out)
    say(f"report written to {path}")
    return str(path)


@contextlib.contextmanager
def _maybe_live(enabled: bool):
    if not enabled:
        yield lambda _table: None
        return
    from rich.live import Live

    with Live(refresh_per_second=4, transient=False) as live:
        yield live.update
    if not live.console.is_terminal:  # Live ends its last frame with a newline on a terminal only
        live.console.line()
