"""``seqstream tail TOPIC``: a quick look at a topic's records, one JSON object per line.

``TOPIC`` is a short name (``events``, ``predictions``, ``metrics``, ``dead-letters``,
``alerts``, ``items``, ``control``, or any other) that resolves to ``<prefix>TOPIC``; a name
that already starts with the prefix, or a topic that exists only under the name given (a
table's changelog, say), is used as it is. Each line: ``partition``, ``offset``,
``timestamp_ms``, ``key`` (text) and ``value`` (the record's JSON, or its text when it is
not JSON), so the output pipes into ``jq``.

By default the last ``-n`` records (10) of the topic, in time order; ``--from-beginning``
the first ``-n`` (all when not given) in the order they are read; ``--follow`` then keeps
printing new records until Ctrl-C. Reading takes no consumer group (nothing is committed,
the stream is not disturbed) and never creates a topic.
"""

from __future__ import annotations

import sys
import time

import orjson

from stream_app.commands._common import kafka_settings, non_negative_int
from stream_app.kafka.security import kafka_python_kwargs

#: A snapshot read ends once every partition is read to its high watermark, or after this
#: long without a record (the embedded broker under-reports end offsets).
IDLE_S = 1.5


def register(sub) -> None:
    from stream_app.commands._common import add_kafka_options

    p = sub.add_parser("tail", help="print a topic's records (JSON lines) for a quick look")
    p.add_argument("topic", help="events | predictions | metrics | dead-letters | alerts | "
                                 "items | control, or a full topic name")
    p.add_argument("-n", type=non_negative_int, default=None, metavar="N",
                   help="records to print: the last N (default 10), or with --from-beginning "
                        "the first N (default all)")
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the first record instead of the last N")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new records until Ctrl-C")
    add_kafka_options(p)
    p.set_defaults(func=run)


def format_record(msg) -> str:
    """One line of JSON for a kafka-python ``ConsumerRecord``."""
    value = msg.value
    if value is not None:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            value = value.decode("utf-8", errors="replace")
    key = msg.key.decode("utf-8", errors="replace") if msg.key is not None else None
    return orjson.dumps({"partition": msg.partition, "offset": msg.offset,
                         "timestamp_ms": msg.timestamp, "key": key, "value": value}).decode()


def resolve_topic(consumer, settings, name: str) -> tuple[str, set[int]]:
    """``(topic, partitions)`` for the name given (see the module doc); raises a one-line
    :class:`~schemas.exceptions.SeqstreamError` when neither candidate exists."""
    from schemas.exceptions import SeqstreamError
    from stream_app.kafka.topics import TOPICS

    prefix = settings.topic_prefix
    candidates = [name] if name.startswith(prefix) else [prefix + name, name]
    for topic in candidates:
        parts = consumer.partitions_for_topic(topic)  # all topics' metadata: creates none
        if parts:
            return topic, parts
    raise SeqstreamError(
        f"no topic {' or '.join(candidates)} on {settings.broker_url} (seqstream's: "
        f"{', '.join(TOPICS)} under prefix {prefix!r}; SEQSTREAM_TOPIC_PREFIX / "
        "--topic-prefix; a worker or replay creates them)")


def run(args) -> int:
    settings = kafka_settings(args)
    try:
        for line in tail_lines(settings, args.topic, n=args.n,
                               from_beginning=args.from_beginning, follow=args.follow):
            sys.stdout.write(line + "\n")
            if args.follow:
                sys.stdout.flush()
    except KeyboardInterrupt:  # the way out of --follow
        return 0
    except BrokenPipeError:  # `seqstream tail ... | head`
        sys.stderr.close()
        return 0
    return 0


def tail_lines(settings, name: str, n: int | None = None, from_beginning: bool = False,
               follow: bool = False):
    """The lines :func:`run` prints (a generator; with ``follow`` it does not end)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, allow_auto_create_topics=False,
                             **kafka_python_kwargs(settings))
    try:
        topic, parts = resolve_topic(consumer, settings, name)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
            shown = 0
            for msg in _snapshot(consumer, tps):
                if n is not None and shown >= n:
                    break
                shown += 1
                yield format_record(msg)
            if n is not None and shown >= n and follow:
                consumer.seek_to_end(*tps)  # the first N shown: follow from now on
        else:
            n = 10 if n is None else n
            start, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
            for tp in tps:  # at least the last n of each partition (end may be under-reported)
                consumer.seek(tp, max(start[tp], end[tp] - n))
            recent = sorted(_snapshot(consumer, tps),
                            key=lambda m: (m.timestamp, m.partition, m.offset))
            for msg in recent[len(recent) - n:] if n else []:
                yield format_record(msg)
        while follow:
            for records in consumer.poll(timeout_ms=500).values():
                for msg in records:
                    yield format_record(msg)
    finally:
        consumer.close()


def _snapshot(consumer, tps):
    """The records from the current positions to each partition's high watermark."""
    last = time.monotonic()
    while time.monotonic() - last < IDLE_S:
        batch = consumer.poll(timeout_ms=300)
        for records in batch.values():
            last = time.monotonic()
            yield from records
        if all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp)
               for tp in tps):
            return
