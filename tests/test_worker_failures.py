"""A worker that meets failures it cannot fix keeps every event and says why.

- A model whose every call raises: each batch is retried, then its events go to
  dead-letters with the reason and a critical alert is published; the worker stays up and
  goes on with the next batches (before: the agent crashed once, Faust restarted it, nothing
  more was processed, the worker looked healthy and logged nothing).
- The worker's log lines carry a time and the logger, and SEQSTREAM_LOG_LEVEL applies.
"""

from __future__ import annotations

import base64

import orjson
import pytest

from model_core.datasets.synth import generate
from stream_app.kafka.replay import replay_events
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.worker.process import FAILED_BATCH_MARK, WorkerProcess


@pytest.mark.broker
def test_model_that_always_raises_sends_batches_to_dead_letters(stream_settings, tmp_path,
                                                                markov_checkpoint):
    events = generate(300, seed=4)
    markov_checkpoint(events, tmp_path / "m")
    settings = stream_settings.with_overrides(model_path=str(tmp_path / "m"), batch_retries=1,
                                              log_level="INFO")
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log",
                           extra_env={"SEQSTREAM_FAULTS": "model_raise_every=1"})
    with worker:
        worker.wait_ready(90)
        replay_events(settings, events[:150], progress=False)
        dead = read_topic(settings, "dead-letters", expect=150, timeout_s=90)
        assert len(dead) == 150
        # still consuming: the next events are dead-lettered too, nothing stalls
        replay_events(settings, events[150:], progress=False)
        dead = read_topic(settings, "dead-letters", expect=300, timeout_s=90)
        assert worker.alive()
    assert len(dead) == 300
    first = orjson.loads(dead[0].value)
    assert "failed on the batch" in first["reason"] and "injected" in first["reason"]
    sent = {e.event_id for e in events}
    got = {orjson.loads(base64.b64decode(orjson.loads(m.value)["original_b64"]))["event_id"]
           for m in dead}
    assert got == sent  # every event kept, with its original bytes
    assert not read_topic(settings, "predictions", idle_s=1.0)
    alerts = [orjson.loads(m.value) for m in read_topic(settings, "alerts", idle_s=1.0)]
    assert any(a["metric"] == "model_failure" and a["severity"] == "critical" for a in alerts)
    log = worker.log_text()
    assert FAILED_BATCH_MARK in log
    assert "seqstream worker starting: broker" in log  # one start line, with the broker
    assert "seqstream worker stopped" in log  # and one stop line with the counts
    # timestamped lines naming their logger
    assert any(line[:4].isdigit() and " ERROR seqstream.worker: " in line
               for line in log.splitlines())


@pytest.mark.broker
def test_log_level_applies(stream_settings, tmp_path, markov_checkpoint):
    events = generate(50, seed=5)
    markov_checkpoint(events, tmp_path / "m")
    settings = stream_settings.with_overrides(model_path=str(tmp_path / "m"),
                                              log_level="WARNING")
    ensure_topics(settings)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready(90)
    assert "seqstream worker starting" not in worker.log_text()  # an INFO line
