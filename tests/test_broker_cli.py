"""The embedded broker and the replay command against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from schemas import DeadLetter
from stream_app.cli import main
from stream_app.kafka.broker import EmbeddedBroker, free_port, wait_for_port
from stream_app.kafka.topics import read_topic

pytestmark = [pytest.mark.broker]


def test_embedded_broker_starts_and_stops(tmp_path):
    b = EmbeddedBroker().start()
    log = b.log_path
    try:
        assert b.alive()
        assert wait_for_port(b.host, b.port, 1.0)
        assert log is not None and log.exists()
    finally:
        b.stop()
    assert not b.alive()
    assert not wait_for_port(b.host, b.port, 0.5)
    assert not log.exists()  # its temporary log goes with it (they piled up in /tmp)
    kept = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    kept.stop()
    assert (tmp_path / "broker.log").exists()  # a log asked for is kept


def test_broker_command_stops_cleanly_on_ctrl_c():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "broker", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert wait_for_port("127.0.0.1", port, 20.0)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "broker ready" in out and "broker stopped" in out
    assert not wait_for_port("127.0.0.1", port, 0.5)


def test_replay_taobao_reports_the_truncated_line(stream_settings, shared_data, capsys,
                                                  monkeypatch):
    path = shared_data / "taobao_userbehavior_head" / "UserBehavior.csv"
    monkeypatch.setenv("SEQSTREAM_DATA_DIR", stream_settings.data_dir)  # replay's ledger
    rc = main(["replay", str(path), "--format", "taobao", "--limit", "3000", "--no-progress",
               "--broker-url", stream_settings.broker_url,
               "--topic-prefix", stream_settings.topic_prefix])
    out = capsys.readouterr().out
    assert rc == 0
    assert "sent 3000 events, rejected 1 lines" in out
    msgs = read_topic(stream_settings, "events", expect=3000, timeout_s=60)
    assert len(msgs) == 3000
    stamps = [int(m.value.split(b'"timestamp_ms":')[1].split(b",")[0].rstrip(b"}"))
              for m in sorted(msgs, key=lambda m: (m.partition, m.offset))]
    by_part: dict[int, list[int]] = {}
    for m, ts in zip(sorted(msgs, key=lambda m: (m.partition, m.offset)), stamps, strict=True):
        by_part.setdefault(m.partition, []).append(ts)
        assert m.key is not None
    for seq in by_part.values():  # event-time order within each partition
        assert seq == sorted(seq)
    dead = [DeadLetter.from_json(m.value) for m in read_topic(stream_settings, "dead-letters",
                                                             expect=1, timeout_s=30)]
    assert len(dead) == 1 and dead[0].source == "replay"
    assert dead[0].offset == 84476  # 84,475 newlines: the cut-off record is line 84,476
    assert dead[0].original.endswith(b",pv")
