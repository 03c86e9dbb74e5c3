"""New items at run time, from the ``items`` topic into the loaded model.

Every worker needs every item (any user may be recommended any item), so the items topic is
read whole by each worker — a plain consumer with no group, from the beginning — not split
across the group like ``events``. Records (JSON objects with an id and text fields) are queued
in an :class:`~model_core.text.item_encoder.ItemEncoder`; the agent flushes the queue on the model
thread between two scoring batches, after which the new items are scored and recommendable.
Bad records go to ``dead-letters`` with the reason.

Only models trained with ``--text-mode text|fused`` can take items this way, and the
``seqstream[text]`` extra must be installed; otherwise the feed is off and says why once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from schemas.dead_letter import DeadLetter
from stream_app.settings import Settings

log = logging.getLogger("seqstream.items")


def make_item_encoder(settings: Settings, model):
    """An ItemEncoder for ``model``, or None (with the reason logged) when it cannot take
    new items (ID-only model, or the text extra missing)."""
    try:
        from model_core.text.item_encoder import ItemEncoder
    except ImportError as e:
        log.info("items feed off: %s (pip install 'seqstream[text]')", e)
        return None
    try:
        from model_core.text.fusion import item_embedding_of

        if item_embedding_of(model).mode == "id":
            log.info("items feed off: the model uses ID embeddings only")
            return None
        encoder = ItemEncoder(model, id_field=settings.items_id_field,
                              text_fields=settings.items_text_fields, device=settings.device)
        log.info("items feed on: records on %s make new items recommendable",
                 settings.topic("items"))
        return encoder
    except Exception as e:  # the feed is optional: the stream runs without it
        log.warning("items feed off: %s", e)
        return None


async def follow_items(settings: Settings, encoder,
                       publish_dead: Callable[[list[tuple[bytes | None, bytes]]], Awaitable]
                       ) -> None:
    """Read the whole items topic forever (cancelled at shutdown) into ``encoder``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream_app.kafka.security import kafka_python_kwargs

    sec = dict(kafka_python_kwargs(settings))
    topic = settings.topic("items")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest", **sec)
    await consumer.start()
    try:
        parts = None
        while not parts:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer.force_metadata_update()
                await asyncio.sleep(1.0)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, msgs in batches.items():
                res = encoder.submit([m.value for m in msgs])
                if res.rejected:
                    now = int(time.time() * 1000)
                    by_value = {id(m.value): m for m in msgs}
                    dead = []
                    for raw, reason in res.rejected:
                        m = by_value.get(id(raw))
                        dead.append((None, DeadLetter.of(
                            raw if isinstance(raw, bytes) else str(raw).encode(),
                            f"item record: {reason}", tp.topic, tp.partition,
                            m.offset if m is not None else -1, failed_at_ms=now).to_json()))
                    await publish_dead(dead)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
