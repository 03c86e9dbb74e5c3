"""Reading a shopper's own log by options alone: times, actions, flat and nested JSON lines,
delimiters and cut-off rows (model_core.datasets; no Kafka)."""

from __future__ import annotations

import json

import pytest

from model_core.datasets import DataWarning, iter_log, read_log
from model_core.datasets.fields import ActionMap, TimeParser, unit_of
from model_core.exceptions import DataFormatError
from schemas import SchemaError

T0_S = 1_569_888_004  # 2019-10-01 00:00:04 UTC
T0_MS = T0_S * 1000


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- times
@pytest.mark.parametrize("value,expected", [
    (T0_S, T0_MS), (str(T0_S), T0_MS), (f"{T0_S}.5", T0_MS + 500), (T0_MS, T0_MS),
    (str(T0_MS), T0_MS), (T0_MS * 1000, T0_MS), (T0_MS * 1_000_000, T0_MS),
    ("2019-10-01 00:00:04 UTC", T0_MS), ("2019-10-01T00:00:04Z", T0_MS),
    ("2019-10-01T02:00:04+02:00", T0_MS), ("2019-10-01 00:00:04", T0_MS),
    ("2019-09-30T19:00:04-05:00", T0_MS),
])
def test_time_auto_reads_numbers_by_size_and_date_times_with_their_zone(value, expected):
    assert TimeParser("auto")(value) == expected


def test_time_zone_for_naive_date_times_and_an_explicit_format():
    assert TimeParser(timezone="Europe/Berlin")("2019-10-01 02:00:04") == T0_MS  # CEST = +2
    # an offset in the text wins over the zone option
    assert TimeParser(timezone="Europe/Berlin")("2019-10-01T00:00:04Z") == T0_MS
    p = TimeParser(time_format="%d/%m/%Y %H:%M:%S")
    assert p("01/10/2019 00:00:04") == T0_MS
    with pytest.raises(SchemaError, match="does not match --time-format"):
        p("2019-10-01 00:00:04")
    with pytest.raises(SchemaError, match="--time-format"):
        TimeParser()("yesterday noon")
    with pytest.raises(DataFormatError, match="time zone"):
        TimeParser(timezone="Mars/Olympus")
    with pytest.raises(DataFormatError, match="time_unit"):
        TimeParser("minutes")


def test_unit_of_sizes():
    assert [unit_of(v) for v in (T0_S, T0_MS, T0_MS * 1e3, T0_MS * 1e6)] == ["s", "ms", "us", "ns"]


def test_a_stated_unit_the_data_contradicts_warns_once(tmp_path):
    p = _write(tmp_path, "log.csv", "user_id,item_id,timestamp\n"
               f"u,a,{T0_S}\nu,b,{T0_S + 1}\n")
    r = read_log(p, "csv", time_unit="ms")
    assert len(r.warnings) == 1 and "looks like s" in r.warnings[0]
    # the rows themselves are rejected by the Event's time range, with that reason
    assert r.rejected == 2 and "2000-01-01" in r.errors[0].reason
    with pytest.warns(DataWarning, match="looks like s"):
        list(iter_log(p, "csv", time_unit="ms"))
    assert read_log(p, "csv").warnings == []  # auto: no guess to contradict


# --------------------------------------------------------------------------- actions
def test_action_map_maps_drops_and_falls_back_to_aliases():
    m = ActionMap({"remove_from_cart": None, "1": "view", "4": "buy", "Basket": "cart"})
    assert m("1", "view") == "view" and m(1, "view") == "view" and m(4.0, "view") == "purchase"
    assert m("remove_from_cart", "view") is None
    assert m("basket", "view") == "cart"  # case-insensitive after the exact match
    assert m("addtocart", "view") == "cart" and m("orders", "view") == "purchase"
    assert m("", "click") == "click"
    with pytest.raises(SchemaError, match="unknown action"):
        m("2", "view")
    with pytest.raises(DataFormatError, match="'x' ->"):
        ActionMap({"x": "teleport"})
    with pytest.raises(DataFormatError, match="JSON object"):
        ActionMap(["view"])


def test_dropped_rows_are_counted_apart_from_bad_rows(tmp_path):
    p = _write(tmp_path, "rees.csv",
               "event_time,event_type,product_id,user_id\n"
               "2019-10-01 00:00:04 UTC,view,1,7\n"
               "2019-10-01 00:00:05 UTC,remove_from_cart,1,7\n"
               "2019-10-01 00:00:06 UTC,teleport,2,7\n")
    r = read_log(p, "csv", columns={"timestamp": "event_time", "action": "event_type",
                                    "item_id": "product_id"},
                 actions={"remove_from_cart": None})
    assert [(e.item_id, e.action, e.timestamp_ms) for e in r.events] == [("1", "view", T0_MS)]
    assert r.dropped == 1 and r.rejected == 1 and "teleport" in r.errors[0].reason
    assert r.n_lines == 3
    items = list(iter_log(p, "csv", columns={"timestamp": "event_time", "action": "event_type",
                                             "item_id": "product_id"},
                          actions={"remove_from_cart": None}))
    assert [getattr(i, "dropped", None) for i in items] == [None, True, False]


# --------------------------------------------------------------------------- csv
def test_tsv_by_delimiter_name_or_a_real_tab(tmp_path):
    p = _write(tmp_path, "log.txt", f"uid\tsku\tts\nu\ta\t{T0_S}\n")
    for d in ("tab", "\t", "\\t"):
        r = read_log(p, "csv", delimiter=d, columns={"user_id": "uid", "item_id": "sku",
                                                      "timestamp": "ts"})
        assert [e.item_id for e in r.events] == ["a"], d
    with pytest.raises(DataFormatError, match="one character"):
        list(iter_log(p, "csv", delimiter="tabs"))


def test_truncated_last_row_is_rejected_even_when_the_lost_field_is_unmapped(tmp_path):
    # RetailRocket layout: transactionid is not mapped; the last row lost it (and its comma)
    p = _write(tmp_path, "rr.csv", "timestamp,visitorid,event,itemid,transactionid\n"
               f"{T0_MS},1,view,10,\n{T0_MS + 1},1,transaction,11,5\n{T0_MS + 2},2,view,12")
    r = read_log(p, "csv", columns={"user_id": "visitorid", "item_id": "itemid",
                                    "action": "event"})
    assert [e.item_id for e in r.events] == ["10", "11"]
    assert r.rejected == 1 and r.errors[0].line_no == 4
    assert "expected 5 fields as in the header, got 4 (record cut off?)" in r.errors[0].reason


def test_without_a_header_the_first_row_sets_the_field_count(tmp_path):
    p = _write(tmp_path, "log.csv", f"u,a,{T0_S},x\nu,b,{T0_S}\n")
    r = read_log(p, "csv", header=False, columns={"user_id": 0, "item_id": 1, "timestamp": 2})
    assert [e.item_id for e in r.events] == ["a"] and "first row" in r.errors[0].reason


def test_session_column_stands_in_for_a_user(tmp_path):
    p = _write(tmp_path, "s.csv", f"sid,item,ts\ns1,a,{T0_S}\n")
    r = read_log(p, "csv", columns={"session_id": "sid", "item_id": "item", "timestamp": "ts"})
    assert (r.events[0].user_id, r.events[0].session_id) == ("s1", "s1")


# --------------------------------------------------------------------------- JSON lines
def test_flat_json_lines_with_other_names_and_dotted_paths(tmp_path):
    rows = [{"visitor": 7, "product": {"sku": "p1"}, "when": "2019-10-01T02:00:04+02:00",
             "type": "addtocart", "cost": "9.5"},
            {"visitor": 7, "product": {}, "when": "2019-10-01T02:00:05+02:00", "type": "view"},
            {"visitor": 7, "product": {"sku": "p2"}, "when": "2019-10-01T02:00:06+02:00",
             "type": "view"}]
    p = _write(tmp_path, "flat.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n[1]\n")
    r = read_log(p, "jsonl", columns={"user_id": "visitor", "item_id": "product.sku",
                                      "timestamp": "when", "action": "type", "price": "cost"})
    assert [(e.user_id, e.item_id, e.action, e.timestamp_ms, e.price) for e in r.events] == [
        ("7", "p1", "cart", T0_MS, 9.5), ("7", "p2", "view", T0_MS + 2000, None)]
    assert r.rejected == 2
    assert "item_id" in r.errors[0].reason and "JSON object" in r.errors[1].reason
    assert r.events[0].event_id.startswith("flat:1:")  # <stem>:<line>:<hash of the line>


def test_plain_jsonl_without_options_is_the_wire_format(tmp_path):
    p = _write(tmp_path, "ev.jsonl", json.dumps({"visitor": 1}) + "\n")
    assert "missing required" in read_log(p, "jsonl").errors[0].reason


def test_nested_json_lines_one_session_per_line(tmp_path):
    lines = [
        {"session_id": "s1", "user": {"id": "u1"},
         "events": [{"item": "a", "ts": T0_MS, "action": "view"},
                    {"item": "b", "ts": T0_MS + 5, "action": "remove_from_cart"},
                    {"item": "c", "ts": "soon", "action": "view"},
                    {"item": "d", "ts": T0_MS + 9, "action": "purchase", "id": "ev-9"}]},
        {"session_id": "s2", "events": [{"item": "a", "ts": T0_MS + 20}]},
        {"session_id": "s3", "events": "none"},
        {"session_id": "s4", "events": []},
    ]
    p = _write(tmp_path, "nested.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    cols = {"session_id": "session_id", "user_id": "user.id", "item_id": "events[].item",
            "timestamp": "events[].ts", "action": "events[].action", "event_id": "events[].id"}
    r = read_log(p, "jsonl", columns=cols, actions={"remove_from_cart": None})
    # generated ids: <stem>:<line>:<hash of the line>:<event of the line>
    ids = [e.event_id.split(":") for e in r.events]
    assert [(i[0], i[1], i[-1]) if len(i) == 4 else i for i in ids] == [
        ("nested", "1", "0"), ["ev-9"], ("nested", "2", "0")]
    assert [(e.user_id, e.session_id, e.item_id, e.action) for e in r.events] == [
        ("u1", "s1", "a", "view"), ("u1", "s1", "d", "purchase"),
        ("s2", "s2", "a", "view")]  # no user: the session is the user
    assert r.dropped == 1
    reasons = [(x.line_no, x.reason) for x in r.errors]
    assert reasons[0][0] == 1 and reasons[0][1].startswith("event 2: ")
    assert reasons[1] == (3, "events is a str, not a list of events")
    assert reasons[2] == (4, "events is an empty list")


@pytest.mark.parametrize("cols,match", [
    ({"item_id": "events[].item", "timestamp": "clicks[].ts"}, "one list"),
    ({"item_id": "events[]item"}, "LIST"),
    ({"item_id": "events[].a[].b"}, "LIST"),
    ({"colour": "c"}, "unknown field"),
])
def test_bad_json_mappings_are_refused_before_reading(tmp_path, cols, match):
    p = _write(tmp_path, "n.jsonl", "{}\n")
    with pytest.raises(DataFormatError, match=match):
        list(iter_log(p, "jsonl", columns=cols))
