"""End offsets for table recovery: the broker's figure checked against a fetch's high watermark."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from stream_app.kafka.end_offsets import corrected_end_offsets


async def _produce_batches(bootstrap: str, topic: str, sizes: list[int]) -> int:
    """Produce one record batch per size (flush between) to partition 0; return the count."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for size in sizes:
            futures = [await producer.send(topic, value=b"x%d" % i, partition=0)
                       for i in range(size)]
            await producer.flush()
            for f in futures:
                await f
    finally:
        await producer.stop()
    return sum(sizes)


async def _check(bootstrap: str, topics: dict[str, list[int]]):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    counts = {t: await _produce_batches(bootstrap, t, sizes) for t, sizes in topics.items()}
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await probe.start()
    try:
        tps = [TopicPartition(t, 0) for t in topics]
        reported = await probe.end_offsets(tps)
    finally:
        await probe.stop()

    def make_consumer():
        return AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=100)

    fixed = await corrected_end_offsets(reported, make_consumer)
    return counts, reported, fixed


@pytest.mark.broker
def test_end_offsets_cover_every_record_of_the_last_batch(broker):
    from kafka.admin import KafkaAdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    topics = {f"eo-{tag}-multi": [1, 5, 40], f"eo-{tag}-single": [1, 1, 1],
              f"eo-{tag}-empty": []}
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        for t in topics:  # one topic per request (the embedded broker's admin quirk)
            admin.create_topics([NewTopic(t, 1, 1)])
    finally:
        admin.close()
    counts, reported, fixed = asyncio.run(_check(broker.bootstrap, topics))
    by_topic = {tp.topic: v for tp, v in fixed.items()}
    reported_by_topic = {tp.topic: v for tp, v in reported.items()}
    for t, n in counts.items():
        assert by_topic[t] == n, (t, reported_by_topic[t], by_topic[t], n)
        assert reported_by_topic[t] <= n


class _FakeConsumer:
    """A consumer whose fetches report ``watermarks`` (None = the fetch never answers)."""

    def __init__(self, watermarks):
        self.watermarks = watermarks
        self.seeks = {}
        self.stopped = False

    async def start(self):
        pass

    async def stop(self):
        self.stopped = True

    def assign(self, tps):
        self.assigned = list(tps)

    def seek(self, tp, offset):
        self.seeks[(tp.topic, tp.partition)] = offset

    async def getmany(self, *tps, timeout_ms, max_records):
        await asyncio.sleep(0)
        return {}

    def highwater(self, tp):
        return self.watermarks.get((tp.topic, tp.partition))


def test_correction_logic_without_a_broker():
    from aiokafka.structs import TopicPartition as TP

    reported = {TP("a", 0): 7, TP("a", 1): 0, TP("b", 0): 30, TP("c", 0): 5}
    fake = _FakeConsumer({("a", 0): 46, ("b", 0): 30, ("c", 0): None})
    fixed = asyncio.run(corrected_end_offsets(reported, lambda: fake, timeout_s=0.3))
    assert fixed == {TP("a", 0): 46, TP("a", 1): 0, TP("b", 0): 30, TP("c", 0): 5}
    # the check reads the last reported record of each non-empty partition, then stops
    assert fake.seeks == {("a", 0): 6, ("b", 0): 29, ("c", 0): 4}
    assert fake.stopped
