"""The worker process: its Faust app, table and agent, built from settings.

:func:`create_app` is the one code path for the worker, the demo, the tests and the benchmark:
a :class:`~stream_app.kafka.faust_compat.FaustApp` tuned by :func:`app_options`, the
``user-state`` table (each user's sequence and each input partition's window record, with a
changelog topic), and a :class:`~stream_app.worker.agent.WorkerAgent` whose methods become the
Faust agent on the events topic, its timers and tasks. :func:`run_worker` runs it until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faust

from model_core.predictor import Recommender
from stream_app.kafka import end_offsets, monotonic
from stream_app.kafka.faust_compat import FaustApp
from stream_app.kafka.fencing import MembershipFence
from stream_app.settings import Settings
from stream_app.windows.persistence import PartitionWindows
from stream_app.worker.agent import WorkerAgent, WorkerStats
from stream_app.worker.privacy import Pseudonyms
from stream_app.worker.processor import BatchProcessor

log = logging.getLogger("seqstream.worker")


@dataclass
class SeqstreamApp:
    """The Faust app plus the objects its agent uses (exposed for tests and tools)."""

    settings: Settings
    app: faust.App
    agent: WorkerAgent
    serving: object | None = None  # stream_app.serve.views.Serving (with the web server)

    @property
    def processor(self) -> BatchProcessor:
        return self.agent.processor

    @property
    def table(self):
        return self.agent.table

    @property
    def stats(self) -> WorkerStats:
        return self.agent.stats

    @property
    def partition_windows(self) -> PartitionWindows:
        return self.agent.windows

    @property
    def fence(self) -> MembershipFence:
        return self.agent.fence


def load_model_from_settings(settings: Settings) -> Recommender:
    from model_core.checkpoint import load_model  # torch import deferred to workers

    if not settings.model_path:
        from schemas.exceptions import SeqstreamError

        raise SeqstreamError("no model: set SEQSTREAM_MODEL_PATH or pass --model CHECKPOINT_DIR")
    from model_core.verify import verify_model

    model = load_model(settings.model_path, device=settings.device)
    verify_model(model, settings.top_k, settings.model_path)  # never serve a broken model
    return model


def app_options(settings: Settings) -> dict:
    """Keyword arguments of ``faust.App`` for ``settings`` (consumer and producer tuning).

    Shared with the benchmark's plain Faust agents, so they run with the very same tuning.

    Faust's web server binds to ``settings.web_host`` (loopback by default; a deployment
    whose probes come from outside opens it). Its ``/router/`` (cluster layout) and
    ``/table/`` (reads any table key, unauthenticated: users' states) views are off; the
    serving endpoints (:mod:`stream_app.serve`) route a user's request to its owner from the
    assignor's layout, which carries each member's ``canonical_url`` (the advertised URL).
    """
    from stream_app.kafka.security import faust_broker_credentials
    from stream_app.serve.routing import advertised_url

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
        canonical_url=advertised_url(settings),
        web_router_enabled=False,
        web_tables_enabled=False,
        producer_linger_ms=5,
        producer_max_batch_size=1 << 20,
        table_standby_replicas=1,
        # sound once end offsets are verified (stream_app.kafka.end_offsets): Tansu under-reports them
        recovery_consistency_check=settings.recovery_consistency_check,
        logging_config=None,
    )


def create_app(settings: Settings, model: Recommender | None = None) -> SeqstreamApp:
    if settings.model_threads:
        import torch

        torch.set_num_threads(settings.model_threads)
    model = model if model is not None else load_model_from_settings(settings)
    app = FaustApp(settings.app_id, **app_options(settings))
    app.keep_monitor = settings.faust_monitor
    app.fast_delivery = settings.fast_delivery
    if settings.verify_end_offsets:
        end_offsets.install(app)
    # The worker accounts windows per input partition (the agent's PartitionWindows), not in
    # the processor: its processor gets no aggregator of its own.
    processor = BatchProcessor(model, max_len=settings.max_seq_len, k=settings.top_k,
                               exclude_history=settings.exclude_history,
                               max_future_ms=settings.max_future_ms,
                               max_record_bytes=settings.max_record_bytes,
                               pseudonyms=Pseudonyms.from_settings(settings),
                               explain_share=settings.explain_share)
    events_topic = app.topic(settings.topic("events"), key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw",
                             partitions=settings.partitions)
    raw_schema = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw")
    # key_type/value_type bytes: Faust picks the store's (recovery) serializers from these,
    # not from ``schema``; without them a restarted worker failed to decode its changelog
    table = app.Table("user-state", default=None, partitions=settings.partitions,
                      schema=raw_schema, key_type=bytes, value_type=bytes)
    agent = WorkerAgent(settings, app, table, processor, model)
    # a late record from a stalled worker never wins (recovery); the agent's retention index
    # learns the keys recovery brings
    monotonic.install(table, on_applied=agent.on_changelog_applied)

    app.agent(events_topic, name="process-events")(agent.run)
    app.timer(interval=1.0)(agent.close_idle_windows)
    app.timer(interval=settings.model_poll_s)(agent.poll_for_model)
    for task in (agent.feed_items, agent.watch_stalls, agent.watch_broker,
                 agent.watch_loop_lag, agent.serve_prometheus):
        app.task(task)
    sapp = SeqstreamApp(settings, app, agent)
    if settings.web_port > 0:
        agent.health.install_pages()
        from stream_app.serve.views import install as install_serving

        sapp.serving = install_serving(sapp)
    app.on_rebalance_complete.connect(agent.on_rebalance_complete)
    app.on_before_shutdown.connect(agent.on_before_shutdown)
    return sapp


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
    if sapp.serving is not None:
        log.info("%s; advertised at %s", sapp.serving.auth.describe(),
                 sapp.serving.routing.self_url)
    worker = faust.Worker(sapp.app, loglevel=settings.log_level, quiet=True,
                          override_logging=False)
    if not worker.stdout.isatty():  # its spinner ends with a cursor escape even then
        worker.spinner = None
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
