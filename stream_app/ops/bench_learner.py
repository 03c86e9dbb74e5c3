"""``seqstream bench --learner``: does the learner keep up with the stream it learns from?

``seqstream demo --learn`` runs worker and learner in lockstep (the worker waits for each
version so online can equal offline), so its stream rate already includes waiting for the
learner and cannot show whether the learner keeps up. This benchmark runs them the way a
deployment does: one worker and one learner **without** lockstep, on an embedded broker, the
demo's ``--learn`` log (synthetic, transitions change at 60 %, items born from 50 %; the
first half trains the model, the second half is replayed at full speed). Per schedule, side
by side in one run:

- the **stream**: the worker's events/s, first to last prediction;
- the **learner**: events it took per second of its loop's work (``events_per_busy_s``:
  parse, learn, publish) and when it had learned (or skipped) every replayed event, read
  from its ``/metrics`` page every 0.25 s;
- the ratio learner / stream (``keeps_up``: at least 1), the most events it was behind
  (predictions made minus events learned) and the events it skipped (behind its
  ``SEQSTREAM_LEARN_MAX_LAG`` bound).

The broker, the replayer, the worker and the learner share this machine's cores: the
figures are those of the whole, as a user's single machine would give them.
"""

from __future__ import annotations

import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: the default (model_core.learn.schedule.DEFAULT_SCHEDULE) and the 8-step schedule of
#: BENCHMARKS.md "Online learning", side by side
DEFAULT_SCHEDULES = ("every=250", "every=500,steps=8,lr=0.005,settled=0.25,new_lr=1,place=0.9")


@dataclass
class LearnerBenchConfig:
    model: str = "gru4rec"
    events: int = 20_000  # the demo's --learn log: half trains, half is replayed
    schedules: tuple[str, ...] = DEFAULT_SCHEDULES
    seed: int = 0
    work_dir: str | None = None
    timeout_s: float = 300.0  # per schedule, after the replay starts


@dataclass
class LearnerRun:
    schedule: str
    events: int
    stream_events_per_s: float = 0.0
    stream_done_s: float | None = None
    learned_done_s: float | None = None
    learner_events_per_busy_s: float = 0.0
    ratio: float = 0.0
    keeps_up: bool = False
    most_behind: int = 0
    skipped: int = 0
    learned: int = 0
    stats: dict = field(default_factory=dict)


def _metrics(port: int) -> dict[str, float]:
    """The learner's ``/metrics`` page by name (``events_learned``, ``skipped``, ...)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return {f.name.removeprefix("seqstream_learner_"): f.samples[0].value
            for f in text_string_to_metric_families(text) if f.samples}


def _one(cfg: LearnerBenchConfig, schedule: str, broker_url: str, ckpt: Path, warm: Path,
         replay: list, work: Path, log) -> LearnerRun:
    from stream_app.kafka.broker import free_port
    from stream_app.kafka.replay import replay_events
    from stream_app.kafka.topics import Follower, ensure_topics
    from stream_app.learner.service import LearnerProcess
    from stream_app.settings import load_settings
    from stream_app.worker.process import WorkerProcess

    tag = f"lb{uuid.uuid4().hex[:8]}"
    port = free_port()
    s = load_settings(broker_url=broker_url, model_path=str(ckpt), data_dir=str(work / "worker"),
                      web_port=0, idle_close_s=2.0, app_id=tag, topic_prefix=f"{tag}.",
                      partitions=1, model_watch_dir=str(work / "watch"), model_poll_s=0.5,
                      learn_schedule=schedule, learn_warm_path=str(warm), learn_web_port=port)
    ensure_topics(s)
    run = LearnerRun(schedule, len(replay))
    worker = WorkerProcess(s, work / "worker.log").start()
    learner = LearnerProcess(s, work / "learner.log").start()
    follower = None
    try:
        worker.wait_ready(120)
        learner.wait_ready(120)
        count = [0]
        stream_done: list[float] = []

        def counted(_m) -> None:  # the time of the last prediction, not of the next poll
            count[0] += 1
            if count[0] == len(replay):
                stream_done.append(time.monotonic())

        # ends with the last prediction, or stopped below before the broker stops
        follower = Follower(s, "predictions", counted, expect=len(replay)).start()
        sender = threading.Thread(target=replay_events, args=(s, replay),
                                  kwargs={"progress": False}, daemon=True)
        t0 = time.monotonic()
        sender.start()
        while time.monotonic() - t0 < cfg.timeout_s:
            t = time.monotonic() - t0
            m = _metrics(port)
            done = int(m.get("events_learned", 0) + m.get("skipped", 0))
            run.most_behind = max(run.most_behind, count[0] - int(m.get("events_learned", 0)))
            if run.stream_done_s is None and stream_done:
                run.stream_done_s = stream_done[0] - t0
            if run.learned_done_s is None and done >= len(replay):
                run.learned_done_s = t
            if run.stream_done_s is not None and run.learned_done_s is not None:
                break
            time.sleep(0.25)
    finally:
        if follower is not None:  # also when the run fails: never left polling the broker
            follower.stop()
        learner.stop()
        worker.stop()
    run.stats = learner.final_stats() or {}
    run.learned = int(run.stats.get("events_learned", 0))
    run.skipped = int(run.stats.get("skipped", 0))
    run.learner_events_per_busy_s = float(run.stats.get("events_per_busy_s", 0.0))
    if run.stream_done_s:
        run.stream_events_per_s = len(replay) / run.stream_done_s
    if run.stream_events_per_s:
        run.ratio = run.learner_events_per_busy_s / run.stream_events_per_s
    run.keeps_up = run.ratio >= 1.0 and run.skipped == 0
    log(f"  {schedule}: stream {run.stream_events_per_s:,.0f} events/s, learner "
        f"{run.learner_events_per_busy_s:,.0f} per busy s ({run.ratio:.2f} x)")
    return run


def run_learner_bench(cfg: LearnerBenchConfig, log=print) -> dict:
    """Every schedule of ``cfg`` beside a worker on one broker; a summary dict."""
    from model_core.datasets.synth import write_jsonl
    from stream_app.kafka.broker import EmbeddedBroker
    from stream_app.ops.demo import DemoOptions, _load_events, _train

    work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="seqstream-bench-learner-"))
    work.mkdir(parents=True, exist_ok=True)
    demo = DemoOptions(events=cfg.events, seed=cfg.seed, learn=cfg.schedules[0])
    events, _, _ = _load_events(demo)  # the demo's --learn log, by its own recipe
    cut = int(len(events) * demo.train_fraction)
    train, replay = events[:cut], events[cut:]
    _train(cfg.model, train, work / "checkpoint", log)
    write_jsonl(train, work / "train.jsonl")
    runs = []
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        for i, schedule in enumerate(cfg.schedules):
            runs.append(_one(cfg, schedule, broker.url, work / "checkpoint",
                             work / "train.jsonl", replay, work / f"run-{i + 1}", log))
    return {"model": cfg.model, "events_replayed": len(replay), "work_dir": str(work),
            "runs": [asdict(r) for r in runs]}


def format_learner_table(summary: dict) -> str:
    """One row per schedule, at most 80 columns (the schedule cut to fit)."""
    head = f"{'schedule':<30} {'stream/s':>9} {'learner/s':>9} {'ratio':>5} {'behind':>7} {'skip':>5} ok"
    lines = [f"{summary['model']}: learner beside a worker, no lockstep, "
             f"{summary['events_replayed']:,} events at full speed", head]
    for r in summary["runs"]:
        name = r["schedule"] if len(r["schedule"]) <= 30 else r["schedule"][:29] + "…"
        lines.append(f"{name:<30} {r['stream_events_per_s']:>9,.0f} "
                     f"{r['learner_events_per_busy_s']:>9,.0f} {r['ratio']:>5.2f} "
                     f"{r['most_behind']:>7,} {r['skipped']:>5,} {'yes' if r['keeps_up'] else 'no'}")
    lines.append("learner/s: events per second of the learner's work; ratio >= 1 keeps up")
    return "\n".join(lines)


__all__ = ["DEFAULT_SCHEDULES", "LearnerBenchConfig", "LearnerRun", "format_learner_table",
           "run_learner_bench"]
