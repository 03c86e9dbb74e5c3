"""Topic names, creation and plain reading (kafka-python, for tools, tests and the demo)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaConnectionError, NoBrokersAvailable, TopicAlreadyExistsError

from stream_app.kafka.security import kafka_python_kwargs
from stream_app.settings import Settings

#: Topics seqstream reads or writes (the short names; full names via ``Settings.topic``).
TOPICS = ("events", "predictions", "metrics", "dead-letters", "alerts", "items", "control",
          "audit")


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Kafka topic configs seqstream sets when it creates ``name``: the dead letters (they
    keep the original bytes of bad records, which may hold personal data) get their own
    retention, ``dead_letter_retention_ms``; other topics take the broker's defaults."""
    if name == "dead-letters" and settings.dead_letter_retention_ms > 0:
        return {"retention.ms": str(settings.dead_letter_retention_ms)}
    return {}


def ensure_topics(settings: Settings, names: tuple[str, ...] = TOPICS,
                  timeout_s: float = 30.0) -> None:
    """Create the topics that do not exist yet (``settings.partitions`` partitions each).

    Waits up to ``timeout_s`` for a broker that is not reachable yet (one just started);
    only that is retried: a configuration error (security settings, a missing secret file)
    raises at once."""
    security = kafka_python_kwargs(settings)  # SecurityConfigError: no retry can fix it
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                     client_id=f"{settings.app_id}-admin", **security)
            break
        except (NoBrokersAvailable, KafkaConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    try:
        # One topic per request: an existing topic must not stop the others being created.
        # (admin.list_topics() fails on the embedded broker: it returns ACL operation codes
        # kafka-python 2.3 does not know.)
        for n in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(settings.topic(n),
                                              num_partitions=settings.partitions,
                                              replication_factor=settings.replication_factor,
                                              topic_configs=topic_configs(settings, n))])
    finally:
        admin.close()


def assign_whole_topic(consumer: KafkaConsumer, topic: str, deadline: float,
                       from_beginning: bool = True,
                       stopped: Callable[[], bool] = lambda: False) -> bool:
    """Assign every partition of ``topic`` to a group-less ``consumer``, at the beginning
    (or the end), once the broker names them (waiting until ``deadline``, a
    ``time.monotonic()`` value, or ``stopped``); False when it never did."""
    parts = None
    while parts is None and time.monotonic() < deadline and not stopped():
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            time.sleep(0.2)
    if not parts:
        return False
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    if from_beginning:
        consumer.seek_to_beginning(*tps)
    else:
        consumer.seek_to_end(*tps)
    return True


def read_topic(settings: Settings, name: str, idle_s: float = 2.0, timeout_s: float = 60.0,
               expect: int | None = None) -> list:
    """Every message of a topic from the beginning (kafka-python, no consumer group).

    Stops after ``idle_s`` without a new message, once ``expect`` messages were read, or at
    ``timeout_s``. Returns kafka-python ``ConsumerRecord`` objects.
    """
    return list(iter_topic(settings, name, idle_s=idle_s, timeout_s=timeout_s, expect=expect))


def iter_topic(settings: Settings, name: str, idle_s: float = 2.0, timeout_s: float = 60.0,
               expect: int | None = None, from_beginning: bool = True,
               follow: bool = False, stop: threading.Event | None = None) -> Iterator:
    """A topic's messages as they come (:func:`read_topic`'s ends; ``follow``: no idle end,
    no timeout once the topic is there). ``stop``, when set, ends it within a poll (0.2 s),
    a message or not, and its consumer is closed."""
    topic = settings.topic(name) if name in TOPICS else name
    stopped = stop.is_set if stop is not None else lambda: False
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=200,
                             **kafka_python_kwargs(settings))
    try:
        deadline = time.monotonic() + timeout_s
        if not assign_whole_topic(consumer, topic, deadline, from_beginning, stopped):
            return
        n = 0
        last = time.monotonic()
        while (follow or time.monotonic() < deadline) and not stopped():
            got = False
            for msg in consumer:
                if stopped():
                    return
                got = True
                n += 1
                yield msg
                if expect is not None and n >= expect:
                    return
            if got:
                last = time.monotonic()
            elif not follow and time.monotonic() - last > idle_s:
                return
    finally:
        consumer.close()


class Follower:
    """Follows a topic from the beginning in a thread of its own (named
    ``seqstream-follow-<topic>``), calling ``each`` with every message as it comes, until
    ``expect`` messages were read or :meth:`stop`. Stop it before the broker stops: it ends
    within a poll, a message or not (before, the demo's counters and the benchmarks' ended
    only at a message, so a quiet topic's consumer went on polling a stopped broker and
    logged reconnects, into the caplog of later tests in the same process)."""

    def __init__(self, settings: Settings, name: str, each: Callable[[object], None],
                 expect: int | None = None) -> None:
        self._stop = threading.Event()
        self._args = (settings, name, each, expect)
        self._t = threading.Thread(target=self._run, name=f"seqstream-follow-{name}",
                                   daemon=True)

    def start(self) -> Follower:
        self._t.start()
        return self

    def _run(self) -> None:
        settings, name, each, expect = self._args
        for m in iter_topic(settings, name, follow=True, expect=expect, stop=self._stop):
            each(m)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask it to end and wait up to ``timeout_s`` (its consumer closes as it ends)."""
        self._stop.set()
        self._t.join(timeout_s)

    def alive(self) -> bool:
        return self._t.is_alive()
