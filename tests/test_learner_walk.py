"""What a newcomer walking the learner from the README ran into (session 8): a warm-up log in
a foreign layout, records the workers dead-letter learned by the learner, the broker's own
log filling memory and disk, a demo summary that named its rows without saying what they are."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from schemas.event import Event
from schemas.exceptions import SchemaError, SeqstreamError

RR_HEADER = "timestamp,visitorid,event,itemid,transactionid\n"
T0 = 1_433_221_356_462


def _rr_csv(path, users: int = 30, per_user: int = 4):
    """A RetailRocket-layout log (the columns are not named like Event fields)."""
    rows = [f"{T0 + 1000 * (u * per_user + i)},{u},{'addtocart' if i == 2 else 'view'},"
            f"{(u + i) % 17},\n" for u in range(users) for i in range(per_user)]
    path.write_text(RR_HEADER + "".join(rows), encoding="utf-8")
    return path


def test_warm_log_in_a_foreign_layout_is_read_as_train_reads_it(tmp_path, clean_env):
    from stream_app.learner.service import warm_events
    from stream_app.settings import load_settings

    s = load_settings(learn_warm_path=str(_rr_csv(tmp_path / "rr.csv")))
    events = warm_events(s)
    assert len(events) == 120
    assert {e.user_id for e in events} == {str(u) for u in range(30)}
    assert {e.action for e in events} == {"view", "cart"}  # addtocart read as cart
    with pytest.raises(SeqstreamError) as e:
        warm_events(load_settings(learn_warm_path=str(tmp_path / "absent.csv")))
    assert "--warm" in str(e.value) and "\n" not in str(e.value)


def test_demo_data_reads_a_foreign_layout_as_the_warm_up_does(tmp_path):
    """``demo --data`` went by the file name alone: a RetailRocket-layout CSV stopped at
    "no column for required field(s)". It now reads as ``train`` and ``learner --warm`` do,
    saying how; a file without a valid event is one line."""
    from stream_app.learner.service import warm_events
    from stream_app.ops.demo import DemoOptions, _load_events
    from stream_app.settings import load_settings

    rr = _rr_csv(tmp_path / "rr.csv")
    said: list[str] = []
    events, rejected, source = _load_events(DemoOptions(data=str(rr), events=100), said.append)
    assert (len(events), rejected, source) == (100, 0, f"{rr} (csv)")
    assert events == warm_events(load_settings(learn_warm_path=str(rr)))[:100]
    assert {e.action for e in events} == {"view", "cart"}
    flat = " ".join(" ".join(said).split())
    assert "read as `seqstream inspect` guesses: --format csv --columns" in flat
    assert "--time-unit ms" in flat
    assert all(len(line) <= 80 or len(line.split()) <= 2 for line in "\n".join(said).split("\n"))
    bad = tmp_path / "bad.csv"
    bad.write_text(RR_HEADER + "".join(f"{T0 + i},{i},view,,\n" for i in range(5)))
    said.clear()
    for data, what in ((bad, "no valid event in it as format 'csv' (5 rejected rows; first: "
                             "line 2"), (tmp_path / "absent.csv", "no such file")):
        with pytest.raises(SeqstreamError) as e:
            _load_events(DemoOptions(data=str(data)), said.append)
        assert str(e.value).startswith(f"--data {data}: {what}"), str(e.value)
        assert "\n" not in str(e.value)


def test_the_learner_refuses_what_the_worker_dead_letters():
    from stream_app.worker.processor import read_event_record

    ev = Event("e1", "u1", "i1", "view", T0).to_json()
    assert read_event_record(ev, b"u1", T0, 0).user_id == "u1"
    for key, what in ((None, "no Kafka key"), (b"u2", "is not the event's user_id")):
        with pytest.raises(SchemaError, match=what):
            read_event_record(ev, key, T0, 0)
    with pytest.raises(SchemaError):
        read_event_record(Event("e2", "u1", "i1", "view", T0 + 10**9).to_json(), b"u1", T0,
                          86_400_000)  # 11 days ahead of the clock


def test_broker_log_relay_is_bounded_and_info_is_not_tansus_request_trace(tmp_path, caplog):
    from stream_app.commands.broker import RUST_LEVELS, _LogRelay

    # seqstream's default level must not turn on Tansu's per-field request trace
    assert RUST_LEVELS["INFO"] == "warn" and RUST_LEVELS["WARNING"] == "warn"
    path = tmp_path / "tansu.log"
    path.write_bytes(b"".join(b"line-%07d %s\n" % (i, b"x" * 90) for i in range(50_000)))
    relay = _LogRelay(path, max_bytes=64 << 10)
    caplog.set_level(logging.INFO, logger="seqstream.broker")
    relay.pass_on()
    # only the relay's own lines: a kafka-python client left by another test in this
    # process may log its reconnects into caplog meanwhile (seen in CI)
    lines = [r.getMessage() for r in caplog.records if r.name == "seqstream.broker"]
    assert "skipped" in lines[0] and relay.skipped > 4_000_000
    passed = lines[1:]
    assert 0 < len(passed) <= 64 * 1024 // 100
    assert all(m.startswith("tansu: line-") and m.endswith("x" * 90) for m in passed)
    assert passed[-1].startswith("tansu: line-0049999")  # the newest lines, whole
    caplog.clear()
    with open(path, "ab") as f:
        f.write(b"one more\n")
    relay.pass_on()  # within the bound: nothing skipped, nothing cut
    assert [r.getMessage() for r in caplog.records
            if r.name == "seqstream.broker"] == ["tansu: one more"]


def test_learning_demo_summary_says_what_its_rows_are_within_80_columns(capsys, monkeypatch):
    from stream_app.commands.demo import _print_summary

    monkeypatch.setenv("COLUMNS", "80")
    on = {"hr@20": 0.4446, "ndcg@20": 0.2684, "mrr@20": 0.2145, "new_item_hits": 365}
    frozen = {"hr@20": 0.2240, "ndcg@20": 0.1383, "mrr@20": 0.1119, "new_item_hits": 0}
    _print_summary({
        "events_in": 10_000, "events_per_s": 5539.2, "online": on, "prequential_offline": on,
        "frozen": frozen, "online_equals_offline": True, "online_offline_max_abs_diff": 1.1e-16,
        "scored_online": 9339, "scored_offline": 9339, "versions_published": 20,
        "learn_schedule": {"every": 500},
        "paired_windows_hr@20": {"mean_diff": 0.2206, "ci_low": 0.165, "ci_high": 0.276,
                                 "p_value": 0.0, "n_boot": 200, "windows": 20,
                                 "windows_online_better": 19},
        "learner": {"events_in": 10_000, "events_per_busy_s": 25772.1, "skipped": 0}})
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    for words in ("frozen: that replay without learning", "new-item hits: hits on items born",
                  "HR@20 online - frozen: +0.2206", "p < 0.01", "online better in 19",
                  "9,339 / 9,339 scored", "25,772/s of its own work (stream 5,539/s)"):
        assert words in out, words


def test_demo_live_table_keeps_its_counts_whole_in_80_columns():
    from rich.console import Console

    from stream_app.ops.demo import LiveCounts, _live_table

    live = LiveCounts()
    live.predictions = 10_000
    console = Console(width=80, record=True)
    console.print(_live_table(live, 10_000, 10_000))
    text = console.export_text()
    assert "10,000/10,000" in text and "…" not in text


@pytest.mark.broker
def test_learner_on_the_broker_warms_from_a_csv_and_learns_no_dead_letter(
        stream_settings, tmp_path, markov_checkpoint):
    """The README's learner command with the training log as given to train (a CSV in
    RetailRocket's layout), and records the workers dead-letter: no key, another user's key,
    bad JSON. The learner counts them invalid and learns exactly the 100 good events."""
    from model_core.datasets.synth import generate
    from stream_app.kafka.replay import make_producer, replay_events
    from stream_app.kafka.topics import ensure_topics
    from stream_app.learner.service import build_driver, run_learner

    markov_checkpoint(generate(300, seed=5), tmp_path / "base")
    settings = stream_settings.with_overrides(
        model_path=str(tmp_path / "base"), model_watch_dir=str(tmp_path / "watch"),
        learn_schedule="every=100", learn_warm_path=str(_rr_csv(tmp_path / "rr.csv")))
    assert "7" in build_driver(settings).learner.users  # a shopper of the CSV, as train reads it
    ensure_topics(settings)
    stop = threading.Event()
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(run_learner(settings, stop)), daemon=True)
    th.start()
    good = [Event(f"g{i}", f"s{i % 10}", f"i{i % 7}", "view", T0 + i) for i in range(100)]
    producer = make_producer(settings)
    for key, value in ((None, good[0].to_json()), (b"someone-else", good[1].to_json()),
                       (b"s1", b'{"event_id": "cut", ')):
        producer.send(settings.topic("events"), key=key, value=value)
    producer.flush()
    producer.close()
    replay_events(settings, good, progress=False)
    deadline = time.monotonic() + 40
    while not (tmp_path / "watch" / "LATEST").exists():
        assert time.monotonic() < deadline, "no version published"
        time.sleep(0.05)
    time.sleep(1.5)  # more polls, and a lag measured while idle
    stop.set()
    th.join(15)
    assert out["events_in"] == 100 and out["invalid"] == 3 and out["events_learned"] == 100
    assert out["published"] == 1 and out["lag"] == 0
