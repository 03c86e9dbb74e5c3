"""The Faust app factory: one code path for the worker, demo, tests and benchmarks.

    events ──► agent (micro-batches: take_batches(batch_size, batch_wait_ms))
                 │ parse/validate ──bad──► dead-letters
                 │ states from the ``user-state`` table (changelog-backed, key = user_id)
                 │ test-then-learn; one batched model call (worker thread, off the event loop)
                 │ one table write per user per batch
                 ├──► predictions (one per event)
                 └──► metrics (event-time windows, on close; an idle timer closes them too)

Input offsets are acknowledged only after the batch's predictions, dead letters and state
changelog are acknowledged by the broker (at-least-once); that wait overlaps the next batch's
computation (one batch in flight). Redelivered events are recognised by the event-id hashes in
the user state and neither appended nor scored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import faust

from model_core.predictor import Recommender
from model_core.sequence_state import UserState
from schemas.dead_letter import DeadLetter
from stream_app.kafka import end_offsets, monotonic
from stream_app.kafka.fencing import MembershipFence
from stream_app.kafka.publisher import BatchPublisher
from stream_app.observe.health import Health
from stream_app.settings import Settings
from stream_app.windows.aggregation import WindowAggregator
from stream_app.windows.persistence import PartitionWindows, window_key
from stream_app.worker.batching import take_batches
from stream_app.worker.faults import InjectedFault, from_environment
from stream_app.worker.process import FAILED_BATCH_MARK, READY_MARK
from stream_app.worker.processor import BatchProcessor, RawRecord

log = logging.getLogger("seqstream.worker")


@dataclass
class WorkerStats:
    batches: int = 0
    events: int = 0
    predictions: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    windows_published: int = 0
    stale_events: int = 0  # delivered before a rebalance, left for redelivery
    failed_batches: int = 0  # model calls that raised (retried)
    model_failed_events: int = 0  # events dead-lettered because every model try failed
    last_batch_wall: float = field(default_factory=time.monotonic)
    event_watermark_ms: int | None = None


@dataclass
class SeqstreamApp:
    """The Faust app plus the objects its agent uses (exposed for tests and tools)."""

    settings: Settings
    app: faust.App
    processor: BatchProcessor
    table: object
    stats: WorkerStats
    partition_windows: PartitionWindows  # the worker's crash-safe windows, per input partition
    fence: MembershipFence | None = None  # writes only while a member of the group


@contextlib.contextmanager
def current_event_restored(stream):
    """Run a block that sets ``stream``'s current event per key (a Faust table or store picks
    its partition from it), then restore the stream's own. The block must not ``await``:
    take_batches' processor reads ``stream.current_event`` to pair each value with its event,
    and a stale one there would pair later values with the wrong events."""
    saved = stream.current_event
    try:
        yield
    finally:
        stream._set_current_event(saved)


async def enqueue_states(stream, table, publisher: BatchPublisher, touched: dict,
                         last_event_of_user: dict,
                         first: list[tuple[bytes, bytes, object]] = ()) -> list:
    """One table write per user per batch; the changelog written as one batch per partition.

    Each value goes into the table's store directly, with the user's last event of the batch
    as the stream's current event (a Faust store, RocksDB above all, picks its partition from
    it); the changelog records are handed to ``publisher``, in order, one Kafka batch per
    changelog partition (``table[key] = value`` would make one ``send_soon`` per key: the
    largest per-event cost of the worker). Returns what :func:`states_durable` waits for:
    the caller acks its input after its state is durable (at-least-once).

    ``first``: (key, value, event) records written before the user states (the partitions'
    window records: in each changelog partition they must precede that batch's states).
    """
    store = table.data
    by_part: dict[int, list[tuple[bytes, bytes]]] = {}
    states = ((user.encode(), st.encode(), last_event_of_user[user])
              for user, st in touched.items())
    with current_event_restored(stream):
        for key, value, event in itertools.chain(first, states):
            stream._set_current_event(event)
            store[key] = value
            by_part.setdefault(event.message.partition, []).append((key, value))
    if not by_part:
        return []
    return await publisher.enqueue_partitioned(table.changelog_topic.get_topic_name(), by_part)


async def states_durable(table, sent: list) -> None:
    """Wait for the changelog records :func:`enqueue_states` handed over; then the store
    learns the last changelog offset it holds (RocksDB recovery starts after it)."""
    from faust.types import TP

    if not sent:
        return
    topic = table.changelog_topic.get_topic_name()
    for p, offset in (await BatchPublisher.wait(sent)).items():
        table.data.set_persisted_offset(TP(topic, p), offset)


def fatal(reason: str, exc: BaseException | None = None, code: int = 70) -> None:
    """Log ``reason`` (with the traceback of ``exc``) and end the process at once.

    For errors after which the worker cannot go on correctly: a clean Faust shutdown would
    wait for the unacknowledged batch forever. Uncommitted input is processed again by the
    next worker (at-least-once; redelivered events are recognised)."""
    import os
    import sys

    log.critical("seqstream worker stopping: %s", reason, exc_info=exc)
    print(f"seqstream worker stopping: {reason}", file=sys.stderr, flush=True)
    for h in logging.getLogger().handlers + log.handlers:
        with contextlib.suppress(Exception):
            h.flush()
    os._exit(code)


def load_model_from_settings(settings: Settings) -> Recommender:
    from model_core.checkpoint import load_model  # torch import deferred to workers

    if not settings.model_path:
        from schemas.exceptions import SeqstreamError

        raise SeqstreamError("no model: set SEQSTREAM_MODEL_PATH or pass --model CHECKPOINT_DIR")
    from model_core.verify import verify_model

    model = load_model(settings.model_path, device=settings.device)
    verify_model(model, settings.top_k, settings.model_path)  # never serve a broken model
    return model


def tune_fetch_wait(app: faust.App, settings: Settings) -> None:
    """Lower the consumer's fetch wait from Faust's fixed 1500 ms to ``batch_wait_ms``.

    A broker may hold a fetch for the whole wait even when records arrive meanwhile (the
    embedded Tansu does: at low rates that added 0.4-0.7 s median latency; at 50 ms, 9 ms).
    Faust offers no setting, so this sets aiokafka's fetcher attribute (read for every new
    fetch request). Call after the consumer has started (e.g. on rebalance complete).
    """
    with contextlib.suppress(AttributeError):
        fetcher = app.consumer._thread._consumer._fetcher
        fetcher._fetch_max_wait_ms = max(5, min(settings.batch_wait_ms, 500))


def app_options(settings: Settings) -> dict:
    """Keyword arguments of ``faust.App`` for ``settings`` (consumer and producer tuning).

    Shared with the benchmark's plain Faust agents, so they run with the very same tuning.

    Faust's web server has no authentication: it binds to ``settings.web_host`` (loopback
    by default; a deployment whose probes come from outside opens it), and its ``/router/``
    (cluster layout) and ``/table/`` (reads any table key: users' states) views are off —
    seqstream routes nothing between workers over HTTP.
    """
    from stream_app.kafka.security import faust_broker_credentials

    return dict(
        broker=settings.broker_url,
        broker_credentials=faust_broker_credentials(settings),
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_max_poll_records=max(5000, settings.batch_size),
        stream_buffer_maxsize=max(65536, 4 * settings.batch_size),
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.web_port > 0,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_host,
        web_router_enabled=False,
        web_tables_enabled=False,
        producer_linger_ms=5,
        producer_max_batch_size=1 << 20,
        table_standby_replicas=1,
        # sound once end offsets are verified (stream_app.kafka.end_offsets): Tansu under-reports them
        recovery_consistency_check=settings.recovery_consistency_check,
        logging_config=None,
    )


class _FaustApp(faust.App):
    """``faust.App`` that can leave out Faust's Monitor sensor (``keep_monitor = False``)
    and deliver consumed messages without tasks per message (``fast_delivery``).

    Faust calls every sensor several times per event (message in, stream event in and out,
    message out); its Monitor keeps per-topic and per-stream counters for Faust's web /stats
    page. seqstream's Prometheus metrics are counted per batch and need none of it.
    """

    keep_monitor = True
    fast_delivery = False  # stream_app.kafka.delivery: no asyncio tasks per consumed message

    def _new_consumer(self):
        if self.fast_delivery:
            from stream_app.kafka.delivery import fast_consumer_class

            self.transport.Consumer = fast_consumer_class(type(self.transport).Consumer)
        return super()._new_consumer()

    def on_init_dependencies(self):
        deps = super().on_init_dependencies()  # adds the Monitor to the sensors
        if not self.keep_monitor:
            self.sensors.remove(self.monitor)
        return deps


def create_app(settings: Settings, model: Recommender | None = None) -> SeqstreamApp:
    model = model if model is not None else load_model_from_settings(settings)
    app = _FaustApp(settings.app_id, **app_options(settings))
    app.keep_monitor = settings.faust_monitor
    app.fast_delivery = settings.fast_delivery
    if settings.verify_end_offsets:
        end_offsets.install(app)
    # The worker accounts windows per input partition (PartitionWindows below), not in the
    # processor: its processor gets no aggregator of its own.
    processor = BatchProcessor(model, max_len=settings.max_seq_len, k=settings.top_k,
                               exclude_history=settings.exclude_history,
                               max_future_ms=settings.max_future_ms,
                               max_record_bytes=settings.max_record_bytes)

    def new_windows() -> WindowAggregator:
        return WindowAggregator(
            ks=settings.metric_ks, window_s=settings.window_s,
            allowed_lateness_s=settings.allowed_lateness_s, hop_s=settings.hop_s,
            hop_window_s=settings.hop_window_s, n_items=model.vocab.n_items,
            model_version=processor.model_version,
        )

    stats = WorkerStats()
    fence = MembershipFence(app, settings.session_timeout_s, settings.heartbeat_interval_s)
    # ops: drift/threshold alerts (alerts topic) and Prometheus metrics (settings.metrics_port)
    from schemas.metrics import MetricsWindow
    from stream_app.observe.alerts import (
        AlertConfig,
        AlertMonitor,
        model_failure_alert,
        model_swap_alert,
    )
    from stream_app.observe.prometheus import WorkerMetrics, consumer_lags

    alert_monitor = AlertMonitor(AlertConfig.from_settings(settings), model.version)
    prom = WorkerMetrics()
    prom.set_model_version(model.version)
    topic_alerts = settings.topic("alerts")

    events_topic = app.topic(settings.topic("events"), key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw",
                             partitions=settings.partitions)
    raw_schema = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw")
    # key_type/value_type bytes: Faust picks the store's (recovery) serializers from these,
    # not from ``schema``; without them a restarted worker failed to decode its changelog
    table = app.Table("user-state", default=None, partitions=settings.partitions,
                      schema=raw_schema, key_type=bytes, value_type=bytes)
    monotonic.install(table)  # a late record from a stalled worker never wins (recovery)
    # crash-safe windows: per input partition, persisted in ``table`` (stream_app.windows.persistence)
    pwindows = PartitionWindows(new_windows, table.get, settings.max_record_bytes)
    topic_predictions = settings.topic("predictions")
    topic_dead = settings.topic("dead-letters")
    topic_metrics = settings.topic("metrics")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqstream-model")
    publisher_box: list[BatchPublisher] = []

    def publisher() -> BatchPublisher:
        if not publisher_box:
            publisher_box.append(BatchPublisher(app.producer._ensure_producer()))
        return publisher_box[0]

    async def publish_alerts(alerts) -> None:
        if alerts:
            await publisher().publish(topic_alerts,
                                      [(a.metric.encode(), a.to_json()) for a in alerts])
            prom.count_alerts(alerts)
            for a in alerts:
                log.warning("alert: %s", a.message)

    async def publish_windows(closed: list[tuple[bytes, bytes]]) -> None:
        # keyed <kind>/<start>/p<partition>: a window may be re-published after a crash or a
        # clean stop; consumers keep the latest record per key (window_state.latest_windows)
        if closed:
            await publisher().publish(topic_metrics, closed)
            stats.windows_published += len(closed)
            prom.count_windows(len(closed))
            await publish_alerts(alert_monitor.observe_windows(
                (MetricsWindow.from_json(v) for _, v in closed), int(time.time() * 1000),
                sources=[k.rsplit(b"/", 1)[-1].decode() for k, _ in closed]))  # "p<part>"

    from stream_app.worker.items_feed import follow_items, make_item_encoder

    # new items at run time (text/fused models with the text extra): items topic -> encoder
    item_encoder = make_item_encoder(settings, model)

    from stream_app.worker.model_swap import ModelSwapper

    def on_model_swap(new_model) -> None:
        pwindows.set_model_version(new_model.version)
        if item_encoder is not None:
            try:  # items added at run time are re-installed in the new model (from the cache)
                item_encoder.rebind(new_model)
            except Exception as e:
                log.warning("run-time items not carried over to %s: %s", new_model.version, e)

    swapper = ModelSwapper(settings, processor, on_swap=on_model_swap)
    in_batch = [False]  # the poll timer applies a new model itself only between batches

    # the previous batch's acknowledgement: waited for while the next batch is computed,
    # before that one's outputs are handed over (one batch in flight; input acked in order)
    pending_ack: list[asyncio.Future | None] = [None]

    model_call_every = from_environment().get("model_raise_every")
    model_calls = itertools.count(1)  # numbers the model calls for SEQSTREAM_FAULTS

    async def predict_with_retries(step, n_events: int) -> tuple[object, str | None]:
        """The batch's model call, tried ``batch_retries + 1`` times with a growing pause;
        (top-k, None) or (None, the reason) once every try failed."""
        tries = settings.batch_retries + 1
        for attempt in range(1, tries + 1):
            call = step.predict if model_call_every is None else flaky_calls(step.predict)
            try:
                return await asyncio.get_running_loop().run_in_executor(executor, call), None
            except Exception as e:  # noqa: BLE001 - any model failure is this batch's
                stats.failed_batches += 1
                prom.count_failed_batch()
                log.error("%s: model call failed (try %d of %d, %d events, model %s): %r",
                          FAILED_BATCH_MARK, attempt, tries, n_events, processor.model_version,
                          e, exc_info=attempt == tries)
                reason = f"model {processor.model_version} failed on the batch: {e!r}"
                if attempt < tries:
                    await asyncio.sleep(min(5.0, 0.1 * 4 ** (attempt - 1)))
        await publish_alerts([model_failure_alert(processor.model_version, reason,
                                                  int(time.time() * 1000))])
        return None, reason

    def flaky_calls(predict):
        n = next(model_calls)  # one model call per try; every N-th raises

        def call():
            if n % model_call_every == 0:
                raise InjectedFault(f"injected model failure (call {n})")
            return predict()
        return call

    async def acknowledge(stream, batch, outputs: list, changelog: list) -> None:
        """Once the broker has a batch's outputs and states, ack its input events."""
        await states_durable(table, changelog)
        await BatchPublisher.wait(outputs)
        for event in batch:
            await stream.ack(event)

    @app.agent(events_topic, name="process-events")
    async def process_events(stream):
        # Faust restarts a crashed agent but nothing more reaches it (the failed batch is
        # never acked and holds the stream): any error that is not a batch's own is fatal,
        # with its reason in the log; the restarted worker resumes from the committed offsets
        try:
            loop = asyncio.get_running_loop()
            within = settings.batch_wait_ms / 1000.0
            store_get = table.data.get
            async for taken in take_batches(stream, settings.batch_size, within, ack=False):
                acking = pending_ack[0]
                if acking is not None and acking.done():
                    acking.result()  # the previous batch's outputs failed: fatal (below)
                # events delivered before a rebalance come again from the committed offsets
                batch_gen = fence.generation
                batch, stale = fence.current(taken)
                if stale:
                    fence.release(stale)
                    stats.stale_events += len(stale)
                    log.info("%d events delivered before the rebalance to generation %s left "
                             "for redelivery", len(stale), batch_gen)
                if not batch:
                    continue
                swapper.apply_pending()  # hot swap: only between batches
                in_batch[0] = True
                records = [RawRecord(e.message.key, e.value, e.message.topic, e.message.partition,
                                     e.message.offset, int(e.message.timestamp * 1000))
                           for e in batch]
                events, positions, dead = processor.parse(records)
                states: dict[str, UserState | None] = {}
                last_of_user: dict[str, object] = {}
                # A rocksdb:// table reads the partition of the *current event*: each read runs
                # with an event of the key's own partition
                with current_event_restored(stream):
                    for p, ev in zip(positions, events, strict=True):
                        user = ev.user_id
                        if user not in states:
                            stream._set_current_event(batch[p])
                            # the store itself: Table.get adds Faust's per-key sensor calls
                            raw = store_get(user.encode())
                            states[user] = swapper.adapt(UserState.decode(raw)) if raw else None
                        last_of_user[user] = batch[p]
                    seen_parts: set[int] = set()
                    for r, e in zip(records, batch, strict=True):
                        if r.partition not in seen_parts:  # load each window record once
                            seen_parts.add(r.partition)
                            stream._set_current_event(e)
                            pwindows.part(r.partition)
                result = None
                model_s = None
                if events:
                    offsets = [records[p].offset for p in positions]
                    if item_encoder is not None and item_encoder.pending:
                        # new items join the model on the model thread, between two batches
                        # (at most 64 per batch, about 1 s of CPU encoding: a burst of new items
                        # must not stall scoring; the rest joins over the next batches)
                        await loop.run_in_executor(executor, item_encoder.flush, 64)
                    # the engine's Python on this thread; only the model call off the event loop
                    # (it releases the GIL in torch: delivery goes on meanwhile)
                    engine = processor.engine
                    step = engine.prepare(events, states, offsets)
                    t_model = time.perf_counter()
                    topk, failure = await predict_with_retries(step, len(events))
                    model_s = time.perf_counter() - t_model
                    if failure is None:
                        result = engine.complete(step, topk)
                        swapper.tag_states(result.touched.values())
                    else:  # the batch's events go to dead letters with the reason, unchanged
                        dead = dead + [
                            (records[p].key, DeadLetter.of(
                                records[p].value, failure, records[p].topic, records[p].partition,
                                records[p].offset, records[p].key, failed_at_ms=int(time.time() * 1000)
                            ).to_json()) for p in positions]
                        stats.model_failed_events += len(events)
                        events, positions = [], []
                now_ms = int(time.time() * 1000)
                preds = processor.encode_predictions(events, result, now_ms) if events else []
                latencies = [float(now_ms - records[p].timestamp_ms) for p in positions]
                closed, window_records = pwindows.account(
                    [r.partition for r in records], [r.offset for r in records], events, positions,
                    result, latencies, now_ms)
                pub = publisher()
                if acking is not None:
                    await acking  # outputs and changelog stay in batch order
                if not await fence.may_write(batch_gen):  # a zombie after a stall writes nothing
                    fence.dropped(len(batch), f"membership of generation {batch_gen} lost")
                    fence.release(batch)
                    prom.count_fenced_batch()
                    pwindows.forget()  # re-read the window records: this batch is not in them
                    in_batch[0] = False
                    continue
                # closed windows are acknowledged before the window records that drop them
                await publish_windows(closed)
                outputs = (await pub.enqueue(topic_predictions, preds)
                           + await pub.enqueue(topic_dead, dead))
                last_of_part = {r.partition: e for r, e in zip(records, batch, strict=True)}
                changelog = await enqueue_states(
                    stream, table, pub, result.touched if result else {}, last_of_user,
                    first=[(window_key(p), rec, last_of_part[p]) for p, rec in window_records])
                pending_ack[0] = asyncio.ensure_future(acknowledge(stream, batch, outputs, changelog))
                stats.batches += 1
                stats.events += len(events)
                stats.predictions += len(preds)
                stats.dead_letters += len(dead)
                stats.duplicates += len(result.duplicates) if result else 0
                stats.last_batch_wall = time.monotonic()
                stats.event_watermark_ms = pwindows.watermark_ms
                alert_monitor.model_version = processor.model_version
                await publish_alerts(alert_monitor.observe_batch(
                    events, result, latencies, now_ms,
                    partitions=[records[p].partition for p in positions]))
                prom.observe_batch(len(records), len(events), len(preds), len(dead),
                                   len(result.duplicates) if result else 0, latencies, model_s)
                prom.set_model_version(processor.model_version)
                prom.set_watermark(stats.event_watermark_ms)
                prom.set_lag(consumer_lags(app.consumer,
                                           {(r.topic, r.partition): r.offset for r in records}))
                in_batch[0] = False
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - logged with its traceback, then exit
            fatal(f"the worker's batch loop failed: {e!r}", e)

    def load_assigned_windows() -> None:
        # the windows of every assigned partition, also those that got no batch since the
        # last rebalance (their open windows are in the table only)
        for tp in app.assignor.assigned_actives():
            if tp.topic == events_topic_name:
                pwindows.part(tp.partition)

    @app.timer(interval=1.0)
    async def close_idle_windows():
        acking = pending_ack[0]
        if acking is not None and acking.done() and not acking.cancelled() \
                and acking.exception() is not None:  # no batch came after to notice
            fatal(f"a batch's outputs were not accepted by the broker: "
                  f"{acking.exception()!r}", acking.exception())
        idle_s = time.monotonic() - stats.last_batch_wall
        if not fence.may_write_now():  # after a stall or in a rebalance: the batches decide
            return
        load_assigned_windows()
        if alert_monitor.held and idle_s >= settings.idle_close_s and not in_batch[0]:
            # the detectors wait for the slowest partition; idle input: feed what is held
            await publish_alerts(alert_monitor.flush(int(time.time() * 1000)))
        if pwindows.open_windows() and idle_s >= settings.idle_close_s and not in_batch[0]:
            # No input for a while: let event time follow the wall clock so open windows close.
            await publish_windows(pwindows.close_idle(int(idle_s * 1000),
                                                      int(time.time() * 1000)))

    @app.timer(interval=settings.model_poll_s)
    async def poll_for_model():
        await asyncio.get_running_loop().run_in_executor(None, swapper.poll)
        failures = swapper.take_failures()
        if failures:
            now_ms = int(time.time() * 1000)
            await publish_alerts([model_swap_alert(processor.model_version, reason, now_ms)
                                  for reason in failures])
        if not in_batch[0]:  # idle agent: switch now (no await between check and switch)
            swapper.apply_pending()

    @app.task
    async def feed_items():
        if item_encoder is not None:
            await follow_items(settings, item_encoder,
                               lambda dead: publisher().publish(topic_dead, dead))

    @app.task
    async def watch_stalls():
        await fence.watch()

    health = Health(app, settings, fence)
    if settings.web_port > 0:
        health.install_pages()

    @app.task
    async def watch_broker():
        await health.watch_broker(lambda reason: fatal(reason, code=69))

    @app.task
    async def serve_prometheus():
        if settings.metrics_port > 0:
            prom.serve(settings.metrics_port, settings.metrics_host)

    events_topic_name = settings.topic("events")
    frozen: list[bool] = []

    @app.on_rebalance_complete.connect
    async def announce_ready(sender, **kwargs):
        assigned = sorted(tp.partition for tp in app.assignor.assigned_actives()
                          if tp.topic == events_topic_name)
        pwindows.forget()  # partitions may have moved: re-read window records from the table
        fence.on_new_generation()
        health.assigned = True
        alert_monitor.forget_partitions()
        tune_fetch_wait(app, settings)
        if not frozen:
            # Everything alive at start (torch, Faust, the model: a few hundred thousand objects) out
            # of the cyclic collector's reach: a full collection walked them all, a 150-200 ms
            # pause every second or two under load (p99 latency). Once: frozen objects that
            # later become cyclic garbage are never collected.
            frozen.append(True)
            gc.collect()
            gc.freeze()
        print(f"{READY_MARK} partitions={assigned} model={processor.model_version}",
              flush=True)

    @app.on_before_shutdown.connect
    async def flush_windows(sender, **kwargs):
        # Clean shutdown: publish every open window rather than losing it (unless this
        # worker's membership was lost: its windows are the new owners' now).
        if fence.may_write_now(rebalancing_ok=True):
            with contextlib.suppress(Exception):
                load_assigned_windows()
                await publish_windows(pwindows.flush(int(time.time() * 1000)))
                await publish_alerts(alert_monitor.flush(int(time.time() * 1000)))
        swapper.close()

    return SeqstreamApp(settings, app, processor, table, stats, pwindows, fence)


def limit_malloc_arenas(n: int) -> bool:
    """Cap glibc's malloc arenas at ``n`` (``mallopt(M_ARENA_MAX)``); True when applied.

    glibc gives each thread that allocates its own arena (up to 8 per core); the worker's
    threads (Kafka consumer, model executor, torch) then each keep freed memory of their
    own, and the resident size climbs long after the worker's live data stopped growing
    (soak of 300k events, RSS growth from 10 % of the events to the end: +16.9 % with
    glibc's default, +11.2 % with 2 arenas; from 25 %: +10.7 % against +1.6 %). Call before
    the worker's threads start. No-op off glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if n <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_arena_max = -8  # from glibc's malloc.h
    return bool(mallopt(m_arena_max, int(n)))


def run_worker(settings: Settings, model: Recommender | None = None) -> None:
    """Run one worker until SIGINT/SIGTERM (blocks)."""
    from stream_app.kafka.topics import ensure_topics
    from stream_app.observe.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    limit_malloc_arenas(settings.malloc_arenas)
    ensure_topics(settings)
    sapp = create_app(settings, model)
    from stream_app.worker.store_guard import mark_clean, prepare_local_store

    marker = prepare_local_store(sapp.app, settings)  # rocksdb:// after a crash: rebuild
    log.info("seqstream worker starting: broker %s, group %s, topics %s* (%d partitions), "
             "model %s, store %s, web %s, metrics %s", settings.broker_url, settings.app_id,
             settings.topic_prefix, settings.partitions, sapp.processor.model_version,
             settings.store, f"port {settings.web_port}" if settings.web_port else "off",
             f"port {settings.metrics_port}" if settings.metrics_port else "off")
    worker = faust.Worker(sapp.app, loglevel=settings.log_level, quiet=True,
                          override_logging=False)
    code = None
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        code = e.code
        if marker is not None and e.code in (0, None):
            mark_clean(marker)
        raise
    finally:
        st = sapp.stats
        log.info("seqstream worker stopped (exit %s): %d events, %d predictions, %d dead "
                 "letters, %d duplicates skipped, %d failed model calls, %d batches fenced",
                 code, st.events, st.predictions, st.dead_letters, st.duplicates,
                 st.failed_batches, sapp.fence.dropped_batches)
