"""``seqstream tail TOPIC`` on the real embedded broker, and ``replay --speed``'s estimate."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import orjson
import pytest

from stream_app.cli import main
from stream_app.kafka.replay import make_producer
from stream_app.kafka.topics import ensure_topics

pytestmark = [pytest.mark.broker]


def _kafka_args(s) -> list[str]:
    return ["--broker-url", s.broker_url, "--topic-prefix", s.topic_prefix]


def _produce(settings, n: int, t0: int = 1_700_000_000_000) -> list[dict]:
    """n records on the events topic, spread over partitions, with rising timestamps."""
    ensure_topics(settings, ("events",))
    producer = make_producer(settings)
    sent = []
    for i in range(n):
        value = {"i": i, "user_id": f"u{i % 7}"}
        producer.send(settings.topic("events"), key=f"u{i % 7}".encode(),
                      value=orjson.dumps(value), timestamp_ms=t0 + i * 1000)
        sent.append(value)
    producer.flush()
    producer.close()
    return sent


def _lines(text: str) -> list[dict]:
    return [orjson.loads(ln) for ln in text.splitlines() if ln.strip()]


def test_tail_prints_the_last_records_then_from_the_beginning(stream_settings, capsys):
    _produce(stream_settings, 20)
    assert main(["tail", "events", "-n", "3", *_kafka_args(stream_settings)]) == 0
    last = _lines(capsys.readouterr().out)
    assert [r["value"]["i"] for r in last] == [17, 18, 19]  # the newest three, in time order
    for r in last:
        assert r["key"] == r["value"]["user_id"]
        assert set(r) == {"partition", "offset", "timestamp_ms", "key", "value"}
        assert r["timestamp_ms"] == 1_700_000_000_000 + r["value"]["i"] * 1000

    full_name = stream_settings.topic("events")  # a prefixed name is taken as it is
    assert main(["tail", full_name, "--from-beginning", *_kafka_args(stream_settings)]) == 0
    every = _lines(capsys.readouterr().out)
    assert sorted(r["value"]["i"] for r in every) == list(range(20))
    assert main(["tail", "events", "--from-beginning", "-n", "5",
                 *_kafka_args(stream_settings)]) == 0
    assert len(_lines(capsys.readouterr().out)) == 5


def test_tail_of_an_unknown_topic_is_one_line_and_creates_nothing(stream_settings, capsys):
    from kafka import KafkaConsumer

    assert main(["tail", "no-such", *_kafka_args(stream_settings)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"seqstream tail: error: no topic {stream_settings.topic_prefix}"
                             "no-such or no-such on ")
    c = KafkaConsumer(bootstrap_servers=stream_settings.bootstrap_servers)
    try:
        assert not c.partitions_for_topic(stream_settings.topic_prefix + "no-such")
    finally:
        c.close()


def test_tail_follow_prints_records_published_after_it_started(stream_settings):
    _produce(stream_settings, 2)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "tail", "events", "-n", "0",
                             "--follow", *_kafka_args(stream_settings)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            _produce(stream_settings, 1, t0=1_800_000_000_000)  # i = 0, newer timestamp
            time.sleep(1.0)
        assert got, proc.stderr.read() if proc.poll() is not None else "no line within 30 s"
    finally:
        proc.terminate()
        proc.wait(10)
    first = orjson.loads(got[0])
    assert first["timestamp_ms"] == 1_800_000_000_000  # not one of the two older records


def test_replay_with_speed_prints_its_estimated_duration_first(stream_settings, tmp_path,
                                                               capsys, monkeypatch):
    log = tmp_path / "three.jsonl"
    log.write_bytes(b"".join(orjson.dumps(
        {"event_id": f"e{k}", "user_id": "u1", "item_id": f"i{k}", "action": "view",
         "timestamp_ms": ts}) + b"\n"
        for k, ts in enumerate((1_700_000_000_000, 1_700_000_100_000, 1_700_000_200_000))))
    monkeypatch.setenv("SEQSTREAM_DATA_DIR", str(tmp_path / "data"))  # replay's ledger
    rc = main(["replay", str(log), "--format", "jsonl", "--speed", "100", "--no-progress",
               *_kafka_args(stream_settings)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0] == ("replaying 3 events at 100x real time: about 2.0 s "
                      "(their event times span 3 min 20 s)")
    assert out[1].startswith("sent 3 events")


def test_duration_reads_like_a_person_would_say_it():
    from stream_app.commands.replay import duration

    assert duration(2.04) == "2.0 s"
    assert duration(45) == "45 s"
    assert duration(725) == "12 min 5 s"
    assert duration(3 * 3600 + 20 * 60) == "3 h 20 min"
    assert duration(52 * 3600) == "2 d 4 h"
