"""Broker loss: the worker reports itself not ready while the broker is gone, and after
SEQSTREAM_BROKER_LOST_EXIT_S exits non-zero with one line naming the broker (before: it
never gave up, answered healthy, and logged ~110 lines a second)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson
import pytest

from model_core.checkpoint import save_model
from model_core.datasets.synth import generate
from model_core.models import create_model
from model_core.sequences import build_vocab, group_by_user
from stream_app.kafka.broker import EmbeddedBroker, free_port
from stream_app.kafka.topics import ensure_topics
from stream_app.settings import load_settings
from stream_app.worker.process import WorkerProcess


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


@pytest.mark.broker
def test_broker_loss_makes_the_worker_unready_then_exit(tmp_path):
    events = generate(200, seed=6)
    vocab = build_vocab(events)
    model = create_model("markov", vocab)
    model.fit(group_by_user(events, vocab))
    save_model(model, tmp_path / "m")
    web = free_port("127.0.0.1")
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    try:
        settings = load_settings(
            broker_url=broker.url, topic_prefix="loss.", app_id="loss", web_port=web,
            data_dir=str(tmp_path / "data"), model_path=str(tmp_path / "m"),
            session_timeout_s=6.0, heartbeat_interval_s=0.5, broker_lost_exit_s=8.0)
        ensure_topics(settings)
        worker = WorkerProcess(settings, tmp_path / "worker.log").start()
        worker.wait_ready(90)
        url = f"http://127.0.0.1:{web}/v1/ready"
        deadline = time.monotonic() + 20
        while _get(url)[0] != 200:
            assert time.monotonic() < deadline, worker.log_text()[-2000:]
            time.sleep(0.3)
        assert _get(f"http://127.0.0.1:{web}/v1/live")[0] == 200
        broker.stop()
        t0 = time.monotonic()
        status, body = _get(url)
        while status == 200:
            assert time.monotonic() - t0 < 15, "still ready 15 s after the broker stopped"
            time.sleep(0.3)
            status, body = _get(url)
        assert status == 503 and any("unreachable" in r for r in body["reasons"]), body
        worker.proc.wait(60)
        assert worker.proc.returncode == 69
        log = worker.log_text()
        assert f"broker {settings.broker_url} unreachable for" in log
        assert len(log.splitlines()) < 300, "the log is flooded"
    finally:
        broker.stop()
        worker.kill()


def test_log_keeper_notices_an_end_offset_that_went_back():
    """A broker restarted with memory storage answers again, empty: the end offsets of the
    events topic go back, which a broker that keeps its log never does."""
    from stream_app.kafka.end_offsets import LogKeeper

    keeper = LogKeeper()
    assert keeper.check({"p0": 100, "p1": 80, "p2": None}) == []
    assert keeper.check({"p0": 150, "p1": 80}) == []  # grown or the same: kept
    assert keeper.check({"p0": 3, "p1": 90}) == [("p0", 150, 3)]
    assert keeper.check({"p0": 120}) == [("p0", 150, 120)]  # still below the highest seen
