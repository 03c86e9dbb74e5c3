"""Batched output to Kafka: one aiokafka batch per partition instead of one send per record."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka.partitioner import DefaultPartitioner


class BatchPublisher:
    """Publishes many (key, value) records with few calls into the producer.

    Records with the same key go to the same partition (Kafka's default murmur2
    partitioner), so consumers of ``predictions`` see a user's predictions in order.
    :meth:`publish` returns once every record is acknowledged by the broker: the caller acks
    its input only after that (at-least-once).
    """

    def __init__(self, producer) -> None:  # an aiokafka.AIOKafkaProducer
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._key_parts: dict[tuple[str, int], dict[bytes, int]] = {}

    async def _partitions_for(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = sorted(await self._producer.partitions_for(topic))
            self._partitions[topic] = parts
        return parts

    async def publish(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        await self.wait(await self.enqueue(topic, records))

    async def enqueue(self, topic: str, records: Sequence[tuple[bytes | None, bytes]],
                      ) -> list[tuple[int, int, asyncio.Future]]:
        """Hand ``records`` to the producer (key-hash partitioning) without waiting for the
        broker; returns what :meth:`wait` waits for."""
        if not records:
            return []
        parts = await self._partitions_for(topic)
        by_part: dict[int, list[tuple[bytes | None, bytes]]] = {}
        part_of = self._partitioner
        # murmur2 is pure Python in aiokafka: hash each key once (keys repeat: one per user)
        cache = self._key_parts.setdefault((topic, len(parts)), {})
        if len(cache) > 200_000:
            cache.clear()
        for key, value in records:
            if key is None:
                p = parts[hash(value) % len(parts)]
            else:
                p = cache.get(key)
                if p is None:
                    p = cache[key] = part_of(key, parts, parts)
            by_part.setdefault(p, []).append((key, value))
        return await self.enqueue_partitioned(topic, by_part)

    async def enqueue_partitioned(
            self, topic: str, by_part: dict[int, list[tuple[bytes | None, bytes]]],
    ) -> list[tuple[int, int, asyncio.Future]]:
        """Hand each partition's records to the producer in order, as few batches as fit;
        returns (partition, records, future of the batch's metadata) per batch."""
        sent: list[tuple[int, int, asyncio.Future]] = []
        for p, recs in by_part.items():
            batch = self._producer.create_batch()
            for key, value in recs:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    sent.append((p, batch.record_count(),
                                 await self._producer.send_batch(batch, topic, partition=p)))
                    batch = self._producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"record of {len(value)} bytes exceeds the batch size")
            if batch.record_count():
                sent.append((p, batch.record_count(),
                             await self._producer.send_batch(batch, topic, partition=p)))
        return sent

    @staticmethod
    async def wait(sent: list[tuple[int, int, asyncio.Future]]) -> dict[int, int]:
        """Wait for the broker to acknowledge enqueued batches; per partition, the offset of
        its last record (a batch's future carries its base offset)."""
        metas = await asyncio.gather(*(f for _, _, f in sent))
        last: dict[int, int] = {}
        for (p, n, _), meta in zip(sent, metas, strict=True):
            last[p] = max(last.get(p, -1), meta.offset + n - 1)
        return last
