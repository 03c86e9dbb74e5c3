"""The whole path on the real embedded broker: replay -> worker -> predictions/metrics/DLQ."""

from __future__ import annotations

import collections

import orjson
import pytest

from model_core.checkpoint import save_model
from model_core.datasets import read_log
from model_core.datasets.synth import generate, write_jsonl
from model_core.models import create_model
from model_core.sequences import build_vocab, group_by_user
from schemas import DeadLetter, Prediction
from stream_app.kafka.replay import make_producer, replay_file
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.windows.aggregation import aggregate_windows
from stream_app.windows.persistence import latest_windows
from stream_app.worker.process import WorkerProcess

pytestmark = [pytest.mark.broker]

BAD_LINES = [
    b'{"event_id": "bad-1", "user_id": "u1", "item_id": "i1", "action": "teleport", '
    b'"timestamp_ms": 1704067200000}',
    b'{"event_id": "bad-2", "user_id": "u1", "item_id": "i1", "action": "view"}',
    b'{"event_id": "bad-3", "user_id": "u1", "item_id": "i1", "action": "view", "timest',
]


@pytest.fixture
def small_log(tmp_path):
    events = generate(3000, seed=3)
    path = tmp_path / "log.jsonl"
    write_jsonl(events, path)
    with open(path, "ab") as f:
        for line in BAD_LINES:
            f.write(line + b"\n")
    return path, events


@pytest.fixture
def markov_checkpoint(tmp_path, small_log):
    _, events = small_log
    train = events[:1500]
    vocab = build_vocab(train)
    model = create_model("markov", vocab)
    model.fit(group_by_user(train, vocab))
    return save_model(model, tmp_path / "ckpt")


@pytest.mark.parametrize("fast_delivery", [True, False], ids=["fast-delivery", "faust-loop"])
def test_replay_worker_outputs(stream_settings, small_log, markov_checkpoint, tmp_path,
                               fast_delivery):
    path, events = small_log
    settings = stream_settings.with_overrides(model_path=str(markov_checkpoint), window_s=600,
                                              fast_delivery=fast_delivery)
    ensure_topics(settings)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready(90)
        report = replay_file(settings, path, "jsonl", progress=False)
        assert report.sent == len(events)
        assert report.rejected == len(BAD_LINES)
        # Bad records straight onto the topic: the worker must dead-letter them and go on.
        producer = make_producer(settings)
        producer.send(settings.topic("events"), key=b"u7", value=b"\xff\xfe not json")
        producer.send(settings.topic("events"), key=b"someone-else",
                      value=events[0].to_json())  # key is not the user id
        producer.flush()
        producer.close()
        preds = read_topic(settings, "predictions", expect=len(events), timeout_s=120)
        dead = read_topic(settings, "dead-letters", expect=len(BAD_LINES) + 2, timeout_s=60)
        worker.stop()
        assert worker.proc.returncode == 0, worker.log_text()[-2000:]
        metrics = read_topic(settings, "metrics", idle_s=3)

    # one prediction per valid event, with the right content
    got = [Prediction.from_json(m.value) for m in preds]
    ids = collections.Counter(p.event_id for p in got)
    missing = {e.event_id for e in events} - set(ids)
    assert not missing and len(ids) == len(events), (len(got), len(ids), sorted(missing)[:10], [k for k, v in ids.items() if v > 1][:10])
    by_id = {e.event_id: e for e in events}
    for p in got[:200]:
        assert p.user_id == by_id[p.event_id].user_id
        assert len(p.items) == settings.top_k == len(p.scores)
        assert p.scores == sorted(p.scores, reverse=True)
        assert abs(sum(p.next_action.values()) - 1.0) < 1e-3
        assert p.model_version.startswith("markov-")
        assert p.event_timestamp_ms == by_id[p.event_id].timestamp_ms

    # every bad input is in the dead-letter topic with its reason and original bytes
    letters = [DeadLetter.from_json(m.value) for m in dead]
    originals = {d.original for d in letters}
    for line in BAD_LINES:
        assert line in originals
    assert b"\xff\xfe not json" in originals
    reasons = " | ".join(d.reason for d in letters)
    assert "unknown action" in reasons and "missing required field" in reasons
    assert "not valid JSON" in reasons and "is not the event's user_id" in reasons

    # metrics windows: plausible values, every valid event counted once
    windows = latest_windows(metrics)
    tumbling = [w for w in windows if w.window_kind == "tumbling"]
    assert tumbling
    assert sum(w.events for w in tumbling) == len(events)
    assert sum(w.dead_letters for w in tumbling) == 2
    for w in tumbling:
        assert w.window_end_ms - w.window_start_ms == 600_000
        for v in w.metrics.values():
            assert 0.0 <= v <= 1.0
    total = aggregate_windows(tumbling)
    assert 0.0 < total["hr@10"] <= 1.0
    assert total["ndcg@10"] <= total["hr@10"]


def test_log_reader_counts_match_file(small_log):
    path, events = small_log
    res = read_log(path, "jsonl")
    assert len(res.events) == len(events) and res.rejected == len(BAD_LINES)
    assert orjson.loads(events[0].to_json())["event_id"] == events[0].event_id


def test_a_follower_of_a_quiet_topic_stops_within_a_poll(stream_settings):
    """The demo's and the benchmarks' counters: stopped, a follower ends (and closes its
    consumer) though no message comes; before, it ended only at its next message."""
    import time

    from stream_app.kafka.topics import Follower

    ensure_topics(stream_settings, ("dead-letters",))
    seen: list = []
    follower = Follower(stream_settings, "dead-letters", seen.append).start()
    time.sleep(1.0)  # its consumer is polling the empty topic
    t0 = time.monotonic()
    follower.stop()
    assert not follower.alive() and time.monotonic() - t0 < 2.0 and seen == []
