"""Topic names, creation and plain reading (kafka-python, for tools, tests and the demo)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

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


def read_topic(settings: Settings, name: str, idle_s: float = 2.0, timeout_s: float = 60.0,
               expect: int | None = None) -> list:
    """Every message of a topic from the beginning (kafka-python, no consumer group).

    Stops after ``idle_s`` without a new message, once ``expect`` messages were read, or at
    ``timeout_s``. Returns kafka-python ``ConsumerRecord`` objects.
    """
    return list(iter_topic(settings, name, idle_s=idle_s, timeout_s=timeout_s, expect=expect))


def iter_topic(settings: Settings, name: str, idle_s: float = 2.0, timeout_s: float = 60.0,
               expect: int | None = None, from_beginning: bool = True,
               follow: bool = False) -> Iterator:
    topic = settings.topic(name) if name in TOPICS else name
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=200,
                             **kafka_python_kwargs(settings))
    try:
        parts = None
        deadline = time.monotonic() + timeout_s
        while parts is None and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                time.sleep(0.2)
        if not parts:
            return
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        n = 0
        last = time.monotonic()
        while follow or time.monotonic() < deadline:
            got = False
            for msg in consumer:
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
