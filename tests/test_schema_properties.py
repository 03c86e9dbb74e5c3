"""Property-based tests of event parsing: hostile input never crashes, valid events round-trip.

``schemas.parse_event`` must, for *any* input, either return a valid :class:`Event` or raise
:class:`SchemaError` with a non-empty reason — never another exception (the stream turns a
SchemaError into a dead letter; anything else would stop a worker).
"""

from __future__ import annotations

import math
import string

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from schemas import ACTIONS, Event, SchemaError, normalize_action, parse_event
from schemas.actions import _ALIASES, alias_key
from schemas.event import (
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    MAX_PRICE,
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
)

# No timing in tests (the machine is shared): no deadline; big inputs are the point here.
PROFILE = settings(deadline=None, max_examples=150,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

REQUIRED = ("event_id", "user_id", "item_id", "action", "timestamp_ms")
FIELDS = REQUIRED + ("session_id", "category_id", "price")


def outcome(raw):
    """Event or the SchemaError; any other exception fails the test that calls it."""
    try:
        ev = parse_event(raw)
    except SchemaError as e:
        assert isinstance(e.reason, str) and e.reason.strip(), "a rejection needs a reason"
        assert str(e) == e.reason
        return e
    assert_valid(ev)
    return ev


def assert_valid(ev: Event) -> None:
    """Everything a downstream consumer may rely on for an accepted event."""
    assert isinstance(ev, Event)
    for name in ("event_id", "user_id", "item_id"):
        v = getattr(ev, name)
        assert isinstance(v, str) and 0 < len(v) <= MAX_ID_CHARS
    for name in ("session_id", "category_id"):
        v = getattr(ev, name)
        assert v is None or (isinstance(v, str) and 0 < len(v) <= MAX_ID_CHARS)
    assert ev.action in ACTIONS
    assert type(ev.timestamp_ms) is int and MIN_TIMESTAMP_MS <= ev.timestamp_ms <= MAX_TIMESTAMP_MS
    assert ev.price is None or (type(ev.price) is float and math.isfinite(ev.price)
                                and 0 <= ev.price <= MAX_PRICE)
    assert len(ev.to_json()) <= MAX_EVENT_BYTES  # an accepted event can be re-sent as is


# --------------------------------------------------------------------------- strategies
# JSON-representable text: no lone surrogates (orjson cannot encode them)
json_text = st.text(st.characters(exclude_categories=("Cs",)))
ids = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=MAX_ID_CHARS),
    st.integers(min_value=0, max_value=2**63 - 1),
)
timestamps = st.integers(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS)
prices = st.floats(min_value=0, max_value=MAX_PRICE, allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def valid_dicts(draw) -> dict:
    d = {
        "event_id": draw(ids),
        "user_id": draw(ids),
        "item_id": draw(ids),
        "action": draw(st.sampled_from(sorted(_ALIASES))),
        "timestamp_ms": draw(timestamps),
    }
    for name in ("session_id", "category_id"):
        if draw(st.booleans()):
            d[name] = draw(st.none() | ids)
    if draw(st.booleans()):
        d["price"] = draw(st.none() | prices | st.integers(0, int(MAX_PRICE)))
    return d


@st.composite
def valid_events(draw) -> Event:
    text_ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1,
                       max_size=MAX_ID_CHARS)
    return Event(
        event_id=draw(text_ids), user_id=draw(text_ids), item_id=draw(text_ids),
        action=draw(st.sampled_from(ACTIONS)), timestamp_ms=draw(timestamps),
        session_id=draw(st.none() | text_ids), category_id=draw(st.none() | text_ids),
        price=draw(st.none() | prices),
    )


# --------------------------------------------------------------------------- never crashes
@PROFILE
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\xff\xfe\x00")
@example(b"null")
@example(b"[]")
@example(b'"\\ud800"')
@example(b"1e400")
@example(b"{" * 5000)
def test_arbitrary_bytes(raw):
    outcome(raw)


@PROFILE
@given(st.text(st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
               max_size=512))  # lone surrogates included
def test_arbitrary_text(raw):
    outcome(raw)


@PROFILE
@given(st.sampled_from([None, 0, 1.5, True, [], {}, object()]))
def test_not_bytes_at_all(raw):
    # e.g. a stream whose value was already decoded by a serializer
    assert isinstance(outcome(raw), SchemaError)


@PROFILE
@given(valid_dicts(), st.data())
def test_truncated_json(d, data):
    raw = orjson.dumps(d)
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert isinstance(outcome(raw[:cut]), SchemaError)  # a strict prefix is never an object


@PROFILE
@given(valid_dicts(), st.sampled_from(FIELDS), json_values)
def test_any_value_in_any_field(d, field, value):
    d[field] = value
    res = outcome(orjson.dumps(d))
    if isinstance(res, SchemaError) and res.field is not None:
        assert res.field in FIELDS


@PROFILE
@given(valid_dicts(), st.sampled_from(REQUIRED))
def test_missing_required_field(d, field):
    del d[field]
    res = outcome(orjson.dumps(d))
    assert isinstance(res, SchemaError) and field in res.reason


@PROFILE
@given(valid_dicts(), st.sampled_from(("event_id", "user_id", "item_id", "session_id",
                                       "category_id")),
       st.integers(MAX_ID_CHARS + 1, 3 * MAX_EVENT_BYTES))
def test_huge_strings(d, field, n):
    d[field] = "x" * n
    res = outcome(orjson.dumps(d))
    assert isinstance(res, SchemaError)
    assert res.field == field or "bytes" in res.reason


@PROFILE
@given(valid_dicts(), st.dictionaries(json_text.filter(lambda k: k not in FIELDS), json_values,
                                      max_size=5))
def test_unknown_fields_are_ignored(d, extra):
    base = outcome(orjson.dumps(d))
    assume(isinstance(base, Event))
    res = outcome(orjson.dumps({**extra, **d}))
    if len(orjson.dumps({**extra, **d})) <= MAX_EVENT_BYTES:
        assert res == base


@PROFILE
@given(valid_dicts(), json_text)
def test_unknown_actions(d, action):
    assume(alias_key(action) not in _ALIASES)
    d["action"] = action
    res = outcome(orjson.dumps(d))
    assert isinstance(res, SchemaError) and res.field == "action"


@PROFILE
@given(valid_dicts(), st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(MIN_TIMESTAMP_MS - 10**9, MIN_TIMESTAMP_MS + 10**9),
    st.integers(MAX_TIMESTAMP_MS - 10**9, MAX_TIMESTAMP_MS + 10**9),
))
@example({"event_id": "e", "user_id": "u", "item_id": "i", "action": "view",
          "timestamp_ms": 0}, MIN_TIMESTAMP_MS - 1)
@example({"event_id": "e", "user_id": "u", "item_id": "i", "action": "view",
          "timestamp_ms": 0}, MAX_TIMESTAMP_MS + 1)
@example({"event_id": "e", "user_id": "u", "item_id": "i", "action": "view",
          "timestamp_ms": 0}, 1_700_000_000)  # seconds, not milliseconds
def test_timestamps_far_in_past_or_future(d, ts):
    d["timestamp_ms"] = ts
    res = outcome(orjson.dumps(d))
    accepted = MIN_TIMESTAMP_MS <= int(ts) <= MAX_TIMESTAMP_MS
    assert isinstance(res, Event) == accepted
    if accepted:
        assert res.timestamp_ms == int(ts)
    else:
        assert res.field == "timestamp_ms"


@PROFILE
@given(valid_dicts())
def test_valid_dicts_are_accepted(d):
    res = outcome(orjson.dumps(d))
    assert isinstance(res, Event), res
    assert res.action == _ALIASES[d["action"]]
    assert res.event_id == str(d["event_id"])  # numeric ids become their decimal text


@PROFILE
@given(st.binary(max_size=600).map(lambda b: b.decode("utf-8", "replace")) | json_text)
def test_bytes_and_str_agree(text):
    raw = text.encode("utf-8")
    a, b = outcome(raw), outcome(text)
    assert type(a) is type(b)
    if isinstance(a, Event):
        assert a == b


# --------------------------------------------------------------------------- round trips
@PROFILE
@given(valid_events())
def test_valid_events_round_trip(ev):
    assert_valid(ev)
    raw = ev.to_json()
    assert parse_event(raw) == ev
    assert parse_event(raw.decode("utf-8")) == ev
    assert Event.from_json(raw) == ev
    assert Event.from_dict(orjson.loads(raw)) == ev


@PROFILE
@given(valid_dicts())
def test_parsing_is_idempotent(d):
    ev = parse_event(orjson.dumps(d))
    again = parse_event(ev.to_json())
    assert again == ev
    assert again.to_json() == ev.to_json()


@PROFILE
@given(st.sampled_from(sorted(_ALIASES)), st.data())
def test_aliases_normalise(alias, data):
    # any letter case, surrounding whitespace
    mixed = "".join(c.upper() if data.draw(st.booleans()) else c for c in alias)
    pad = st.text(alphabet=string.whitespace, max_size=3)
    raw = data.draw(pad) + mixed + data.draw(pad)
    canon = normalize_action(raw)
    assert canon == _ALIASES[alias] and canon in ACTIONS
    assert normalize_action(canon) == canon


def test_alias_table_covers_the_documented_aliases():
    expected = {"pv": "view", "browse": "view", "buy": "purchase", "order": "purchase",
                "transaction": "purchase", "addtocart": "cart", "carts": "cart"}
    for alias, canon in expected.items():
        assert normalize_action(alias) == canon
    assert set(_ALIASES.values()) == set(ACTIONS)
    for a in ACTIONS:
        assert _ALIASES[a] == a


@pytest.mark.parametrize("raw", ["", " ", "views", "pv2", "purchased", "VIEW!"])
def test_near_miss_actions_are_unknown(raw):
    with pytest.raises(SchemaError) as err:
        normalize_action(raw)
    assert err.value.field == "action"


# the fast path of Event.from_dict (common five-field records) must agree with the full checks
_FIELD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10, max_value=5_000_000_000_000),
    st.floats(allow_nan=True), st.text(max_size=300), st.sampled_from(ACTIONS),
    st.sampled_from(sorted(_ALIASES)), st.lists(st.integers(), max_size=2),
    st.integers(min_value=MIN_TIMESTAMP_MS - 5, max_value=MAX_TIMESTAMP_MS + 5),
)


@PROFILE
@given(st.dictionaries(st.sampled_from(FIELDS), _FIELD_VALUES, min_size=4, max_size=6))
@example({"event_id": "e", "user_id": "u", "item_id": "i", "action": "view",
          "timestamp_ms": MIN_TIMESTAMP_MS})
@example({"event_id": "e", "user_id": "u", "item_id": "i", "action": ["view"],
          "timestamp_ms": MIN_TIMESTAMP_MS})
@example({"event_id": "e", "user_id": "u", "item_id": "x" * (MAX_ID_CHARS + 1),
          "action": "view", "timestamp_ms": MIN_TIMESTAMP_MS})
def test_fast_path_agrees_with_full_validation(d):
    def run(f):
        try:
            return f(d)
        except SchemaError as e:
            return ("error", e.field)
    assert run(Event.from_dict) == run(Event._from_dict_checked)


@pytest.mark.parametrize("raw, canon", [
    ("page_view", "view"), ("Page View", "view"), ("view-item", "view"),
    ("Product Viewed", "view"), ("select_item", "click"), ("Add To Cart", "cart"),
    ("add-to-basket", "cart"), ("add_to_wishlist", "fav"), ("Order Completed", "purchase"),
])
def test_analytics_event_names_are_aliases(raw, canon):
    assert normalize_action(raw) == canon


@pytest.mark.parametrize("raw", ["remove_from_cart", "begin_checkout", "impression"])
def test_names_meaning_something_else_stay_unknown(raw):
    with pytest.raises(SchemaError):
        normalize_action(raw)
