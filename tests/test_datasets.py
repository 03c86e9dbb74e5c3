"""Log readers (one per format), the synthetic generator and per-user sequences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_core.datasets import FORMATS, Rejected, iter_log, read_log
from model_core.datasets.recbole import auto_offset_s
from model_core.datasets.seqtxt import BASE_MS
from model_core.datasets.synth import generate, write_jsonl
from model_core.exceptions import DataFormatError
from model_core.sequences import build_vocab, group_by_user, session_keys
from schemas import Event, action_index

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} absent (shared data sets)")


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


# --------------------------------------------------------------------------- taobao
def test_taobao_rows_and_truncated_last_line(tmp_path):
    p = _write(tmp_path, "ub.csv",
               "1,10,100,pv,1511544070\n"
               "1,11,100,buy,1511544080\n"
               "2,10,100,fav,1505117799\n"  # 2017-09 outlier: valid, kept
               "2,12,101,cart,1511544090\n"
               "3,13,102,pv")  # cut off, no newline
    r = read_log(p, "taobao")
    assert [e.event_id.rsplit(":", 1)[0] for e in r.events] == ["ub:1", "ub:2", "ub:3", "ub:4"]
    assert [e.action for e in r.events] == ["view", "purchase", "fav", "cart"]
    assert r.events[0].timestamp_ms == 1_511_544_070_000
    assert r.events[2].timestamp_ms == 1_505_117_799_000
    assert r.events[0].category_id == "100"
    assert r.rejected == 1
    (bad,) = r.errors
    assert bad.line_no == 5 and bad.raw == b"3,13,102,pv"
    assert "expected 5" in bad.reason and "got 4" in bad.reason


def test_generated_ids_tell_files_of_one_name_apart(tmp_path):
    """Two exports named alike (part-00000.csv) share no ids; the same file read again gives
    the same ids (a re-send is a redelivery)."""
    a = _write(tmp_path / "a", "part-00000.csv", "1,10,100,pv,1511544070\n2,11,100,pv,1511544080\n")
    b = _write(tmp_path / "b", "part-00000.csv", "3,12,100,pv,1511544090\n4,13,100,pv,1511544095\n")
    ids_a = [e.event_id for e in read_log(a, "taobao").events]
    ids_b = [e.event_id for e in read_log(b, "taobao").events]
    assert ids_a[0].startswith("part-00000:1:") and not set(ids_a) & set(ids_b)
    assert [e.event_id for e in read_log(a, "taobao").events] == ids_a
    for fmt, text in [("seqtxt", ("u1 i1\n", "u1 i2\n")),
                      ("yoochoose", ("SessionId\tItemId\tTime\n1\t7\t1396860669\n",
                                     "SessionId\tItemId\tTime\n1\t8\t1396860669\n"))]:
        x = _write(tmp_path / "a", f"same.{fmt}", text[0])
        y = _write(tmp_path / "b", f"same.{fmt}", text[1])
        assert read_log(x, fmt).events[0].event_id != read_log(y, fmt).events[0].event_id


def test_taobao_bad_rows_become_rejected_not_exceptions(tmp_path):
    p = _write(tmp_path, "ub.csv",
               "1,10,100,jump,1511544070\n"  # unknown behaviour
               "1,10,100,pv,abc\n"  # bad time
               "1,10,100,pv,15\n"  # 1970: outside the accepted range
               ",10,100,pv,1511544070\n"  # empty user
               "\n"
               "1,10,100,pv,1511544070\n")
    r = read_log(p, "taobao")
    assert len(r.events) == 1 and r.events[0].event_id.startswith("ub:6:")  # blank line 5 skipped
    assert r.rejected == 4
    reasons = [e.reason for e in r.errors]
    assert "unknown action" in reasons[0]
    assert "timestamp" in reasons[1]
    assert "outside" in reasons[2]
    assert "user_id" in reasons[3]


def test_non_utf8_line_is_rejected(tmp_path):
    p = _write(tmp_path, "ub.csv", b"1,\xff\xfe,100,pv,1511544070\n1,10,100,pv,1511544070\n")
    r = read_log(p, "taobao")
    assert r.rejected == 1 and "UTF-8" in r.errors[0].reason
    assert r.errors[0].raw == b"1,\xff\xfe,100,pv,1511544070"


def test_errors_kept_are_capped_but_all_counted(tmp_path):
    p = _write(tmp_path, "ub.csv", "x\n" * 250 + "1,10,100,pv,1511544070\n")
    r = read_log(p, "taobao")
    assert r.rejected == 250 and len(r.errors) == 100 and len(r.events) == 1
    assert r.errors[-1].line_no == 100


@needs_data
def test_real_taobao_file_has_exactly_one_rejected_line():
    r = read_log(DATA / "taobao_userbehavior_head" / "UserBehavior.csv", "taobao")
    assert r.rejected == 1
    assert len(r.events) == 84_475
    assert r.errors[0].raw == b"100370,1968385,1875258,pv"
    assert "cut off" in r.errors[0].reason
    # the 2017-09 outliers are kept
    assert min(e.timestamp_ms for e in r.events) < 1_506_000_000_000
    assert {e.action for e in r.events} == {"view", "cart", "fav", "purchase"}


# --------------------------------------------------------------------------- others
def test_yoochoose(tmp_path):
    p = _write(tmp_path, "clicks.txt",
               "SessionId\tItemId\tTime\n1\t214536502\t1396860669.277\n1\t7\tnan\n2\t9\t1396860700\n")
    r = read_log(p, "yoochoose")
    assert [(e.user_id, e.session_id, e.item_id, e.action, e.timestamp_ms) for e in r.events] == [
        ("1", "1", "214536502", "click", 1_396_860_669_277),
        ("2", "2", "9", "click", 1_396_860_700_000)]
    assert r.rejected == 1 and r.errors[0].line_no == 3
    assert [e.event_id.rsplit(":", 1)[0] for e in r.events] == ["clicks:2", "clicks:4"]


def test_yoochoose_without_header_is_refused(tmp_path):
    p = _write(tmp_path, "c.txt", "1\t2\t1396860669.277\n")
    with pytest.raises(DataFormatError, match="SessionId"):
        list(iter_log(p, "yoochoose"))


def test_jsonl(tmp_path):
    good = Event("e1", "u1", "i1", "view", 1_700_000_000_000, price=3.5)
    p = _write(tmp_path, "ev.jsonl", good.to_json().decode() + "\n{not json\n"
               '{"event_id":"e2","user_id":"u","item_id":"i","action":"bogus","timestamp_ms":1700000000000}\n')
    r = read_log(p, "jsonl")
    assert r.events == [good]
    assert r.rejected == 2 and "JSON" in r.errors[0].reason and "action" in r.errors[1].reason


def test_csv_mapping_with_header_tsv_ms(tmp_path):
    p = _write(tmp_path, "log.tsv",
               "uid\tsku\tts\tkind\tcost\n"
               "a\tx\t1700000000123\tclick\t9.5\n"
               "b\ty\t1700000000200\t\t\n"
               "c\tz\toops\tview\t1\n")
    r = read_log(p, "csv", columns={"user_id": "uid", "item_id": "sku", "timestamp": "ts",
                                    "action": "kind", "price": "cost"},
                 time_unit="ms", default_action="cart")
    assert [(e.user_id, e.item_id, e.action, e.timestamp_ms, e.price) for e in r.events] == [
        ("a", "x", "click", 1_700_000_000_123, 9.5), ("b", "y", "cart", 1_700_000_000_200, None)]
    assert r.rejected == 1 and "timestamp" in r.errors[0].reason


def test_csv_without_header_by_position_and_seconds(tmp_path):
    p = _write(tmp_path, "log.csv", '7,"it,em",1700000000.5\n8,j,1700000001\n')
    r = read_log(p, "csv", header=False, columns={"user_id": 0, "item_id": 1, "timestamp": 2})
    assert [(e.user_id, e.item_id, e.timestamp_ms, e.action) for e in r.events] == [
        ("7", "it,em", 1_700_000_000_500, "view"), ("8", "j", 1_700_000_001_000, "view")]


def test_csv_missing_required_column_is_a_clear_error(tmp_path):
    p = _write(tmp_path, "log.csv", "user,item\n1,2\n")
    with pytest.raises(DataFormatError, match="timestamp"):
        list(iter_log(p, "csv", columns={"user_id": "user", "item_id": "item"}))


def test_seqtxt_synthesizes_monotone_time(tmp_path):
    p = _write(tmp_path, "beauty.txt", "1 5\n1 6\n2 5\nbad\n2 7\n")
    r = read_log(p, "seqtxt")
    assert [e.timestamp_ms - BASE_MS for e in r.events] == [1, 2, 3, 5]
    assert {e.action for e in r.events} == {"view"}
    assert r.rejected == 1 and r.errors[0].line_no == 4


def test_recbole_header_suffixes_and_auto_time_shift(tmp_path):
    p = _write(tmp_path, "ml.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
               "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    r = read_log(p, "recbole")
    off = auto_offset_s(881250949)
    assert off % (7 * 86400) == 0 and off > 0
    assert [e.timestamp_ms for e in r.events] == [(881250949 + off) * 1000,
                                                  (891717742 + off) * 1000]
    assert r.events[1].timestamp_ms - r.events[0].timestamp_ms == (891717742 - 881250949) * 1000
    raw = read_log(p, "recbole", time_offset_s=0)
    assert raw.rejected == 2 and "outside" in raw.errors[0].reason


def test_unknown_format_and_option():
    with pytest.raises(DataFormatError, match="unknown log format"):
        read_log("x", "parquet")
    with pytest.raises(DataFormatError, match="no option"):
        read_log("x", "taobao", delimiter=";")
    assert set(FORMATS) == {"taobao", "yoochoose", "jsonl", "csv", "seqtxt", "recbole"}


def test_readers_stream(tmp_path):
    p = _write(tmp_path, "ub.csv", "1,10,100,pv,1511544070\nbad\n")
    it = iter_log(p, "taobao")
    assert isinstance(next(it), Event)
    assert isinstance(next(it), Rejected)


@needs_data
@pytest.mark.parametrize("rel,fmt,n", [
    ("sessionrec_yoochoose_100k/yoochoose-clicks-100k_test.txt", "yoochoose", 13_568),
    ("recbole_ml-100k/ml-100k.inter", "recbole", 100_000),
])
def test_real_files_read_cleanly(rel, fmt, n):
    r = read_log(DATA / rel, fmt)
    assert (len(r.events), r.rejected) == (n, 0)


# --------------------------------------------------------------------------- synth
def test_synth_is_deterministic_ordered_and_unique(tmp_path):
    a = generate(3000, seed=3)
    assert a == generate(3000, seed=3)
    assert a != generate(3000, seed=4)
    ts = [e.timestamp_ms for e in a]
    assert all(x < y for x, y in zip(ts, ts[1:], strict=False))
    assert len({e.event_id for e in a}) == 3000
    assert {e.action for e in a} == {"view", "click", "cart", "fav", "purchase"}
    assert all(e.category_id and e.session_id and e.price is not None for e in a)
    p = tmp_path / "s.jsonl"
    write_jsonl(a, p)
    assert read_log(p, "jsonl").events == a


def test_synth_popularity_is_skewed_and_funnel_ordered():
    ev = generate(20_000, seed=0)
    counts = np.sort(np.unique([e.item_id for e in ev], return_counts=True)[1])[::-1]
    assert counts[:10].sum() > 5 * counts[-len(counts) // 2:].sum() / (len(counts) // 2) * 10
    # purchases follow carts far more often than they follow views
    prev: dict[str, str] = {}
    after = {"cart": [0, 0], "view": [0, 0]}
    for e in ev:
        p = prev.get(e.user_id)
        if p in after:
            after[p][0] += 1
            after[p][1] += e.action == "purchase"
        prev[e.user_id] = e.action
    assert after["cart"][1] / after["cart"][0] > 5 * after["view"][1] / max(1, after["view"][0])


def _successor_counts(events) -> dict:
    from collections import Counter, defaultdict
    nxt: dict[str, Counter] = defaultdict(Counter)
    last: dict[str, str] = {}
    for e in events:
        if e.session_id in last:
            nxt[last[e.session_id]][e.item_id] += 1
        last[e.session_id] = e.item_id
    return nxt


def test_synth_change_at_switches_transitions():
    n = 20_000
    ev = generate(n, seed=1, change_at=0.5)
    same = generate(n, seed=1)
    assert ev[: n // 2] == same[: n // 2]
    before = _successor_counts(ev[: n // 2])
    after = _successor_counts(ev[n // 2:])
    # the most frequent successor of an item before the change is rarely the one after it
    agree = total = 0
    for item, c in before.items():
        if sum(c.values()) >= 20 and item in after and sum(after[item].values()) >= 20:
            b = [i for i, _ in c.most_common(2) if i != item]
            a = [i for i, _ in after[item].most_common(2) if i != item]
            if b and a:
                total += 1
                agree += b[0] == a[0]
    assert total >= 10 and agree / total < 0.3


# --------------------------------------------------------------------------- sequences
def test_vocab_orders_and_grouping():
    ev = [Event("a", "u1", "x", "view", 1_700_000_000_300),
          Event("b", "u2", "y", "cart", 1_700_000_000_100),
          Event("c", "u1", "y", "purchase", 1_700_000_000_100),
          Event("d", "u1", "z", "click", 1_700_000_000_100)]
    v = build_vocab(ev)
    assert [v.item_id(i) for i in (1, 2, 3)] == ["x", "y", "z"]
    vf = build_vocab(ev, order="frequency")
    assert [vf.item_id(i) for i in (1, 2, 3)] == ["y", "x", "z"]
    s = group_by_user(ev, v)
    assert s.user_ids == ["u1", "u2"]
    # sorted by time, ties in input order (c before d)
    assert s.items[0].tolist() == [2, 3, 1] and s.items[0].dtype == np.int32
    assert s.actions[0].tolist() == [action_index("purchase"), action_index("click"),
                                     action_index("view")]
    assert s.actions[0].dtype == np.uint8 and s.timestamps_ms[0].dtype == np.int64
    assert s.timestamps_ms[0].tolist() == [1_700_000_000_100] * 2 + [1_700_000_000_300]
    unknown = group_by_user([Event("e", "u", "new", "view", 1_700_000_000_000)], v)
    assert unknown.items[0].tolist() == [0]


def test_session_keys_split_at_gaps():
    t0 = 1_700_000_000_000
    ev = [Event("1", "u", "a", "view", t0), Event("2", "u", "b", "view", t0 + 60_000),
          Event("3", "u", "c", "view", t0 + 60_000 + 31 * 60_000),
          Event("4", "v", "c", "view", t0, session_id="S")]
    assert session_keys(ev) == ["u#0", "u#0", "u#1", "S"]
