"""The worker's agent: micro-batches of events in, predictions, windows and states out.

    events ──► take_batches ──► admit (fence: events of an old generation go back)
                 ├─ parse ──bad──► dead-letters
                 ├─ read_states (the ``user-state`` table, key = user_id)
                 ├─ score (test-then-learn; the batched model call on the model thread in
                 │         sub-batches, serving's requests between them; retried, then dead
                 │         letters with the reason)
                 └─ publish ──► metrics (closed windows), table + changelog, then
                      │            predictions and dead-letters (states first: read-your-writes)
                      └─ acknowledge the input once the broker has all of it (next batch)

One :class:`WorkerAgent` per worker process; :func:`stream_app.worker.app.create_app` builds
it and hands its methods to Faust as the agent, timers and tasks. The Kafka-free stages of a
batch (parse, prepare, finish) are :class:`~stream_app.worker.processor.BatchProcessor`'s,
the same ones that :meth:`BatchProcessor.process` chains for the tests and the benchmark.

Input offsets are acknowledged only after the batch's predictions, dead letters and state
changelog are acknowledged by the broker (at-least-once); that wait overlaps the next batch's
computation (one batch in flight). Redelivered events are recognised by the event-id hashes in
the user state and neither appended nor scored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import itertools
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from model_core.predictor import Recommender
from model_core.sequence_state import UserState
from schemas.dead_letter import DeadLetter
from schemas.erasure import ErasureAudit, is_erase_request
from schemas.exceptions import SchemaError
from schemas.metrics import MetricsWindow
from stream_app.kafka.faust_compat import (
    aiokafka_producer,
    current_event_restored,
    partition_delete,
    partition_get,
    partition_keys,
    set_current_event,
    tune_fetch_wait,
)
from stream_app.kafka.fencing import MembershipFence
from stream_app.kafka.publisher import BatchPublisher
from stream_app.observe.alerts import (
    AlertConfig,
    AlertMonitor,
    model_failure_alert,
    model_swap_alert,
)
from stream_app.observe.health import Health
from stream_app.observe.loop_lag import LoopLag
from stream_app.observe.prometheus import WorkerMetrics, consumer_lags
from stream_app.settings import Settings
from stream_app.windows.aggregation import WindowAggregator
from stream_app.windows.categories import ItemCategories
from stream_app.windows.persistence import PartitionWindows, is_window_key, window_key
from stream_app.worker.batching import take_batches
from stream_app.worker.faults import InjectedFault, from_environment
from stream_app.worker.items_feed import follow_items, make_item_encoder
from stream_app.worker.model_swap import ModelSwapper, control_key
from stream_app.worker.model_thread import ModelThread
from stream_app.worker.privacy import read_erase_request
from stream_app.worker.process import FAILED_BATCH_MARK, READY_MARK
from stream_app.worker.processor import BatchOutput, BatchProcessor, RawRecord, join_topk
from stream_app.worker.retention import RetentionIndex

log = logging.getLogger("seqstream.worker")


_noted_counts: set[str] = set()


def note_item_counts(model) -> None:
    """Once per model version without training counts (a checkpoint saved before GRU4Rec /
    SASRec stored them): say that its windows carry no novelty / ARP / long-tail share."""
    if getattr(model, "item_counts", None) is None and model.version not in _noted_counts:
        _noted_counts.add(model.version)
        log.info("model %s has no training item counts (a checkpoint saved before they were "
                 "stored): its windows carry ILD and Gini but no novelty, ARP or long-tail "
                 "share; retrain it to get them", model.version)


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
    erasures: int = 0  # erase requests carried out
    expired_states: int = 0  # user states removed after the retention without events
    last_batch_wall: float = field(default_factory=time.monotonic)
    event_watermark_ms: int | None = None


def fatal(reason: str, exc: BaseException | None = None, code: int = 70) -> None:
    """Log ``reason`` (with the traceback of ``exc``) and end the process at once.

    For errors after which the worker cannot go on correctly: a clean Faust shutdown would
    wait for the unacknowledged batch forever. Uncommitted input is processed again by the
    next worker (at-least-once; redelivered events are recognised)."""
    log.critical("seqstream worker stopping: %s", reason, exc_info=exc)
    print(f"seqstream worker stopping: {reason}", file=sys.stderr, flush=True)
    for h in logging.getLogger().handlers + log.handlers:
        with contextlib.suppress(Exception):
            h.flush()
    os._exit(code)


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
            set_current_event(stream, event)
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


class WorkerAgent:
    """One worker's batch loop and everything it keeps between batches.

    ``app``: the Faust app; ``table``: the ``user-state`` table (user states and the
    partitions' window records); ``processor``: the Kafka-free stages of a batch.
    The Faust agent, timers and tasks that :func:`~stream_app.worker.app.create_app`
    registers are this object's methods: :meth:`run` (the agent), :meth:`close_idle_windows`,
    :meth:`poll_for_model`, :meth:`feed_items`, :meth:`watch_stalls`, :meth:`watch_broker`,
    :meth:`watch_loop_lag`, :meth:`serve_prometheus`, :meth:`on_rebalance_complete`,
    :meth:`on_before_shutdown`.
    """

    def __init__(self, settings: Settings, app, table, processor: BatchProcessor,
                 model: Recommender) -> None:
        self.settings = settings
        self.app = app
        self.table = table
        self.processor = processor
        self.stats = WorkerStats()
        self.fence = MembershipFence(app, settings.session_timeout_s,
                                     settings.heartbeat_interval_s)
        self.alert_monitor = AlertMonitor(AlertConfig.from_settings(settings), model.version)
        self.prom = WorkerMetrics()
        self.prom.set_model_version(model.version)
        self.events_topic = settings.topic("events")
        self.topic_predictions = settings.topic("predictions")
        self.topic_dead = settings.topic("dead-letters")
        self.topic_metrics = settings.topic("metrics")
        self.topic_alerts = settings.topic("alerts")
        self.topic_audit = settings.topic("audit")
        self.erase_key = control_key(settings)  # erase requests must be signed with it, if set
        self.n_items = model.vocab.n_items
        # crash-safe windows: per input partition, persisted in ``table``
        self.windows = PartitionWindows(self._new_windows, table.get, settings.max_record_bytes)
        # ILD in the windows: each item's category, learnt from the events (in memory, rebuilt
        # after a start: stream_app.windows.categories)
        self.windows.set_item_categories(ItemCategories(model.vocab))
        note_item_counts(model)
        # every model call on one thread; request batches (stream_app.serve) go before the
        # stream's waiting sub-batches (model_thread.py)
        self.executor = ModelThread("seqstream-model", settings.serve_request_turns)
        self._publisher: BatchPublisher | None = None
        # new items at run time (text/fused models with the text extra): items topic -> encoder
        self.item_encoder = make_item_encoder(settings, model)
        self.swapper = ModelSwapper(settings, processor, on_swap=self._on_model_swap)
        self.health = Health(app, settings, self.fence)
        # the poll timer applies a new model itself only between batches
        self.in_batch = False
        # the previous batch's acknowledgement: waited for while the next batch is computed,
        # before that one's outputs are handed over (one batch in flight; input acked in order)
        self.pending_ack: asyncio.Future | None = None
        self._raise_every = from_environment().get("model_raise_every")
        self._model_calls = itertools.count(1)  # numbers the model calls for SEQSTREAM_FAULTS
        self._frozen = False
        # state expiry after SEQSTREAM_STATE_RETENTION_S of event time without events
        self.retention = (RetentionIndex(int(settings.state_retention_s * 1000),
                                         settings.state_retention_sweep_s)
                          if settings.state_retention_s > 0 else None)
        self.max_event_ms: int | None = None  # the newest event time processed
        self._scanned_parts: set[int] = set()  # rocksdb partitions whose keys were indexed
        # held by a batch and by the idle expiry: their table reads and writes never interleave
        self._table_writes = asyncio.Lock()
        # called with each batch's BatchOutput after it is published (serving's cold-start
        # counts: stream_app.serve)
        self.batch_listeners: list = []

    # ------------------------------------------------------------------ outputs
    def _new_windows(self) -> WindowAggregator:
        s = self.settings
        return WindowAggregator(
            ks=s.metric_ks, window_s=s.window_s, allowed_lateness_s=s.allowed_lateness_s,
            hop_s=s.hop_s, hop_window_s=s.hop_window_s, n_items=self.n_items,
            model_version=self.processor.model_version,
            item_counts=getattr(self.processor.model, "item_counts", None))

    @property
    def publisher(self) -> BatchPublisher:
        if self._publisher is None:
            self._publisher = BatchPublisher(aiokafka_producer(self.app))
        return self._publisher

    async def publish_alerts(self, alerts) -> None:
        if alerts:
            await self.publisher.publish(self.topic_alerts,
                                         [(a.metric.encode(), a.to_json()) for a in alerts])
            self.prom.count_alerts(alerts)
            for a in alerts:
                log.warning("alert: %s", a.message)

    async def publish_windows(self, closed: list[tuple[bytes, bytes]]) -> None:
        # keyed <kind>/<start>/p<partition>: a window may be re-published after a crash or a
        # clean stop; consumers keep the latest record per key (persistence.latest_windows)
        if closed:
            await self.publisher.publish(self.topic_metrics, closed)
            self.stats.windows_published += len(closed)
            self.prom.count_windows(len(closed))
            await self.publish_alerts(self.alert_monitor.observe_windows(
                (MetricsWindow.from_json(v) for _, v in closed), int(time.time() * 1000),
                sources=[k.rsplit(b"/", 1)[-1].decode() for k, _ in closed]))  # "p<part>"

    def _on_model_swap(self, new_model) -> None:
        self.windows.set_model_version(new_model.version)
        self.windows.set_item_counts(getattr(new_model, "item_counts", None))
        note_item_counts(new_model)
        if self.windows.categories is not None:
            self.windows.categories.rebind(new_model.vocab)
            self.windows.set_item_categories(self.windows.categories)
        if self.item_encoder is not None:
            try:  # items added at run time are re-installed in the new model (from the cache)
                self.item_encoder.rebind(new_model)
            except Exception as e:
                log.warning("run-time items not carried over to %s: %s", new_model.version, e)

    # ------------------------------------------------------------------ the batch loop
    async def run(self, stream) -> None:
        """The Faust agent: every batch of the events topic, until the stream stops.

        Faust restarts a crashed agent but nothing more reaches it (the failed batch is never
        acked and holds the stream): any error that is not a batch's own is fatal, with its
        reason in the log; the restarted worker resumes from the committed offsets."""
        try:
            within = self.settings.batch_wait_ms / 1000.0
            async for taken in take_batches(stream, self.settings.batch_size, within,
                                            ack=False):
                await self.handle(stream, taken)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - logged with its traceback, then exit
            fatal(f"the worker's batch loop failed: {e!r}", e)

    async def handle(self, stream, taken: list) -> None:
        """One batch: admit, parse, read states, score, publish; its acknowledgement is left
        in :attr:`pending_ack` and awaited by the next batch. Erase requests in the batch cut
        it: the events before one are processed, then the request, then the rest, so each
        user's events and erasures keep their order. Then, when due, expired states go."""
        acking = self.pending_ack
        if acking is not None and acking.done():
            acking.result()  # the previous batch's outputs failed: fatal (in run)
        generation = self.fence.generation
        batch = self.admit(taken, generation)
        if not batch:
            return
        async with self._table_writes:
            cuts = [i for i, e in enumerate(batch) if is_erase_request(e.message.headers)]
            start = 0
            for cut in cuts:
                if cut > start:
                    await self.process(stream, batch[start:cut], generation)
                await self.erase(stream, batch[cut], generation)
                start = cut + 1
            if start < len(batch):
                await self.process(stream, batch[start:], generation)
            if self.retention is not None and self.retention.due():
                await self.expire(generation)

    async def process(self, stream, batch: list, generation) -> None:
        """Events of one batch (no erase request among them) through every stage; in
        lockstep with a learner, in runs each scored by its own version (model_swap)."""
        lockstep = self.swapper.lockstep
        if lockstep is None:
            return await self.process_run(stream, batch, generation)
        if any(e.message.partition for e in batch):
            fatal("SEQSTREAM_LEARN_LOCKSTEP needs a one-partition events topic")
        for lo, hi, k in lockstep.pieces([e.message.offset for e in batch]):
            await self.swapper.wait_for_update(k, self.settings.learn_lockstep_wait_s)
            await self.process_run(stream, batch[lo:hi], generation)

    async def process_run(self, stream, batch: list, generation) -> None:
        """One run of a batch's events through every stage."""
        acking = self.pending_ack
        self.swapper.apply_pending()  # hot swap: only between batches
        self.in_batch = True
        try:
            records = [RawRecord(e.message.key, e.value, e.message.topic, e.message.partition,
                                 e.message.offset, int(e.message.timestamp * 1000))
                       for e in batch]
            events, positions, dead = self.processor.parse(records)
            states, last_of_user = self.read_states(stream, batch, records, events, positions)
            # the loop's own share of a batch comes in pieces: serving's requests (and
            # delivery) run between them, not after the whole batch's Python
            await asyncio.sleep(0)
            out, model_s = await self.score(records, events, positions, dead, states)
            await asyncio.sleep(0)
            if acking is not None:
                await acking  # outputs and changelog stay in batch order
            if not await self.fence.may_write(generation):  # a zombie after a stall: no writes
                self.fence.dropped(len(batch), f"membership of generation {generation} lost")
                self.fence.release(batch)
                self.prom.count_fenced_batch()
                self.windows.forget()  # re-read the window records: this batch is not in them
                return
            await self.publish(stream, batch, records, out, last_of_user)
            await self.observe(records, out, model_s)
        finally:
            self.in_batch = False

    async def erase(self, stream, event, generation) -> None:
        """An erase request (:mod:`schemas.erasure`): the user's state leaves the table and a
        tombstone goes to its changelog partition; the audit record goes to the ``audit``
        topic; the request's offset is acknowledged once both are durable. A request that does
        not verify is a dead letter with the reason."""
        if self.pending_ack is not None:
            await self.pending_ack
        msg = event.message
        if not await self.fence.may_write(generation):
            self.fence.dropped(1, f"membership of generation {generation} lost")
            self.fence.release([event])
            return
        now_ms = int(time.time() * 1000)
        try:
            req = read_erase_request(event.value, msg.key, self.erase_key)
        except SchemaError as e:
            dl = DeadLetter.of(event.value, e.reason, msg.topic, msg.partition, msg.offset,
                               msg.key, failed_at_ms=now_ms)
            outputs = await self.publisher.enqueue(self.topic_dead, [(msg.key, dl.to_json())])
            self.stats.dead_letters += 1
            self.pending_ack = asyncio.ensure_future(
                self.acknowledge(stream, [event], outputs, []))
            return
        key = self.processor.state_key(req.user_id)
        store = self.table.data
        with current_event_restored(stream):
            set_current_event(stream, event)
            had_state = store.get(key) is not None
            if had_state:
                del store[key]
        changelog = await self.publisher.enqueue_partitioned(
            self.table.changelog_topic.get_topic_name(), {msg.partition: [(key, None)]})
        key_hash = hashlib.sha256(key).hexdigest()
        audit = ErasureAudit(key_hash, req.requested_by, req.requested_at_ms, now_ms, had_state,
                             msg.partition, msg.offset, req.reason)
        outputs = await self.publisher.enqueue(self.topic_audit,
                                               [(key_hash.encode(), audit.to_json())])
        self.stats.erasures += 1
        if self.retention is not None:
            self.retention.forget(msg.partition, key)
        log.info("erased a user's state (key sha256 %s..., %s) on request of %s", key_hash[:12],
                 "state held" if had_state else "no state held", req.requested_by)
        self.pending_ack = asyncio.ensure_future(
            self.acknowledge(stream, [event], outputs, changelog))

    def admit(self, taken: list, generation) -> list:
        """The events of ``taken`` delivered in the current group generation; those delivered
        before a rebalance are released, to come again from the committed offsets."""
        batch, stale = self.fence.current(taken)
        if stale:
            self.fence.release(stale)
            self.stats.stale_events += len(stale)
            log.info("%d events delivered before the rebalance to generation %s left for "
                     "redelivery", len(stale), generation)
        return batch

    def read_states(self, stream, batch: list, records: list[RawRecord], events: list,
                    positions: list[int]) -> tuple[dict[str, UserState | None], dict]:
        """Each user's state from the table (adapted to the current model), each user's last
        event of the batch, and the window record of every partition in the batch loaded.

        A rocksdb:// table reads the partition of the *current event*: each read runs with
        an event of the key's own partition."""
        store_get = self.table.data.get
        adapt = self.swapper.adapt
        states: dict[str, UserState | None] = {}
        last_of_user: dict[str, object] = {}
        with current_event_restored(stream):
            for p, ev in zip(positions, events, strict=True):
                user = ev.user_id
                if user not in states:
                    set_current_event(stream, batch[p])
                    # the store itself: Table.get adds Faust's per-key sensor calls
                    raw = store_get(user.encode())
                    states[user] = adapt(UserState.decode(raw)) if raw else None
                last_of_user[user] = batch[p]
            seen_parts: set[int] = set()
            for r, e in zip(records, batch, strict=True):
                if r.partition not in seen_parts:  # load each window record once
                    seen_parts.add(r.partition)
                    set_current_event(stream, e)
                    self.windows.part(r.partition)
        return states, last_of_user

    async def score(self, records: list[RawRecord], events: list, positions: list[int],
                    dead: list, states: dict) -> tuple[BatchOutput, float | None]:
        """Test-then-learn and the batch's model call (off the event loop); the batch's
        outputs and the model call's seconds (None without valid events)."""
        proc = self.processor
        if not events:
            return proc.finish(proc.prepare(records, events, positions, dead, states), None,
                               int(time.time() * 1000)), None
        if self.item_encoder is not None and self.item_encoder.pending:
            # new items join the model on the model thread, between two batches (at most 64
            # per batch, about 1 s of CPU encoding: a burst of new items must not stall
            # scoring; the rest joins over the next batches)
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self.item_encoder.flush, 64)
        # the engine's Python on this thread; only the model call off the event loop (it
        # releases the GIL in torch: delivery goes on meanwhile)
        prepared = proc.prepare(records, events, positions, dead, states)
        t_model = time.perf_counter()
        topk, failure = await self.predict_with_retries(prepared.step, len(events))
        model_s = time.perf_counter() - t_model
        now_ms = int(time.time() * 1000)
        if failure is not None:  # the batch's events go to dead letters with the reason
            self.stats.model_failed_events += len(events)
            return proc.fail(prepared, failure, now_ms), model_s
        rows = proc.explained_rows(events)
        why = None
        if rows:  # on the model thread: the gradient methods run the model
            why = await asyncio.get_running_loop().run_in_executor(
                self.executor, proc.explain, prepared.step, topk, rows)
        out = proc.finish(prepared, topk, now_ms, why)
        self.swapper.tag_states(out.result.touched.values())
        return out, model_s

    async def predict_with_retries(self, step, n_events: int) -> tuple[object, str | None]:
        """The batch's model call, tried ``batch_retries + 1`` times with a growing pause;
        (top-k, None) or (None, the reason) once every try failed."""
        version = self.processor.model_version
        tries = self.settings.batch_retries + 1
        loop = asyncio.get_running_loop()
        reason = None
        for attempt in range(1, tries + 1):
            # sub-batches, all queued at once: a request batch runs between two of them
            parts = self.processor.predict_parts(step, self.settings.serve_stream_part_rows)
            if self._raise_every is not None:
                parts[0] = self._flaky(parts[0])
            try:
                return join_topk(await asyncio.gather(
                    *(loop.run_in_executor(self.executor, p) for p in parts))), None
            except Exception as e:  # noqa: BLE001 - any model failure is this batch's
                self.stats.failed_batches += 1
                self.prom.count_failed_batch()
                log.error("%s: model call failed (try %d of %d, %d events, model %s): %r",
                          FAILED_BATCH_MARK, attempt, tries, n_events, version, e,
                          exc_info=attempt == tries)
                reason = f"model {version} failed on the batch: {e!r}"
                if attempt < tries:
                    await asyncio.sleep(min(5.0, 0.1 * 4 ** (attempt - 1)))
        await self.publish_alerts([model_failure_alert(version, reason,
                                                       int(time.time() * 1000))])
        return None, reason

    async def expire(self, generation) -> None:
        """User states without an event for the retention (event time, against the newest
        event processed) leave the table, with a tombstone in their changelog partition."""
        if self.max_event_ms is None:
            return
        store = self.table.data
        parts = [tp.partition for tp in self.app.assignor.assigned_actives()
                 if tp.topic == self.events_topic]

        def last_event_ms(partition: int, key: bytes) -> int | None:
            raw = partition_get(store, key, partition)
            if not raw:
                return None
            ts = UserState.decode(raw).timestamps_ms
            return int(ts[-1]) if len(ts) else None

        expired = self.retention.expired(self.max_event_ms, parts, last_event_ms)
        if not expired or not await self.fence.may_write(generation):
            return
        for p, keys in expired.items():
            for key in keys:
                partition_delete(store, key, p)
        sent = await self.publisher.enqueue_partitioned(
            self.table.changelog_topic.get_topic_name(),
            {p: [(key, None) for key in keys] for p, keys in expired.items()})
        await states_durable(self.table, sent)
        n = sum(len(keys) for keys in expired.values())
        self.stats.expired_states += n
        log.info("%d user states expired (no event for %g s of event time)", n,
                 self.settings.state_retention_s)

    def on_changelog_applied(self, records: list) -> None:
        """Changelog records the table applied (recovery, standbys): the retention index
        learns the keys and their partitions."""
        if self.retention is None:
            return
        for r in records:
            key = r.key
            if key is not None and not is_window_key(key):
                self.retention.learn(r.message.partition, key, r.value is not None)

    def _index_local_keys(self, partitions: list[int]) -> None:
        """A ``rocksdb://`` store keeps its keys across clean restarts without replaying
        them from the changelog: index those of newly assigned partitions once."""
        if self.retention is None:
            return
        for p in partitions:
            if p in self._scanned_parts:
                continue
            keys = partition_keys(self.table.data, p)
            if keys is None:  # the memory store: every key comes through the changelog
                return
            self._scanned_parts.add(p)
            for key in keys:
                if not is_window_key(key):
                    self.retention.learn(p, key, True)

    def _flaky(self, predict):
        n = next(self._model_calls)  # one model call per try; every N-th raises

        def call():
            if n % self._raise_every == 0:
                raise InjectedFault(f"injected model failure (call {n})")
            return predict()
        return call

    async def publish(self, stream, batch: list, records: list[RawRecord], out: BatchOutput,
                      last_of_user: dict) -> None:
        """Hand the batch's closed windows, predictions, dead letters and changelog to the
        producer; the input is acknowledged once the broker has them (:meth:`acknowledge`)."""
        closed, window_records = self.windows.account(
            [r.partition for r in records], [r.offset for r in records], out.events,
            out.positions, out.result, out.latencies_ms, out.emitted_at_ms)
        pub = self.publisher
        # closed windows are acknowledged before the window records that drop them
        await self.publish_windows(closed)
        last_of_part = {r.partition: e for r, e in zip(records, batch, strict=True)}
        touched = out.result.touched if out.result else {}
        # the states are in the table before any prediction leaves: whoever reads a
        # prediction and then asks the serving endpoints gets an answer that holds its event
        # (read-your-writes by construction)
        changelog = await enqueue_states(
            stream, self.table, pub, touched, last_of_user,
            first=[(window_key(p), rec, last_of_part[p]) for p, rec in window_records])
        await asyncio.sleep(0)  # a piece of the loop's share (process)
        outputs = (await pub.enqueue(self.topic_predictions, out.predictions)
                   + await pub.enqueue(self.topic_dead, out.dead_letters))
        if out.events:
            newest = max(e.timestamp_ms for e in out.events)
            self.max_event_ms = max(newest, self.max_event_ms or newest)
        if self.retention is not None:
            for user, st in touched.items():
                if len(st.timestamps_ms):
                    self.retention.touch(last_of_user[user].message.partition, user.encode(),
                                         int(st.timestamps_ms[-1]))
        self.pending_ack = asyncio.ensure_future(
            self.acknowledge(stream, batch, outputs, changelog))

    async def acknowledge(self, stream, batch: list, outputs: list, changelog: list) -> None:
        """Once the broker has a batch's outputs and states, ack its input events."""
        await states_durable(self.table, changelog)
        await BatchPublisher.wait(outputs)
        for event in batch:
            await stream.ack(event)

    async def observe(self, records: list[RawRecord], out: BatchOutput,
                      model_s: float | None) -> None:
        """The batch in the worker's counters, alerts and Prometheus metrics."""
        st = self.stats
        n_dup = len(out.result.duplicates) if out.result else 0
        st.batches += 1
        st.events += len(out.events)
        st.predictions += len(out.predictions)
        st.dead_letters += len(out.dead_letters)
        st.duplicates += n_dup
        st.last_batch_wall = time.monotonic()
        st.event_watermark_ms = self.windows.watermark_ms
        for listener in self.batch_listeners:
            listener(out)
        self.alert_monitor.model_version = self.processor.model_version
        await self.publish_alerts(self.alert_monitor.observe_batch(
            out.events, out.result, out.latencies_ms, out.emitted_at_ms,
            partitions=[records[p].partition for p in out.positions]))
        prom = self.prom
        prom.observe_batch(len(records), len(out.events), len(out.predictions),
                           len(out.dead_letters), n_dup, out.latencies_ms, model_s)
        prom.set_model_version(self.processor.model_version)
        prom.set_watermark(st.event_watermark_ms)
        prom.set_lag(consumer_lags(self.app.consumer,
                                   {(r.topic, r.partition): r.offset for r in records}))

    # ------------------------------------------------------------------ timers and tasks
    def load_assigned_windows(self) -> None:
        """The windows of every assigned partition, also those that got no batch since the
        last rebalance (their open windows are in the table only)."""
        for tp in self.app.assignor.assigned_actives():
            if tp.topic == self.events_topic:
                self.windows.part(tp.partition)

    async def close_idle_windows(self) -> None:
        """Every second: notice a failed acknowledgement no later batch saw, and with no
        input for ``idle_close_s`` let event time follow the wall clock so windows close."""
        acking = self.pending_ack
        if acking is not None and acking.done() and not acking.cancelled() \
                and acking.exception() is not None:  # no batch came after to notice
            fatal(f"a batch's outputs were not accepted by the broker: "
                  f"{acking.exception()!r}", acking.exception())
        idle_s = time.monotonic() - self.stats.last_batch_wall
        if not self.fence.may_write_now():  # after a stall or in a rebalance: batches decide
            return
        self.load_assigned_windows()
        idle = idle_s >= self.settings.idle_close_s and not self.in_batch
        if self.alert_monitor.held and idle:
            # the detectors wait for the slowest partition; idle input: feed what is held
            await self.publish_alerts(self.alert_monitor.flush(int(time.time() * 1000)))
        if self.windows.open_windows() and idle:
            await self.publish_windows(self.windows.close_idle(int(idle_s * 1000),
                                                               int(time.time() * 1000)))
        if (self.retention is not None and not self._table_writes.locked()
                and self.retention.due()):  # no input: what the last batches made expire
            async with self._table_writes:
                await self.expire(self.fence.generation)

    async def poll_for_model(self) -> None:
        """Every ``model_poll_s``: a new model named on the control topic is loaded off the
        loop and switched to between batches."""
        await asyncio.get_running_loop().run_in_executor(None, self.swapper.poll)
        failures = self.swapper.take_failures()
        if failures:
            now_ms = int(time.time() * 1000)
            await self.publish_alerts([model_swap_alert(self.processor.model_version, reason,
                                                        now_ms) for reason in failures])
        if not self.in_batch:  # idle agent: switch now (no await between check and switch)
            self.swapper.apply_pending()

    async def feed_items(self) -> None:
        if self.item_encoder is not None:
            await follow_items(self.settings, self.item_encoder,
                               lambda dead: self.publisher.publish(self.topic_dead, dead))

    async def watch_stalls(self) -> None:
        await self.fence.watch()

    async def watch_broker(self) -> None:
        await self.health.watch_broker(lambda reason: fatal(reason, code=69))

    async def watch_loop_lag(self) -> None:
        """How late this worker's event loop runs what is ready, into the Prometheus
        histogram (serving's requests and the stream's batches wait that long)."""
        await LoopLag(sink=self.prom.loop_lag.observe_many).run()

    async def serve_prometheus(self) -> None:
        if self.settings.metrics_port > 0:
            self.prom.serve(self.settings.metrics_port, self.settings.metrics_host)

    async def on_rebalance_complete(self, sender, **kwargs) -> None:
        assigned = sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                          if tp.topic == self.events_topic)
        self.windows.forget()  # partitions may have moved: re-read window records
        self.fence.on_new_generation()
        self.health.assigned = True
        self.alert_monitor.forget_partitions()
        self._index_local_keys(assigned)
        tune_fetch_wait(self.app, self.settings.batch_wait_ms)
        if not self._frozen:
            # Everything alive at start (torch, Faust, the model: a few hundred thousand
            # objects) out of the cyclic collector's reach: a full collection walked them all,
            # a 150-200 ms pause every second or two under load (p99 latency). Once: frozen
            # objects that later become cyclic garbage are never collected.
            self._frozen = True
            gc.collect()
            gc.freeze()
        print(f"{READY_MARK} partitions={assigned} model={self.processor.model_version}",
              flush=True)

    async def on_before_shutdown(self, sender, **kwargs) -> None:
        """Clean shutdown: publish every open window rather than losing it (unless this
        worker's membership was lost: its windows are the new owners' now)."""
        if self.fence.may_write_now(rebalancing_ok=True):
            with contextlib.suppress(Exception):
                self.load_assigned_windows()
                now_ms = int(time.time() * 1000)
                await self.publish_windows(self.windows.flush(now_ms))
                await self.publish_alerts(self.alert_monitor.flush(now_ms))
        self.swapper.close()
