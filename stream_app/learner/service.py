"""``seqstream learner``'s Kafka loop: the events topic in, versions out, offsets committed.

The learner is a consumer group of its own (``<app_id>-learner``) on the events topic, so it
reads every event beside the workers and never takes their partitions. It starts from the
version ``LATEST`` names in the watched directory (a restart goes on where it stopped), else
from ``model_path``; with ``learn_warm_path`` it first reads the training log as history.
Records are read as the worker reads them
(:func:`stream_app.worker.processor.read_event_record`): a record the worker dead-letters —
not a valid event, no key or another user's key, an event time too far ahead — is only
counted here (``invalid``), never learned (before, the learner learned a record without a
key that the workers had dead-lettered); an erase request drops the user's sequence and the
user's events not yet learned (:meth:`StreamLearner.erase`). With pseudonymous ids
(``pseudonym_key_file``, as the workers) the learner keys its sequences by the same keyed
hash, the training log's users included, so it holds no raw id and an erase request finds
the user's sequence by the hash.

Offsets are committed up to the events held by the newest *published* version, once it is
in the watched directory: after a crash the learner restarts from that version and learns
the rest again (at-least-once, like the worker). About once a second the loop measures its
lag (end offsets minus positions) and the stream's rate (growth of the end offsets) for
:mod:`stream_app.learner.pace`; every ``stats_every_s`` it logs one line of counts, and on a
clean stop (SIGTERM, SIGINT) one JSON line of them, with ``events_per_busy_s``: events taken
per second of the loop's work on them (parse, learn, publish, commit; the polls' waits not
counted), the rate the learner could keep up with.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import replace

import orjson

from model_core.learn import LearnSchedule
from schemas.exceptions import SchemaError, SeqstreamError
from stream_app.kafka.security import kafka_python_kwargs
from stream_app.learner.driver import StreamLearner
from stream_app.learner.items import ItemsReader, item_texts_for
from stream_app.learner.pace import LagPolicy
from stream_app.learner.probe import LearnerProbe
from stream_app.learner.versions import VersionStore
from stream_app.settings import Settings
from stream_app.worker.privacy import Pseudonyms
from stream_app.worker.process import WorkerProcess
from stream_app.worker.processor import read_event_record

log = logging.getLogger("seqstream.learner")

READY_MARK = "seqstream learner ready"
STATS_MARK = "seqstream learner stats"


def learner_group(settings: Settings) -> str:
    return f"{settings.app_id}-learner"


def start_model(settings: Settings, store: VersionStore):
    """The model to learn from: ``LATEST``'s version, else ``model_path``."""
    from model_core.checkpoint import load_model

    latest = store.latest()
    path = store.path(latest) if latest and (store.path(latest) / "meta.json").exists() \
        else settings.model_path
    if not path:
        raise SeqstreamError("the learner needs a model: set SEQSTREAM_MODEL_PATH (the "
                             "trained checkpoint) or publish one into SEQSTREAM_MODEL_WATCH_DIR")
    return load_model(path, device=settings.device)


def check_settings(settings: Settings) -> LearnSchedule:
    """The learner's schedule; one clear error for settings it cannot run with."""
    from model_core.exceptions import ModelCoreError

    if not settings.model_watch_dir:
        raise SeqstreamError("the learner publishes into the workers' watched directory: set "
                             "SEQSTREAM_MODEL_WATCH_DIR or --watch-dir (the workers' one)")
    try:
        return LearnSchedule.parse(settings.learn_schedule)
    except ModelCoreError as e:
        raise SeqstreamError(f"SEQSTREAM_LEARN_SCHEDULE: {e}") from None


def build_driver(settings: Settings, on_alert=None) -> StreamLearner:
    """The driver with the settings' schedule, store, gate and lag policy (and warmed)."""
    from model_core.exceptions import ModelCoreError

    schedule = check_settings(settings)
    store = VersionStore(settings.model_watch_dir, settings.learn_keep)
    model = start_model(settings, store)
    try:
        driver = StreamLearner(
            model, schedule, store, top_k=settings.top_k,
            exclude_history=settings.exclude_history, max_len=settings.max_seq_len,
            interval_s=settings.learn_interval_s,
            pace=LagPolicy(settings.learn_max_lag, settings.learn_lag_policy),
            on_alert=on_alert, texts=item_texts_for(settings, model))
    except ModelCoreError as e:
        raise SeqstreamError(str(e)) from None
    if settings.learn_warm_path:
        events = warm_events(settings)
        pseudonyms = Pseudonyms.from_settings(settings)
        if pseudonyms is not None:
            events = [replace(ev, user_id=pseudonyms(ev.user_id)) for ev in events]
        driver.warm(events)
    return driver


def warm_events(settings: Settings) -> list:
    """The training log (``learn_warm_path``) read as ``seqstream train`` reads it without
    reader flags: with ``learn_warm_format`` when set, else the way ``seqstream inspect``
    guesses it (a CSV's columns mapped to Event fields, its time unit), so the file a model
    was trained on warms the learner as given. Before, a CSV whose columns were not named
    like the Event fields (RetailRocket's ``visitorid,itemid``) ended the learner with
    "give them in columns={...}", an option it does not have. One log line says how the
    file was read and how many rows were rejected; a file without a valid event is an
    error naming it (:func:`stream_app.kafka.replay.load_guessed`, as ``demo --data``)."""
    from stream_app.kafka.replay import load_guessed

    path = settings.learn_warm_path
    events, rejected, _, how = load_guessed(path, settings.learn_warm_format, "--warm",
                                         "SEQSTREAM_LEARN_WARM_FORMAT")
    log.info("warm-up log %s: %d events, %d rejected rows%s", path, len(events),
             len(rejected), f" (read as {how})" if how else "")
    return events


class _Lag:
    """Lag and stream rate from end offsets, measured at most once a second."""

    def __init__(self) -> None:
        self.t = 0.0
        self.lag = 0
        self.end_total: int | None = None
        self.t0 = time.monotonic()
        self.stream_rate = 0.0  # events/s arriving, since the first measurement

    def measure(self, consumer, force: bool = False) -> int:
        now = time.monotonic()
        if not force and now - self.t < 1.0:
            return self.lag
        parts = consumer.assignment()
        if not parts:
            return self.lag
        ends = consumer.end_offsets(list(parts))
        self.lag = sum(max(0, ends[tp] - consumer.position(tp)) for tp in parts)
        total = sum(ends.values())
        if self.end_total is None:
            self.end_total, self.t0 = total, now
        elif now > self.t0:
            self.stream_rate = (total - self.end_total) / (now - self.t0)
        self.t = now
        return self.lag


def run_learner(settings: Settings, stop: threading.Event | None = None,
                stats_every_s: float = 10.0) -> dict:
    """Run until ``stop`` is set or SIGTERM/SIGINT; returns the final counts."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from schemas.erasure import is_erase_request
    from stream_app.kafka.replay import make_producer
    from stream_app.kafka.topics import ensure_topics
    from stream_app.worker.model_swap import control_key
    from stream_app.worker.privacy import read_erase_request

    if settings.learn_threads:
        import torch

        torch.set_num_threads(settings.learn_threads)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    ensure_topics(settings, ("events", "alerts"))
    producer = make_producer(settings)
    alerts_topic = settings.topic("alerts")

    def on_alert(alert) -> None:
        producer.send(alerts_topic, key=alert.metric.encode(), value=alert.to_json())
        log.warning("alert: %s", alert.message)

    driver = build_driver(settings, on_alert)
    pseudonyms = Pseudonyms.from_settings(settings)

    def user_key(user_id: str) -> str:
        return pseudonyms(user_id) if pseudonyms is not None else user_id

    probe = LearnerProbe(driver)
    if settings.learn_web_port:
        port = probe.serve(settings.web_host, settings.learn_web_port)
        log.info("health and metrics on http://%s:%d (/v1/live, /v1/ready, /metrics)",
                 settings.web_host, port)
    erase_key = control_key(settings)
    topic = settings.topic("events")
    consumer = KafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap_servers, group_id=learner_group(settings),
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=5000,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
        **kafka_python_kwargs(settings))
    items = ItemsReader(settings) if driver.texts is not None else None
    lag = _Lag()
    invalid = 0
    busy_s = 0.0
    ready = False
    committed: dict[int, int] = {}
    t_stats = time.monotonic()
    t_start = time.monotonic()
    try:
        while not stop.is_set():
            if items is not None:  # metadata first: it may name items of this poll
                items.take(driver.texts)
            polled = consumer.poll(timeout_ms=200)
            t_busy0 = time.perf_counter()
            probe.turned(bool(consumer.assignment()))
            if not ready and consumer.assignment():
                ready = True
                print(f"{READY_MARK} partitions={sorted(tp.partition for tp in consumer.assignment())}"
                      f" model={driver.learner.version}", flush=True)
            records = []
            now_ms = int(time.time() * 1000)  # once per poll, as the worker's parse does
            for tp, recs in sorted(polled.items(), key=lambda kv: kv[0].partition):
                for r in recs:
                    if is_erase_request(r.headers):
                        try:
                            req = read_erase_request(r.value, r.key, erase_key)
                        except SchemaError:
                            continue
                        # the user's events taken earlier in this poll go with it
                        driver.erase(user_key(req.user_id), records)
                        continue
                    try:
                        ev = read_event_record(r.value, r.key, now_ms, settings.max_future_ms)
                        if pseudonyms is not None:
                            ev = replace(ev, user_id=pseudonyms(ev.user_id))
                    except SchemaError:
                        invalid += 1
                        continue
                    records.append((ev, tp.partition, r.offset))
            behind = lag.measure(consumer)
            if driver.pace.must_skip(behind):
                driver.observe_lag(behind)
                parts = list(consumer.assignment())
                ends = consumer.end_offsets(parts)
                consumer.seek_to_end(*parts)
                driver.skipped_to_end(behind, {tp.partition: ends[tp] for tp in parts})
                records = []
            if records:
                published = driver.offer(records, behind)
            else:  # idle: the lag still counts (else the last busy poll's value stays shown)
                driver.observe_lag(behind)
                published = driver.tick()
            if published or driver.follow_rollback(_load):
                for v in published:
                    print(f"seqstream learner published {v}", flush=True)
                through = driver.published_through
                if through and through != committed:
                    consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1)
                                     for p, o in through.items()})
                    committed = dict(through)
            if records:  # parse, learn, publish, commit: the learner's cost per event
                busy_s += time.perf_counter() - t_busy0
            if time.monotonic() - t_stats >= stats_every_s:
                t_stats = time.monotonic()
                _log_stats(driver, lag, invalid, t_start)
    finally:
        taken = driver.stats.events_in
        summary = {**driver.summary(), "invalid": invalid,
                   "busy_seconds": round(busy_s, 3),
                   "events_per_busy_s": round(taken / busy_s, 1) if busy_s > 0 else None,
                   "stream_events_per_s": round(lag.stream_rate, 1),
                   "wall_seconds": round(time.monotonic() - t_start, 1)}
        if items is not None:
            summary["item_records"] = {"taken": items.taken, "invalid": items.invalid}
            items.close()
        print(f"{STATS_MARK} {orjson.dumps(summary).decode()}", flush=True)
        probe.close()
        consumer.close()
        producer.flush()
        producer.close()
    return summary


def _load(path: str):
    from model_core.checkpoint import load_model

    return load_model(path)


def _log_stats(driver: StreamLearner, lag: _Lag, invalid: int, t_start: float) -> None:
    s = driver.stats
    rate = s.events_learned / s.learn_seconds if s.learn_seconds > 0 else 0.0
    log.info("learner: %d in, %d learned (%.0f/s of update time; stream %.0f/s), %d skipped, "
             "lag %d, %d published, %d refused, %d invalid, %d erased, version %s",
             s.events_in, s.events_learned, rate, lag.stream_rate, s.skipped, s.lag,
             s.published, s.refused, invalid, s.erased, driver.learner.version)




class LearnerProcess(WorkerProcess):
    """``seqstream learner`` as a child process (demo, tests): settings through the
    environment, ready once its consumer group gave it partitions."""

    ready_mark = READY_MARK

    def __init__(self, settings: Settings, log_path, extra_args: list[str] = ()) -> None:
        import sys

        super().__init__(settings, log_path, name="learner",
                         command=[sys.executable, "-m", "stream_app.cli", "learner",
                                  *extra_args])

    def published(self) -> list[str]:
        """Versions the learner said it published, in order."""
        mark = "seqstream learner published "
        return [line[len(mark):].strip() for line in self.log_text().splitlines()
                if line.startswith(mark)]

    def final_stats(self) -> dict | None:
        """The counts of its clean stop (after :meth:`stop`), or None."""
        for line in reversed(self.log_text().splitlines()):
            if line.startswith(STATS_MARK):
                return orjson.loads(line[len(STATS_MARK):])
        return None


__all__ = ["LearnerProcess", "READY_MARK", "STATS_MARK", "build_driver", "check_settings",
           "learner_group", "run_learner", "start_model", "warm_events"]
