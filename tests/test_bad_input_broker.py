"""Hostile input at the Kafka level, on the real broker (hypothesis, few examples).

Raw records — truncated JSON, wrong types, huge strings, invalid UTF-8, unknown actions,
timestamps out of range, not-an-object JSON, empty and null values, a key that is not the
user, no key at all — interleaved with valid events (unicode ids, far past times,
times up to an hour ahead of the wall clock — within the worker's ``max_future_ms`` —
out-of-order and duplicated events). The worker must not crash, every bad record must be in
the dead-letter topic with a reason and its original bytes, and every valid event must get
a prediction.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_core.datasets.synth import generate
from schemas import DeadLetter
from schemas.actions import ACTIONS
from schemas.event import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, parse_event
from schemas.exceptions import SchemaError
from stream_app.kafka.replay import make_producer
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.ops.chaos import _event_id_of, _train_markov
from stream_app.worker.process import WorkerProcess

pytestmark = [pytest.mark.broker]

_ids = itertools.count()
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=24)
# valid times: the static range, but at most an hour ahead of now (the worker dead-letters
# events further ahead than its max_future_ms, a day by default: tests/test_input_guards.py)
_ts_ok = st.integers(MIN_TIMESTAMP_MS, int(time.time() * 1000) + 3_600_000)


@pytest.fixture(scope="module")
def worker_env(broker, tmp_path_factory):
    from stream_app.settings import load_settings

    tmp = tmp_path_factory.mktemp("badinput")
    events = generate(600, seed=2)
    _train_markov(events, tmp / "model")
    s = load_settings(broker_url=broker.url, topic_prefix="badin.", app_id="badin", web_port=0,
                      data_dir=str(tmp / "data"), model_path=str(tmp / "model"),
                      session_timeout_s=6.0, heartbeat_interval_s=0.5, idle_close_s=1.0)
    ensure_topics(s)
    w = WorkerProcess(s, tmp / "worker.log")
    w.start()
    w.wait_ready(90)
    yield s, w, [e.item_id for e in events[:50]]
    w.stop(30)


def _event(user: str, item: str, action: str, ts: int) -> dict:
    return {"event_id": f"ev{next(_ids)}-{user}", "user_id": user, "item_id": item,
            "action": action, "timestamp_ms": ts}


@st.composite
def valid_records(draw, items):
    user = draw(_text)
    n = draw(st.integers(1, 4))
    evs = [_event(user, draw(st.sampled_from(items) | _text), draw(st.sampled_from(ACTIONS)),
                  draw(_ts_ok)) for _ in range(n)]  # random times: out of order per user
    if draw(st.booleans()):
        evs.append(dict(evs[0]))  # an exact duplicate (same event_id)
    return [("ok", user.encode(), orjson.dumps(e)) for e in evs]


@st.composite
def bad_record(draw):
    base = _event(draw(_text), draw(_text), draw(st.sampled_from(ACTIONS)), draw(_ts_ok))
    kind = draw(st.sampled_from(["truncated", "wrong_type", "huge", "bad_utf8", "action",
                                 "timestamp", "not_object", "empty", "null", "wrong_key",
                                 "no_key", "missing"]))
    key = base["user_id"].encode()
    if kind == "truncated":
        raw = orjson.dumps(base)
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif kind == "wrong_type":
        field = draw(st.sampled_from(["user_id", "item_id", "timestamp_ms", "action", "event_id"]))
        base[field] = draw(st.sampled_from([[1], {"a": 1}, True, 1.5, "soon"]
                                           if field == "timestamp_ms"
                                           else [[1], {"a": 1}, True, 1.5]))
        if field == "user_id":
            key = b"someone"
        raw = orjson.dumps(base)
    elif kind == "huge":
        field = draw(st.sampled_from(["item_id", "event_id", "session_id"]))
        base[field] = "x" * draw(st.integers(300, 40_000))
        raw = orjson.dumps(base)
    elif kind == "bad_utf8":
        raw = orjson.dumps(base).replace(b'"item_id":"', b'"item_id":"\xff\xfe', 1)
    elif kind == "action":
        base["action"] = "teleport-" + draw(_text)
        raw = orjson.dumps(base)
    elif kind == "timestamp":
        base["timestamp_ms"] = draw(st.integers(-(2**63), MIN_TIMESTAMP_MS - 1)
                                    | st.integers(MAX_TIMESTAMP_MS + 1, 2**64 - 1))
        raw = orjson.dumps(base)
    elif kind == "not_object":
        raw = draw(st.sampled_from([b"[]", b"null", b"42", b'"text"', b"[1, 2, 3]"]))
    elif kind == "empty":
        raw = b""
    elif kind == "null":
        raw = None
    elif kind == "wrong_key":
        key = b"not-" + key
        raw = orjson.dumps(base)
    elif kind == "no_key":
        key = None
        raw = orjson.dumps(base)
    else:  # missing
        del base[draw(st.sampled_from(["event_id", "user_id", "item_id", "action",
                                       "timestamp_ms"]))]
        raw = orjson.dumps(base)
    return ("bad", key, raw)


_expected_dead: Counter = Counter()


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_records_interleaved_with_valid_ones(worker_env, data):
    s, worker, items = worker_env
    groups = data.draw(st.lists(st.one_of(valid_records(items), bad_record().map(lambda r: [r])),
                                min_size=3, max_size=12))
    records = [r for g in groups for r in g]
    valid_ids = set()
    for kind, key, raw in records:  # the oracle agrees with the strategies
        if kind == "ok":
            valid_ids.add(parse_event(raw).event_id)
        else:
            with pytest.raises(SchemaError):
                ev = parse_event(raw)
                if key != ev.user_id.encode():
                    raise SchemaError("key")
            _expected_dead[raw or b""] += 1
    producer = make_producer(s)
    for _, key, raw in records:
        producer.send(s.topic("events"), key=key, value=raw)
    producer.flush()
    producer.close()

    deadline = time.monotonic() + 60
    while True:
        predicted = {_event_id_of(m.value) for m in read_topic(s, "predictions", idle_s=0.5)}
        letters = [DeadLetter.from_json(m.value) for m in read_topic(s, "dead-letters",
                                                                      idle_s=0.5)]
        got_dead = Counter(d.original for d in letters)
        if (valid_ids <= predicted and all(got_dead[k] >= n for k, n in _expected_dead.items())) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert worker.alive(), worker.log_text()[-2000:]
    assert valid_ids <= predicted, sorted(valid_ids - predicted)[:5]
    short = {k[:60]: n - got_dead[k] for k, n in _expected_dead.items() if got_dead[k] < n}
    assert not short, short
    assert all(d.reason for d in letters)
