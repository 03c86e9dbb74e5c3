"""The items topic for the learner: item metadata, so a new item starts from its text vector.

A model trained with ``--text-mode text`` or ``fused`` represents items by their text. The
learner reads the whole ``items`` topic (a plain consumer with no group, from the beginning,
as each worker does: every item may occur in any partition of ``events``) into an
:class:`~model_core.learn.texts.ItemTexts`; when an update gives a new item a row, an item
with a text starts from its text vector (:mod:`model_core.learn.texts`). Records the workers
dead-letter (not a JSON object, no id, no text) are counted here and skipped: the workers'
items feed already sends them to ``dead-letters``. An ID-only model, or a machine without
the text extra, runs without it and says so once.
"""

from __future__ import annotations

import logging

from stream_app.settings import Settings

log = logging.getLogger("seqstream.learner")


def item_texts_for(settings: Settings, model):
    """An :class:`~model_core.learn.texts.ItemTexts` with the default text encoder for a
    text or fused ``model``; None (the reason logged once) for an ID-only model, or when
    the ``seqstream[text]`` extra is missing or the encoder does not fit the model."""
    emb = getattr(getattr(model, "module", None), "item_emb", None)
    if emb is None or emb.mode == "id":
        log.info("item texts off: the model uses ID rows only (new items start from their "
                 "contexts)")
        return None
    from model_core.exceptions import ModelCoreError
    from model_core.learn.learner import check_texts
    from model_core.learn.texts import ItemTexts

    try:
        from model_core.text.encoder import load_text_encoder

        encoder = load_text_encoder(device=settings.device)
    except Exception as e:  # the extra missing, or its files: learning goes on without texts
        log.warning("item texts off: %s (pip install 'seqstream[text]'); new items of this "
                    "%s-mode model start without their text", e, emb.mode)
        return None
    texts = ItemTexts(encoder)
    try:
        check_texts(model, texts)  # the learner's own check: the encoder's width
    except ModelCoreError as e:
        log.warning("item texts off: %s", e)
        return None
    log.info("item texts on: new items with a record on %s start from their text vector",
             settings.topic("items"))
    return texts


class ItemsReader:
    """The items topic, read whole from the beginning without a group, polled without
    waiting between the learner's polls of ``events``."""

    def __init__(self, settings: Settings, timeout_s: float = 60.0) -> None:
        import time

        from kafka import KafkaConsumer

        from schemas.exceptions import SeqstreamError
        from stream_app.kafka.security import kafka_python_kwargs
        from stream_app.kafka.topics import assign_whole_topic, ensure_topics

        ensure_topics(settings, ("items",))
        self.topic = settings.topic("items")
        self.id_field = settings.items_id_field
        self.text_fields = settings.items_text_fields
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            **kafka_python_kwargs(settings))
        if not assign_whole_topic(self.consumer, self.topic, time.monotonic() + timeout_s):
            self.consumer.close()
            raise SeqstreamError(f"the broker named no partition of {self.topic} within "
                                 f"{timeout_s:.0f} s")
        self.taken = 0
        self.invalid = 0

    def take(self, texts, timeout_ms: int = 0) -> int:
        """Read what has arrived into ``texts``; returns the records taken (valid or not)."""
        from model_core.text.items import parse_item_record

        n = 0
        for recs in self.consumer.poll(timeout_ms=timeout_ms, max_records=5000).values():
            for r in recs:
                n += 1
                try:
                    rec = parse_item_record(r.value, self.id_field, self.text_fields)
                except ValueError:
                    rec = None
                if rec is None:
                    self.invalid += 1
                    continue
                texts.add(*rec)
                self.taken += 1
        return n

    def close(self) -> None:
        self.consumer.close()


__all__ = ["ItemsReader", "item_texts_for"]
