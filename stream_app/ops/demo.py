"""The demo: the whole of seqstream on one machine, from nothing.

Start the embedded broker; take a log (``--data``) or generate one; train a model on the first
part of the timeline; start a worker; replay the rest through Kafka while showing live
progress; shut everything down cleanly; compare the stream's online figures with the offline
prequential computation over the same replayed events; end with a summary (and ``--json``).
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
from model_core.train import sequences_from_events, train_model
from schemas.event import Event
from schemas.metrics import MetricsWindow
from stream_app.kafka.broker import EmbeddedBroker
from stream_app.kafka.replay import load_sorted, replay_events
from stream_app.kafka.topics import ensure_topics, iter_topic, read_topic
from stream_app.settings import Settings, load_settings
from stream_app.windows.aggregation import aggregate_windows
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
    stop: threading.Event = field(default_factory=threading.Event)


def _load_events(opts: DemoOptions) -> tuple[list[Event], int, str]:
    if opts.data:
        from model_core.datasets import guess_format

        fmt = opts.fmt or guess_format(opts.data)
        events, rejected = load_sorted(opts.data, fmt)
        if opts.events and len(events) > opts.events:
            events = events[: opts.events]
        return events, len(rejected), f"{opts.data} ({fmt})"
    from model_core.datasets.synth import generate

    events = generate(opts.events, seed=opts.seed)
    events.sort(key=lambda e: e.timestamp_ms)
    return events, 0, f"synthetic ({opts.events} events, seed {opts.seed})"


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


def _follow(settings: Settings, live: LiveCounts) -> None:
    """Count predictions and collect metrics windows while the demo runs."""

    def count(name: str, attr: str) -> None:
        for _ in iter_topic(settings, name, follow=True, timeout_s=3600, idle_s=3600):
            setattr(live, attr, getattr(live, attr) + 1)
            if live.stop.is_set():
                return

    def windows() -> None:
        for m in iter_topic(settings, "metrics", follow=True, timeout_s=3600, idle_s=3600):
            live.windows.append(MetricsWindow.from_json(m.value))
            if live.stop.is_set():
                return

    for target, args in ((count, ("predictions", "predictions")),
                         (count, ("dead-letters", "dead_letters")), (windows, ())):
        threading.Thread(target=target, args=args, daemon=True).start()


def _live_table(live: LiveCounts, sent: int, total: int):
    from rich.table import Table

    t = Table(title="seqstream demo", show_header=True)
    t.add_column("events in")
    t.add_column("predictions out")
    t.add_column("dead letters")
    t.add_column("windows")
    t.add_column("last window HR@10 / NDCG@10")
    t.add_column("p99 latency ms")
    last = live.windows[-1] if live.windows else None
    hr = (f"{last.metrics.get('hr@10', 0):.3f} / {last.metrics.get('ndcg@10', 0):.3f}"
          if last and last.metrics else "-")
    p99 = f"{last.latency_p99_ms:.0f}" if last and last.latency_p99_ms is not None else "-"
    t.add_row(f"{sent:,}/{total:,}", f"{live.predictions:,}", f"{live.dead_letters:,}",
              str(len(live.windows)), hr, p99)
    return t


def run_demo(opts: DemoOptions, say=print) -> dict:
    out = Path(opts.out_dir or tempfile.mkdtemp(prefix="seqstream-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    events, file_rejected, source = _load_events(opts)
    if len(events) < 100:
        from schemas.exceptions import SeqstreamError

        raise SeqstreamError(f"the demo needs at least 100 events, got {len(events)}")
    cut = int(len(events) * opts.train_fraction)
    train, replay = events[:cut], events[cut:]
    say(f"data: {source}; training on the first {len(train):,} events, "
        f"replaying the last {len(replay):,}")
    model, popular, train_s = _train(opts.model, train, out / "checkpoint", say)

    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        settings = load_settings(broker_url=broker.url, model_path=str(out / "checkpoint"),
                                 window_s=opts.window_s, data_dir=str(out / "worker-data"),
                                 web_port=0, idle_close_s=2.0, app_id="seqstream-demo")
        ensure_topics(settings)
        say(f"broker {broker.url}; starting a worker")
        worker = WorkerProcess(settings, out / "worker.log").start()
        try:
            worker.wait_ready(120)
            live = LiveCounts()
            _follow(settings, live)
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
        finally:
            if worker.alive():
                worker.kill()
        live.stop.set()
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
    if opts.report:
        summary["report"] = _write_report(windows, alerts, out / "report", say)
    return summary


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
