"""``seqstream schema``: JSON Schemas made from the record classes agree with those classes."""

from __future__ import annotations

import dataclasses
import json

import orjson
import pytest

from schemas import ACTIONS, Alert, DeadLetter, Event, MetricsWindow, Prediction, SchemaError
from schemas.event import MAX_ID_CHARS, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from schemas.json_schema import RECORDS, json_schema
from stream_app.cli import main

SAMPLES = [
    Event("e1", "u1", "i1", "view", 1_700_000_000_000, session_id="s", price=2.5),
    Prediction("e1", "u1", ["a", "b"], [0.5, 0.25], {"view": 0.9, "cart": 0.1}, "m-1",
               1_700_000_000_000, 1_700_000_000_010),
    MetricsWindow(0, 60_000, events=3, metrics={"hr@10": 0.5}, latency_p50_ms=4.0),
    DeadLetter.of(b"{bad", "not valid JSON", "t", 0, 7),
    Alert("hit@10", "drift", "adwin", 0.3, 0.1, 0, 60_000, "hit@10 fell"),
]


def _conforms(value, schema) -> bool:
    """The subset of JSON Schema these schemas use: type, anyOf, enum, bounds, items,
    additionalProperties, required."""
    if "anyOf" in schema:
        return any(_conforms(value, s) for s in schema["anyOf"])
    t = schema.get("type")
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
             "null": type(None), "array": list, "object": dict}
    if t and (not isinstance(value, kinds[t]) or (t in ("integer", "number")
                                                   and isinstance(value, bool))):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "minimum" in schema and value < schema["minimum"]:
        return False
    if "maximum" in schema and value > schema["maximum"]:
        return False
    if isinstance(value, str) and not (schema.get("minLength", 0) <= len(value)
                                       <= schema.get("maxLength", len(value))):
        return False
    if t == "array" and "items" in schema:
        return all(_conforms(v, schema["items"]) for v in value)
    if t == "object":
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra)
            if sub is not None and not _conforms(v, sub):
                return False
    return True


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).__name__)
def test_schema_lists_the_class_fields_and_its_records_conform(record):
    cls = type(record)
    s = json_schema(cls)
    fields = dataclasses.fields(cls)
    assert list(s["properties"]) == [f.name for f in fields]
    assert s["required"] == [f.name for f in fields if f.default is dataclasses.MISSING
                             and f.default_factory is dataclasses.MISSING]
    assert _conforms(orjson.loads(record.to_json()), s)


def test_event_schema_limits_are_the_validation_limits():
    s = json_schema(Event)
    p = s["properties"]
    assert p["action"]["enum"] == list(ACTIONS)
    assert p["timestamp_ms"]["minimum"] == MIN_TIMESTAMP_MS
    assert p["timestamp_ms"]["maximum"] == MAX_TIMESTAMP_MS
    base = Event("e", "u", "i", "view", MIN_TIMESTAMP_MS).to_dict()
    # what the schema rejects, the validator rejects too
    for change in ({"timestamp_ms": MIN_TIMESTAMP_MS - 1}, {"timestamp_ms": MAX_TIMESTAMP_MS + 1},
                   {"user_id": ""}, {"item_id": "x" * (MAX_ID_CHARS + 1)},
                   {"action": "teleport"}, {"price": -1.0}):
        bad = {**base, **change}
        assert not _conforms(bad, s), change
        with pytest.raises(SchemaError):
            Event.from_dict(bad)
    assert _conforms(base, s) and Event.from_dict(base)


def test_schema_command_prints_every_record_and_one(tmp_path, capsys):
    assert main(["schema"]) == 0
    allof = json.loads(capsys.readouterr().out)
    assert set(allof) == set(RECORDS) == {"Event", "Prediction", "MetricsWindow", "DeadLetter",
                                          "Alert", "EraseRequest", "ErasureAudit"}
    assert main(["schema", "Prediction"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one == allof["Prediction"] and "top-K" in one["properties"]["items"]["description"]
    assert main(["schema", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "Alert.schema.json").is_file()
