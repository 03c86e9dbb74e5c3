"""Every private Faust name seqstream uses, behind one check of the Faust version.

seqstream reaches into Faust (faust-streaming) where it offers no public way: the stream's
current event (a table store picks its partition from it), the stream's passive iteration
(batches without a task per event), the underlying aiokafka producer (one Kafka batch per
partition), the consumer's fetch wait (Faust hard-codes 1500 ms) and the consumer class (direct
delivery, :mod:`stream_app.kafka.delivery`). Those names can change in any Faust release, so
they live here and in the other modules of :mod:`stream_app.kafka` only, and a Faust other than
the one they were written against stops the worker at start with one line saying so, instead
of misbehaving later.
"""

from __future__ import annotations

import contextlib

import faust

from schemas.exceptions import SeqstreamError

FAUST_VERSION = "0.15.3"  # the version these names were read from (pinned in pyproject.toml)


def check_faust_version(found: str | None = None) -> None:
    """Raise :class:`SeqstreamError` unless the installed Faust is :data:`FAUST_VERSION`."""
    found = faust.__version__ if found is None else found
    if found != FAUST_VERSION:
        raise SeqstreamError(
            f"faust-streaming {found} is installed; seqstream uses private names of "
            f"faust-streaming {FAUST_VERSION} (stream_app/kafka/faust_compat.py). Install it: "
            f"pip install 'faust-streaming=={FAUST_VERSION}'")


def set_current_event(stream, event) -> None:
    """Make ``event`` the stream's current event (tables and stores read its partition)."""
    stream._set_current_event(event)


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


def iterate_passively(stream, channel_iterator) -> None:
    """Let ``stream`` consume ``channel_iterator`` without a task per event (Faust's passive
    mode: its processors run in the caller's iteration)."""
    stream._enable_passive(channel_iterator)


def remove_processor(stream, processor) -> None:
    """Take back a processor added with ``stream.add_processor``."""
    stream._processors.remove(processor)


def _partition_db(store, partition: int):
    """The RocksDB of ``partition`` in a ``rocksdb://`` store; None for the memory store."""
    db_for = getattr(store, "_db_for_partition", None)
    return db_for(partition) if db_for is not None else None


def partition_get(store, key: bytes, partition: int) -> bytes | None:
    """``key``'s value in the table store's ``partition``, whatever the stream's current event
    (Faust's own reads take the partition from it)."""
    db = _partition_db(store, partition)
    return store.data.get(key) if db is None else db.get(key)


def partition_delete(store, key: bytes, partition: int) -> None:
    """Remove ``key`` from the table store's ``partition`` (no changelog record: the caller
    writes the tombstone)."""
    db = _partition_db(store, partition)
    if db is None:
        store.data.pop(key, None)
    elif hasattr(db, "delete"):
        db.delete(key)
    else:  # rocksdict
        with contextlib.suppress(KeyError):
            del db[key]


def partition_keys(store, partition: int) -> list[bytes] | None:
    """Keys held locally for ``partition`` by a ``rocksdb://`` store (kept across clean
    restarts, so never replayed from the changelog); None for the memory store."""
    db = _partition_db(store, partition)
    return None if db is None else list(store._visible_keys(db))


def aiokafka_producer(app: faust.App):
    """The started aiokafka producer under ``app``'s Faust producer."""
    return app.producer._ensure_producer()


def _fetcher(app: faust.App):
    return getattr(app.consumer._thread._consumer, "_fetcher", None)


def fetch_wait_ms(app: faust.App) -> int | None:
    """The consumer's current fetch wait (None before the consumer has started)."""
    return getattr(_fetcher(app), "_fetch_max_wait_ms", None)


def tune_fetch_wait(app: faust.App, batch_wait_ms: int) -> None:
    """Lower the consumer's fetch wait from Faust's fixed 1500 ms to the batch wait (5 to
    500 ms). A broker may hold a fetch for the whole wait even when records arrive meanwhile
    (the embedded Tansu does: at low rates that added 0.4-0.7 s median latency; at 50 ms,
    9 ms). Faust offers no setting, so this sets aiokafka's fetcher attribute (read for every
    new fetch request). Call after the consumer has started (on rebalance complete); before,
    it does nothing."""
    with contextlib.suppress(AttributeError):
        fetcher = app.consumer._thread._consumer._fetcher
        fetcher._fetch_max_wait_ms = max(5, min(batch_wait_ms, 500))


class FaustApp(faust.App):
    """``faust.App`` after :func:`check_faust_version`, that can leave out Faust's Monitor
    sensor (``keep_monitor = False``) and deliver consumed messages without tasks per message
    (``fast_delivery``).

    Faust calls every sensor several times per event (message in, stream event in and out,
    message out); its Monitor keeps per-topic and per-stream counters for Faust's web /stats
    page. seqstream's Prometheus metrics are counted per batch and need none of it.
    """

    keep_monitor = True
    fast_delivery = False  # stream_app.kafka.delivery: no asyncio tasks per consumed message

    def __init__(self, *args, **kwargs) -> None:
        check_faust_version()
        super().__init__(*args, **kwargs)

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
