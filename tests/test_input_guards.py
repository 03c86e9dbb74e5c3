"""Input the stream must not trust (issue 12, items 9 and 10), pure and on the real broker:
an event time far ahead of the wall clock, and a record without a Kafka key, are dead
letters with their reason; the partition's windows close as before."""

from __future__ import annotations

import collections
import dataclasses
import time

import pytest

from model_core.models import create_model
from model_core.vocab import ItemVocab
from schemas import DeadLetter, Event
from stream_app.worker.processor import BatchProcessor, RawRecord

FAR_FUTURE_MS = 4_102_358_400_000  # 2099-12-31, inside the static 2000..2100 range


def _processor(**kw) -> BatchProcessor:
    return BatchProcessor(create_model("popular", ItemVocab(["i1", "i2"])), **kw)


def _record(ev: Event, key: bytes | None = b"", offset: int = 0) -> RawRecord:
    key = ev.user_id.encode() if key == b"" else key
    return RawRecord(key, ev.to_json(), "events", 0, offset, 0)


def test_far_future_event_is_a_dead_letter_with_its_reason():
    now = int(time.time() * 1000)
    ok = Event("e1", "u1", "i1", "view", now + 3_600_000)  # an hour ahead: clock skew
    far = Event("e2", "u1", "i1", "view", FAR_FUTURE_MS)
    events, positions, dead = _processor().parse([_record(ok), _record(far, offset=1)])
    assert [e.event_id for e in events] == ["e1"] and positions == [0]
    (key, value), = dead
    letter = DeadLetter.from_json(value)
    assert key == b"u1" and letter.offset == 1 and letter.original == far.to_json()
    assert "ahead of the wall clock" in letter.reason and "max_future_ms" in letter.reason
    # the horizon is a setting; 0 turns the check off
    assert len(_processor(max_future_ms=0).parse([_record(far)])[0]) == 1
    assert len(_processor(max_future_ms=1000).parse([_record(ok)])[2]) == 1


def test_null_key_record_is_a_dead_letter_naming_the_key():
    ev = Event("e1", "u42", "i1", "view", 1_704_067_200_000)
    events, _, dead = _processor().parse([_record(ev, key=None)])
    assert events == []
    letter = DeadLetter.from_json(dead[0][1])
    assert "no Kafka key" in letter.reason and "'u42'" in letter.reason
    assert letter.original == ev.to_json() and letter.key_b64 is None


def test_settings_hold_the_horizon():
    from stream_app.settings import load_settings

    assert load_settings().max_future_ms == 86_400_000
    assert load_settings(max_future_ms=0).max_future_ms == 0


@pytest.mark.broker
def test_far_future_and_unkeyed_records_on_the_broker(stream_settings, tmp_path):
    """A 2099 event in the middle of a stream: dead-lettered, and every later window still
    closes with exactly its own events (on main every later window closed after its first
    batch and its events piled up as late). A null-key record: dead-lettered."""
    from model_core.datasets.synth import generate
    from stream_app.kafka.replay import make_producer
    from stream_app.kafka.topics import ensure_topics, read_topic
    from stream_app.ops.chaos import _train_markov
    from stream_app.windows.persistence import latest_windows
    from stream_app.worker.process import WorkerProcess

    base = 1_704_067_200_000
    events = [dataclasses.replace(e, timestamp_ms=base + i * 1000)
              for i, e in enumerate(generate(400, seed=5))]  # 400 s: 7 one-minute windows
    _train_markov(events, tmp_path / "model")
    s = stream_settings.with_overrides(model_path=str(tmp_path / "model"), window_s=60,
                                       allowed_lateness_s=0, idle_close_s=2.0)
    ensure_topics(s)
    far = dataclasses.replace(events[100], event_id="far-future", timestamp_ms=FAR_FUTURE_MS)
    unkeyed = dataclasses.replace(events[150], event_id="no-key")
    with WorkerProcess(s, tmp_path / "worker.log") as worker:
        worker.wait_ready(90)
        producer = make_producer(s)
        topic = s.topic("events")
        for i, ev in enumerate(events):
            producer.send(topic, key=ev.user_id.encode(), value=ev.to_json())
            if i == 100:
                producer.send(topic, key=far.user_id.encode(), value=far.to_json())
            if i == 150:
                producer.send(topic, key=None, value=unkeyed.to_json())
        producer.flush()
        producer.close()
        read_topic(s, "predictions", expect=len(events), timeout_s=120)
        dead = read_topic(s, "dead-letters", expect=2, timeout_s=60)
        # the last windows close when the idle timer advances event time (idle_close_s)
        deadline = time.monotonic() + 60
        while True:
            metrics = read_topic(s, "metrics", idle_s=1)
            tumbling = [w for w in latest_windows(metrics) if w.window_kind == "tumbling"]
            if sum(w.events for w in tumbling) >= len(events) or time.monotonic() > deadline:
                break
            time.sleep(1)
        worker.stop()
        assert worker.proc.returncode == 0, worker.log_text()[-2000:]
    reasons = {DeadLetter.from_json(m.value).original: DeadLetter.from_json(m.value).reason
               for m in dead}
    assert "ahead of the wall clock" in reasons[far.to_json()]
    assert "no Kafka key" in reasons[unkeyed.to_json()]
    got = collections.Counter()
    for w in tumbling:
        got[w.window_start_ms] += w.events
    want = collections.Counter(e.timestamp_ms - e.timestamp_ms % 60_000 for e in events)
    assert got == want  # each window holds exactly its own events: none closed early
    assert sum(w.late_events for w in tumbling) == 0


def test_oversized_input_is_dead_lettered_by_reference():
    """A 0.8 MB input copied whole into its dead letter made a record over 1 MiB (base64):
    now it is kept by reference (where to read it, its size, its first bytes)."""
    big = b'{"event_id": "' + b"x" * 800_000 + b'"}'
    rec = RawRecord(b"k" * 5000, big, "events", 3, 77, 0)
    _, _, dead = _processor().parse([rec])
    (key, value), = dead
    assert len(value) < 8 * 1024  # was about 1.07 MB
    letter = DeadLetter.from_json(value)
    assert (letter.topic, letter.partition, letter.offset) == ("events", 3, 77)
    assert letter.original_truncated and letter.original_size == len(big)
    assert letter.original == big[:1024] and letter.key_size == 5000
    assert "exceeds the 16384-byte limit" in letter.reason
    assert "kept by reference" in letter.reason and "offset 77" in letter.reason
    # an input that could have been an event is still copied whole
    small = b"{not json" + b" " * 10_000
    (_, value), = _processor().parse([RawRecord(b"u", small, "events", 0, 1, 0)])[2]
    letter = DeadLetter.from_json(value)
    assert letter.original == small and not letter.original_truncated
    # a low max_record_bytes lowers what is copied whole
    (_, value), = _processor(max_record_bytes=16 * 1024).parse(
        [RawRecord(b"u", small, "events", 0, 1, 0)])[2]
    assert DeadLetter.from_json(value).original_truncated and len(value) < 16 * 1024


def test_settings_refuse_records_over_max_record_bytes():
    from stream_app.settings import SettingsError, load_settings

    assert load_settings().max_record_bytes == 512 * 1024
    with pytest.raises(SettingsError, match="over max_record_bytes"):
        load_settings(top_k=1000)
    with pytest.raises(SettingsError, match="over max_record_bytes"):
        load_settings(max_seq_len=30_000)
    assert load_settings(top_k=1000, max_record_bytes=4 << 20).top_k == 1000
