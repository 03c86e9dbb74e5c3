"""New items from the ``items`` topic (real broker) become recommendable without retraining."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
import orjson
import pytest
from test_text import FakeEncoder, _category_data, _model, _train_briefly

from model_core.predictor import SequenceBatch
from model_core.text.item_encoder import ItemEncoder
from schemas import DeadLetter
from stream_app.kafka.replay import make_producer
from stream_app.kafka.topics import ensure_topics
from stream_app.worker.items_feed import follow_items, make_item_encoder

pytestmark = [pytest.mark.broker]


def test_items_topic_feeds_the_model(stream_settings):
    enc = FakeEncoder()
    seqs, texts = _category_data(n_users=120)
    model = _model("gru4rec", "fused", texts, enc)
    _train_briefly(model, seqs, steps=40)
    items = ItemEncoder(model, encoder=enc)
    settings = stream_settings
    ensure_topics(settings)
    producer = make_producer(settings)
    producer.send(settings.topic("items"),
                  value=orjson.dumps({"item_id": "new-2", "title": "cat2 brand new item"}))
    producer.send(settings.topic("items"), value=b"{not json")
    producer.flush()
    producer.close()
    dead: list[tuple] = []

    async def publish_dead(records):
        dead.extend(records)

    async def run() -> None:
        task = asyncio.create_task(follow_items(settings, items, publish_dead))
        deadline = time.monotonic() + 60
        while (items.pending < 1 or not dead) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert items.pending == 1
    assert len(dead) == 1
    letter = DeadLetter.from_json(dead[0][1])
    assert letter.original == b"{not json" and letter.reason.startswith("item record:")
    assert letter.topic == settings.topic("items")

    assert "new-2" not in model.vocab
    grown = items.flush()
    assert grown.added == ["new-2"]
    new = model.vocab.index("new-2")
    hist = _category_data(n_users=8, seed=1)[0]
    top = model.predict_topk(SequenceBatch(items=[hist[2]]), k=6)  # a category-2 user
    assert new in top.items[0]
    assert np.isfinite(model.score(SequenceBatch(items=[hist[0]]))[0, new])


def test_id_only_model_has_no_items_feed(stream_settings):
    from model_core.models import create_model
    from model_core.vocab import ItemVocab

    model = create_model("gru4rec", ItemVocab(["a", "b"]), device="cpu", dim=8, max_len=5)
    assert make_item_encoder(stream_settings, model) is None
