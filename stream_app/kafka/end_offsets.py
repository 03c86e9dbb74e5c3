"""True partition end offsets for table recovery, whatever the broker reports.

Faust recovers a table by reading its changelog up to the end offset that ``ListOffsets``
returns when recovery starts. The embedded Tansu broker answers that request with the base
offset of the partition's *last record batch* + 1, not the offset after its last record:
after a batch of 100 records at offsets 18..117 it reports 19 (measured, see
``tests/test_end_offsets.py``). Faust then stops reading the changelog up to 99 records early,
and a restarted worker resumes some users from stale or empty state (a restored sequence
shorter than the one the changelog holds).

A fetch response carries the partition's real high watermark. :func:`corrected_end_offsets`
fetches one record at ``reported - 1`` from each partition with a short-lived consumer and
returns ``max(reported, high watermark)``. On Apache Kafka the two agree and the check costs
one fetch per changelog partition per rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("seqstream.end_offsets")


async def corrected_end_offsets(reported: Mapping[Any, int | None],
                                make_consumer: Callable[[], Any],
                                timeout_s: float = 10.0) -> dict[Any, int | None]:
    """``reported`` end offsets raised to each partition's high watermark.

    ``reported`` maps topic-partitions (anything with ``.topic`` and ``.partition``) to the
    end offsets a broker returned; ``make_consumer`` builds an unstarted
    ``aiokafka.AIOKafkaConsumer`` without a group. Partitions reported empty are left as
    they are (an empty partition has no batch to misreport). When the fetch does not answer
    within ``timeout_s`` the reported offsets are kept and a warning logged.
    """
    from aiokafka.structs import TopicPartition

    result = dict(reported)
    todo = {TopicPartition(tp.topic, tp.partition): (tp, end)
            for tp, end in reported.items() if end}
    if not todo:
        return result
    consumer = make_consumer()
    await consumer.start()
    try:
        consumer.assign(list(todo))
        for atp, (_, end) in todo.items():
            consumer.seek(atp, end - 1)
        deadline = time.monotonic() + timeout_s
        pending = set(todo)
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            for atp in list(pending):
                hw = consumer.highwater(atp)
                if hw is not None:
                    tp, end = todo[atp]
                    if hw > end:
                        log.info("end offset of %s-%d: broker reported %d, high watermark %d",
                                 atp.topic, atp.partition, end, hw)
                    result[tp] = max(end, hw)
                    pending.discard(atp)
        if pending:
            log.warning("no high watermark within %.0f s for %s: kept reported end offsets",
                        timeout_s, sorted(f"{t.topic}-{t.partition}" for t in pending))
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return result


class LogKeeper:
    """Notices a broker that came back without its data.

    A broker restarted with memory storage (the embedded Tansu) answers again, empty: a
    worker that reconnected would go on with its in-memory state and window records against
    a log that starts over (its windows skip the new records up to the offsets it had
    accounted, and the new changelog lacks every user it does not touch again). The end
    offset of a partition never goes back on a broker that keeps its log, so :meth:`check`
    takes the end offsets the broker reports now and compares them with the highest seen
    before.
    """

    def __init__(self) -> None:
        self.highest: dict[Any, int] = {}

    def check(self, ends: Mapping[Any, int | None]) -> list[tuple[Any, int, int]]:
        """Record ``ends`` (partition -> end offset); return (partition, highest before,
        now) for each partition whose end offset went back (empty: the log is kept)."""
        back = []
        for tp, end in ends.items():
            if end is None:
                continue
            before = self.highest.get(tp)
            if before is not None and end < before:
                back.append((tp, before, end))
            self.highest[tp] = max(end, before if before is not None else end)
        return back


async def reported_end_offsets(app, topic: str) -> dict[Any, int | None]:
    """End offsets of the partitions of ``topic`` assigned to ``app``'s consumer, as the
    broker reports them (one ListOffsets request; not corrected)."""
    consumer = app.consumer
    tps = [tp for tp in consumer.assignment() if tp.topic == topic]
    if not tps:
        return {}
    ask = getattr(consumer, "reported_highwaters", consumer.highwaters)
    return dict(await ask(*tps))


def install(app) -> None:
    """Make ``app.consumer.highwaters`` (what Faust's recovery reads) return corrected offsets.

    Call before the worker starts. The consumer built for the check uses the app's
    bootstrap servers and credentials.
    """
    from aiokafka import AIOKafkaConsumer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list

    def make_consumer():
        conf = app.conf
        return AIOKafkaConsumer(
            bootstrap_servers=server_list(conf.broker, 9092),
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=1 << 20,
            **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )

    consumer = app.consumer
    original = consumer.highwaters
    consumer.reported_highwaters = original  # what the broker says (LogKeeper's probe)

    async def highwaters(*partitions):
        reported = await original(*partitions)
        try:
            return await corrected_end_offsets(reported, make_consumer)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as e:  # never fail recovery on the check itself
            log.warning("end-offset check failed (%s): using the broker's figures", e)
            return reported

    consumer.highwaters = highwaters
