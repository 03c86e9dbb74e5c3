"""Records that cross Kafka: good and bad events (each rejection reason), JSON round trips."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from schemas import (
    ACTIONS,
    N_ACTIONS,
    DeadLetter,
    Event,
    MetricsWindow,
    Prediction,
    SchemaError,
    SeqstreamError,
    action_index,
    parse_event,
)
from schemas.event import MAX_EVENT_BYTES, MAX_ID_CHARS, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

TS = 1_511_544_070_000  # 2017-11-24, in ms
GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "view", "timestamp_ms": TS}


def raw(**changes) -> bytes:
    d = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in d.items() if v is not ...})


# --------------------------------------------------------------------------- good events
def test_minimal_event():
    ev = parse_event(raw())
    assert ev == Event("e1", "u1", "i1", "view", TS)
    assert ev.session_id is None and ev.category_id is None and ev.price is None
    assert ev.to_dict() == GOOD  # None fields are left out on the wire


def test_full_event():
    ev = parse_event(raw(session_id="s9", category_id=42, price=19.5, extra_field=[1, 2]))
    assert (ev.session_id, ev.category_id, ev.price) == ("s9", "42", 19.5)
    assert orjson.loads(ev.to_json()) == {**GOOD, "session_id": "s9", "category_id": "42",
                                          "price": 19.5}


@pytest.mark.parametrize("alias,canon", [
    ("pv", "view"), ("browse", "view"), ("VIEW", "view"), (" click ", "click"),
    ("clicks", "click"), ("cart", "cart"), ("carts", "cart"), ("addtocart", "cart"),
    ("add_to_cart", "cart"), ("fav", "fav"), ("favorite", "fav"), ("favourite", "fav"),
    ("buy", "purchase"), ("order", "purchase"), ("transaction", "purchase"),
    ("Purchase", "purchase"),
])
def test_action_aliases(alias, canon):
    assert parse_event(raw(action=alias)).action == canon


def test_action_indices_follow_the_funnel():
    assert ACTIONS == ("view", "click", "cart", "fav", "purchase") and N_ACTIONS == 5
    assert [action_index(a) for a in ACTIONS] == list(range(5))


def test_numeric_ids_and_float_timestamps():
    ev = parse_event(raw(event_id=7, user_id=0, item_id=2**63 - 1, timestamp_ms=float(TS) + 0.9,
                         price=3))
    assert (ev.event_id, ev.user_id, ev.item_id) == ("7", "0", str(2**63 - 1))
    assert ev.timestamp_ms == TS and type(ev.timestamp_ms) is int
    assert ev.price == 3.0 and type(ev.price) is float


def test_bounds_are_inclusive():
    for ts in (MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS):
        assert parse_event(raw(timestamp_ms=ts)).timestamp_ms == ts
    assert parse_event(raw(price=0)).price == 0.0
    assert parse_event(raw(price=1e9)).price == 1e9
    ev = parse_event(raw(user_id="u" * MAX_ID_CHARS))
    assert len(ev.user_id) == MAX_ID_CHARS


def test_str_bytearray_and_memoryview_inputs():
    b = raw()
    assert parse_event(b.decode()) == parse_event(bytearray(b)) == parse_event(memoryview(b)) \
        == parse_event(b)


def test_null_optional_fields_mean_absent():
    ev = parse_event(raw(session_id=None, category_id=None, price=None))
    assert ev == parse_event(raw())


def test_unicode_ids_survive():
    ev = parse_event(raw(user_id="ユーザー🙂", item_id="naïve\u0000\n"))
    assert parse_event(ev.to_json()) == ev
    assert ev.user_id == "ユーザー🙂"


# --------------------------------------------------------------------------- rejections
BIG_ASCII = b'{"event_id": "' + b"x" * MAX_EVENT_BYTES + b'"}'
# 6,000 characters but 18,000 bytes of UTF-8: the limit is on bytes whatever the input type
BIG_UNICODE = '{"event_id": "' + "€" * 6000 + '"}'

REJECTIONS = [
    # (input, field, text in the reason)
    (None, None, "null value"),
    (12345, None, "must be bytes or str, got int"),
    ({"event_id": "e"}, None, "must be bytes or str, got dict"),
    (BIG_ASCII, None, f"exceeds the {MAX_EVENT_BYTES}-byte limit"),
    (BIG_UNICODE, None, f"exceeds the {MAX_EVENT_BYTES}-byte limit"),
    (b"", None, "not valid JSON"),
    (b"\xff\xfe{}", None, "not valid JSON"),
    (b'{"event_id": "e1", "user_id"', None, "not valid JSON"),
    (b"NaN", None, "not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object, got list"),
    (b'"text"', None, "must be a JSON object, got str"),
    (b"null", None, "must be a JSON object, got NoneType"),
    (b"{}", "event_id", "missing required field(s): event_id, user_id, item_id, action, timestamp_ms"),
    (raw(item_id=...), "item_id", "missing required field(s): item_id"),
    (raw(action=None), "action", "missing required field(s): action"),
    (raw(event_id=1.5), "event_id", "event_id must be a string or integer, got float"),
    (raw(user_id=True), "user_id", "user_id must be a string or integer, got bool"),
    (raw(item_id=["i"]), "item_id", "item_id must be a string or integer, got list"),
    (raw(item_id={"id": 1}), "item_id", "got dict"),
    (raw(user_id=""), "user_id", "user_id must not be empty"),
    (raw(event_id="e" * (MAX_ID_CHARS + 1)), "event_id", f"the limit is {MAX_ID_CHARS}"),
    (raw(session_id=""), "session_id", "session_id must not be empty"),
    (raw(session_id=False), "session_id", "got bool"),
    (raw(category_id="c" * 1000), "category_id", f"the limit is {MAX_ID_CHARS}"),
    (raw(action="like"), "action", "unknown action 'like'"),
    (raw(action=3), "action", "action must be a string, got int"),
    (raw(timestamp_ms="2017-11-24"), "timestamp_ms", "timestamp_ms must be a number, got str"),
    (raw(timestamp_ms=True), "timestamp_ms", "got bool"),
    (raw(timestamp_ms=-1), "timestamp_ms", "timestamp_ms is negative"),
    (raw(timestamp_ms=1_511_544_070), "timestamp_ms", "is it in seconds?"),  # seconds
    (raw(timestamp_ms=MIN_TIMESTAMP_MS - 1), "timestamp_ms", "outside 2000-01-01..2100-01-01"),
    (raw(timestamp_ms=MAX_TIMESTAMP_MS + 1), "timestamp_ms", "outside 2000-01-01..2100-01-01"),
    (raw(timestamp_ms=2**64 - 1), "timestamp_ms", "outside"),
    (raw(price="9.99"), "price", "price must be a number, got str"),
    (raw(price=False), "price", "got bool"),
    (raw(price=-0.01), "price", "is not a finite number in 0..1e+09"),
    (raw(price=1e9 + 1), "price", "is not a finite number"),
]


@pytest.mark.parametrize("record,field,reason", REJECTIONS,
                         ids=[f"{i}-{r[2][:30]}" for i, r in enumerate(REJECTIONS)])
def test_rejections_say_why(record, field, reason):
    with pytest.raises(SchemaError) as err:
        parse_event(record)
    assert reason in err.value.reason
    assert str(err.value) == err.value.reason
    assert err.value.field == field


@pytest.mark.parametrize("changes,field,reason", [
    ({"timestamp_ms": float("nan")}, "timestamp_ms", "must be finite"),
    ({"timestamp_ms": float("inf")}, "timestamp_ms", "must be finite"),
    ({"price": float("inf")}, "price", "not a finite number"),
    ({"price": float("nan")}, "price", "not a finite number"),
])
def test_non_finite_numbers_from_decoded_dicts(changes, field, reason):
    # JSON has no NaN/Infinity (orjson refuses them), but from_dict takes decoded objects too
    with pytest.raises(SchemaError) as err:
        Event.from_dict({**GOOD, **changes})
    assert err.value.field == field and reason in err.value.reason


def test_schema_error_is_a_project_error_and_a_value_error():
    with pytest.raises(SeqstreamError):
        parse_event(b"{")
    with pytest.raises(ValueError):
        parse_event(b"{")


# --------------------------------------------------------------------------- other records
def prediction(**kw) -> Prediction:
    base = dict(event_id="e1", user_id="u1", items=["i3", "i1", "i2"], scores=[2.5, 1.0, -0.25],
                next_action={a: 0.2 for a in ACTIONS}, model_version="gru4rec@abc123",
                event_timestamp_ms=TS, emitted_at_ms=TS + 17, extra={"rank_of": {"i1": 2}})
    base.update(kw)
    return Prediction(**base)


def test_prediction_round_trip():
    p = prediction()
    back = Prediction.from_json(p.to_json())
    assert back == p
    assert Prediction.from_json(p.to_json().decode()) == p


def test_prediction_accepts_numpy_values():
    p = prediction(scores=np.array([2.5, 1.0, -0.25], dtype=np.float32),
                   extra={"n": np.int64(3)})
    back = Prediction.from_json(p.to_json())
    assert back.scores == [2.5, 1.0, -0.25]  # exactly representable in float32
    assert back.extra == {"n": 3}


def test_prediction_ignores_unknown_fields_and_requires_known_ones():
    d = orjson.loads(prediction().to_json())
    assert Prediction.from_json(orjson.dumps({**d, "new_field": 1})) == prediction()
    del d["model_version"]
    with pytest.raises(SchemaError, match="model_version"):
        Prediction.from_json(orjson.dumps(d))


def test_metrics_window_round_trip():
    w = MetricsWindow(
        window_start_ms=TS, window_end_ms=TS + 60_000, window_kind="hopping", events=1200,
        predictions=1200, scored=1100, users=90, late_events=3, dead_letters=7,
        dead_letter_rate=7 / 1207, metrics={"hr@10": 0.25, "ndcg@10": 0.125, "mrr@10": 0.1},
        action_accuracy=0.5, action_macro_f1=0.375, coverage=0.02, events_per_s=2500.5,
        latency_p50_ms=12.0, latency_p95_ms=40.0, latency_p99_ms=80.5, model_version="m1",
        emitted_at_ms=TS + 61_000,
    )
    assert MetricsWindow.from_json(w.to_json()) == w
    empty = MetricsWindow(window_start_ms=0, window_end_ms=60_000)
    assert MetricsWindow.from_json(empty.to_json()) == empty


@pytest.mark.parametrize("bad", [b"", b"[]", b"not json", b'{"window_start_ms": 1}'])
def test_records_reject_bad_json_with_schema_error(bad):
    for cls in (MetricsWindow, Prediction, DeadLetter):
        with pytest.raises(SchemaError) as err:
            cls.from_json(bad)
        assert cls.__name__ in str(err.value)


ALL_BYTES = bytes(range(256)) * 3 + b"\x00"


@pytest.mark.parametrize("original", [ALL_BYTES, b"", b"\xff\xfe", b'{"event_id": "e1"',
                                      "ünïcode".encode("utf-16")])
def test_dead_letter_keeps_original_bytes_exactly(original):
    dl = DeadLetter.of(original, "not valid JSON: ...", "seqstream.events", 3, 1_000_001,
                       key=b"\x00user\xff", failed_at_ms=TS, source="stream")
    assert dl.original == original
    back = DeadLetter.from_json(dl.to_json())
    assert back == dl
    assert back.original == original
    assert base64.b64decode(back.key_b64) == b"\x00user\xff"
    assert (back.topic, back.partition, back.offset, back.reason) == \
        ("seqstream.events", 3, 1_000_001, "not valid JSON: ...")


def test_dead_letter_without_key_or_value():
    dl = DeadLetter.of(None, "empty record (null value)", "t", 0, 0, source="replay")
    back = DeadLetter.from_json(dl.to_json())
    assert back.original == b"" and back.key_b64 is None and back.source == "replay"


def test_dead_letter_of_a_real_rejection():
    bad = raw(action="like")
    with pytest.raises(SchemaError) as err:
        parse_event(bad)
    dl = DeadLetter.of(bad, err.value.reason, "seqstream.events", 0, 5)
    back = DeadLetter.from_json(dl.to_json())
    assert back.original == bad and "unknown action" in back.reason
