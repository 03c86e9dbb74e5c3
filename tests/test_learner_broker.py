"""On the broker: a new item appears in the stream, the learner (its own consumer group)
publishes a version holding it, the worker swaps to it without a restart and recommends it;
every prediction names the version that made it."""

from __future__ import annotations

import collections
import time

import orjson
import pytest

from model_core.datasets.synth import generate
from schemas.event import Event
from stream_app.kafka.replay import replay_events
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.learner.service import LearnerProcess
from stream_app.worker.model_swap import SWAP_MARK
from stream_app.worker.process import WorkerProcess


def _ev(n: int, user: str, item: str, t: int) -> Event:
    return Event(f"new-{n}", user, item, "view", t)


@pytest.mark.broker
def test_a_new_item_is_recommended_within_the_next_version(stream_settings, tmp_path,
                                                           markov_checkpoint):
    train = generate(800, seed=8)
    base = markov_checkpoint(train, tmp_path / "base")
    hub = collections.Counter(e.item_id for e in train).most_common(1)[0][0]
    settings = stream_settings.with_overrides(
        model_path=str(tmp_path / "base"), model_watch_dir=str(tmp_path / "watch"),
        model_poll_s=0.2, learn_schedule="every=100", batch_wait_ms=20)
    ensure_topics(settings)
    t0 = train[-1].timestamp_ms + 1000
    # 50 new shoppers view the hub, then an item nobody has seen: 100 events, one update
    born = [e for u in range(50) for e in (_ev(2 * u, f"n{u}", hub, t0 + 10 * u),
                                           _ev(2 * u + 1, f"n{u}", "fresh-1", t0 + 10 * u + 5))]
    later = [_ev(1000 + u, f"m{u}", hub, t0 + 10_000 + u) for u in range(10)]
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    learner = LearnerProcess(settings, tmp_path / "learner.log").start()
    try:
        worker.wait_ready(90)
        learner.wait_ready(60)
        replay_events(settings, born, progress=False)
        version = f"{base.version}+u1"
        deadline = time.monotonic() + 30
        while f"{SWAP_MARK} to {version}" not in worker.log_text():
            assert time.monotonic() < deadline, (learner.log_text()[-2000:],
                                                 worker.log_text()[-2000:])
            time.sleep(0.1)
        replay_events(settings, later, progress=False)
        preds = read_topic(settings, "predictions", expect=len(born) + len(later), timeout_s=30)
    finally:
        learner.stop()
        worker.stop()
    assert learner.published() == [version]
    stats = learner.final_stats()
    assert stats["events_learned"] == 100 and stats["items"] == base.vocab.n_items + 1
    got = {p["event_id"]: p for p in (orjson.loads(m.value) for m in preds)}
    assert set(got) == {e.event_id for e in born + later}
    # the worker may already have swapped for the last of them
    assert {got[e.event_id]["model_version"] for e in born} <= {base.version, version}
    assert not any("fresh-1" in p["items"] for p in got.values()
                   if p["model_version"] == base.version)
    for e in later:  # the version holding the new item recommends it after the hub
        assert got[e.event_id]["model_version"] == version
        assert got[e.event_id]["items"][0] == "fresh-1"


@pytest.mark.broker
def test_pseudonymous_learner_and_erase_on_the_broker(stream_settings, tmp_path,
                                                       markov_checkpoint, monkeypatch, caplog):
    """A worker and a learner with the same pseudonym key: the learner holds only the keyed
    hashes (in memory, in its versions, in its log) and an erase request removes the user
    from it, the user's events not yet learned included."""
    import logging
    import threading
    from dataclasses import replace

    from model_core.datasets.synth import write_jsonl
    from stream_app.learner import service
    from stream_app.worker.privacy import Pseudonyms, send_erase_requests

    caplog.set_level(logging.INFO)
    log = sorted((replace(e, user_id=f"raw-shopper-{e.user_id}") for e in generate(700, seed=11)),
                 key=lambda e: e.timestamp_ms)
    train, stream = log[:400], log[400:]
    markov_checkpoint(train, tmp_path / "base")
    write_jsonl(train, tmp_path / "train.jsonl")
    (tmp_path / "key").write_bytes(b"pseudonym-key-" * 3)
    hashed = Pseudonyms(b"pseudonym-key-" * 3)
    raw_of = {hashed(e.user_id): e.user_id for e in log}
    settings = stream_settings.with_overrides(
        model_path=str(tmp_path / "base"), model_watch_dir=str(tmp_path / "watch"),
        model_poll_s=0.2, learn_schedule="every=100", learn_warm_path=str(tmp_path /
                                                                           "train.jsonl"),
        pseudonym_key_file=str(tmp_path / "key"), batch_wait_ms=20)
    ensure_topics(settings)
    drivers = []
    build = service.build_driver
    monkeypatch.setattr(service, "build_driver",
                        lambda s, on_alert=None: drivers.append(build(s, on_alert)) or drivers[0])
    stop = threading.Event()
    learner = threading.Thread(target=service.run_learner, args=(settings, stop), daemon=True)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    learner.start()

    def until(cond, what):
        deadline = time.monotonic() + 30
        while not (drivers and cond(drivers[0])):
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    try:
        worker.wait_ready(90)
        replay_events(settings, stream[:150], progress=False)
        until(lambda d: d.stats.events_in == 150 and d.stats.published == 1, "150 events")
        d = drivers[0]
        # a user with a sequence in the learner and events held for the next micro-batch
        victim = next(r[0].user_id for r in reversed(d.buf) if r[0].user_id in d.learner.users)
        send_erase_requests(settings, [raw_of[victim]], "test")
        until(lambda d: d.stats.erased == 1, "the erase request")
        rest = [e for e in stream[150:] if raw_of[victim] != e.user_id][:100]
        replay_events(settings, rest, progress=False)
        until(lambda d: d.stats.published == 2, "the second version")
        preds = read_topic(settings, "predictions", expect=150 + len(rest), timeout_s=30)
    finally:
        stop.set()
        learner.join(15)
        worker.stop()
    users = set(d.learner.users)
    assert victim not in users and not any(r[0].user_id == victim for r in d.buf)
    assert d.stats.erased_events >= 1  # its held events were dropped, not learned
    assert users and users <= set(raw_of)  # keyed hashes only, never a raw id
    # the worker keyed its users by the same hash
    assert {orjson.loads(m.value)["user_id"] for m in preds} <= users | {victim}
    files = [p for p in (tmp_path / "watch").rglob("*") if p.is_file()]
    assert len(files) > 2 and not any(b"raw-shopper-" in p.read_bytes() for p in files)
    assert "raw-shopper-" not in caplog.text + worker.log_text()


@pytest.mark.broker
def test_an_items_record_gives_a_new_item_its_text_vector(stream_settings, tmp_path):
    """A fused GRU4Rec (trained on the default text encoder's vectors) and the learner: an
    item record on the items topic names a new item's text, so the version holding the item
    carries that item's text vector (a bad record is counted, not learned); an item without
    a record keeps a zero text vector."""
    from model_core.text.encoder import text_extra_available

    if not text_extra_available():
        pytest.skip("the seqstream[text] extra (the default text encoder) is not installed")
    import numpy as np
    from test_text import _category_data, _model, _train_briefly

    from model_core.checkpoint import load_model, save_model
    from model_core.text.encoder import load_text_encoder
    from stream_app.kafka.replay import make_producer

    enc = load_text_encoder(device="cpu")
    seqs, texts = _category_data(n_users=60)
    model = _model("gru4rec", "fused", texts, enc)
    _train_briefly(model, seqs, steps=20)
    save_model(model, tmp_path / "base")
    settings = stream_settings.with_overrides(
        model_path=str(tmp_path / "base"), model_watch_dir=str(tmp_path / "watch"),
        learn_schedule="every=20")
    ensure_topics(settings)
    text = "cat2 a brand new item"
    producer = make_producer(settings)
    producer.send(settings.topic("items"), value=orjson.dumps({"item_id": "new-2",
                                                               "title": text}))
    producer.send(settings.topic("items"), value=b"{not json")
    producer.flush()
    producer.close()
    # category-2 shoppers (items 11..15) view 'new-2' (a record) and 'new-x' (none): 2 updates
    stream = [_ev(10 * u + j, f"s{u}", item, 1_700_000_000_000 + 1000 * (10 * u + j))
              for u in range(8) for j, item in enumerate(("11", "12", "new-2", "13", "new-x"))]
    learner = LearnerProcess(settings, tmp_path / "learner.log").start()
    try:
        learner.wait_ready(90)
        replay_events(settings, stream, progress=False)
        deadline = time.monotonic() + 60
        while len(learner.published()) < 2:
            assert time.monotonic() < deadline, learner.log_text()[-2000:]
            time.sleep(0.1)
    finally:
        learner.stop()
    stats = learner.final_stats()
    assert stats["item_records"] == {"taken": 1, "invalid": 1}
    assert stats["item_texts"]["started"] + stats["item_texts"]["refreshed"] >= 1
    last = load_model(tmp_path / "watch" / learner.published()[-1], device="cpu")
    tv = last.module.item_emb.text_vectors
    np.testing.assert_allclose(tv[last.vocab.index("new-2")].numpy(), enc.encode([text])[0],
                               atol=1e-5)
    assert float(tv[last.vocab.index("new-x")].abs().sum()) == 0.0


@pytest.mark.broker
def test_publish_items_sends_what_the_learner_reads(stream_settings, tmp_path, capsys):
    """``seqstream publish-items FILE`` joins the descriptions as ``train --items`` reads them
    and the learner's reader of the items topic gets exactly those; bad lines are reported,
    not sent; a file without a usable item is one line."""
    from model_core.text.items import read_item_metadata
    from stream_app.cli import main
    from stream_app.learner.items import ItemsReader

    f = tmp_path / "items.csv"
    f.write_text("item_id,title,brand,price\nsku-1,red shoe,acme,9.5\nsku-2,blue hat,,4\n"
                 ",no id,x,1\nsku-1,again,acme,2\nsku-3,,,\n")
    s = stream_settings
    kafka = ["--broker-url", s.broker_url, "--topic-prefix", s.topic_prefix]
    rc = main(["publish-items", str(f), "--item-text-columns", "title,brand", *kafka])
    out = capsys.readouterr().out
    assert rc == 0 and f"sent 2 item record(s) to {s.topic('items')}" in out
    assert "skipped 3" in out  # no id, a repeated id, no text
    want = read_item_metadata(f, "item_id", "title,brand").as_dict()
    assert want == {"sku-1": "red shoe; acme", "sku-2": "blue hat"}

    class Texts:  # what ItemsReader hands the learner's ItemTexts
        def __init__(self):
            self.got = {}

        def add(self, item_id, text):
            self.got[item_id] = text

    texts, reader = Texts(), ItemsReader(s)
    try:
        deadline = time.monotonic() + 30
        while len(texts.got) < 2 and time.monotonic() < deadline:
            reader.take(texts, timeout_ms=200)
    finally:
        reader.close()
    assert texts.got == want and reader.invalid == 0

    empty = tmp_path / "empty.csv"
    empty.write_text("item_id,title\nsku-9,\n")
    assert main(["publish-items", str(empty), *kafka]) == 2
    err = capsys.readouterr().err
    assert "no item with an id and a text" in err and "Traceback" not in err
