"""Scale-out: two workers in one group share a 4-partition topic; one is killed, the other
takes over its partitions with their state, and nothing is lost."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from model_core.datasets.synth import generate
from stream_app.kafka.replay import replay_events
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.ops.chaos import (
    _event_id_of,
    _train_markov,
    read_changelog_states,
    reference_states,
)
from stream_app.worker.process import WorkerProcess

pytestmark = [pytest.mark.broker]

_READY = re.compile(r"seqstream worker ready partitions=\[([0-9, ]*)\]")


def _last_assignment(worker: WorkerProcess) -> list[int]:
    found = _READY.findall(worker.log_text())
    return [int(x) for x in found[-1].split(",") if x.strip()] if found else []


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _predicted_ids(settings, n: int) -> set[str]:
    return {_event_id_of(m.value) for m in read_topic(settings, "predictions", idle_s=1.0,
                                                      timeout_s=30)}


def test_two_workers_one_killed(stream_settings, tmp_path):
    events = generate(4000, seed=11)
    model = _train_markov(events, tmp_path / "model")
    # rocksdb:// (each worker its own data dir): covers the persistent store's partition
    # handling on takeover; test_chaos covers memory:// across a crash.
    settings = stream_settings.with_overrides(model_path=str(tmp_path / "model"), partitions=4,
                                              store="rocksdb://")
    ensure_topics(settings)
    a = WorkerProcess(settings.with_overrides(data_dir=str(tmp_path / "a")), tmp_path / "a.log",
                      name="worker-a")
    b = WorkerProcess(settings.with_overrides(data_dir=str(tmp_path / "b")), tmp_path / "b.log",
                      name="worker-b")
    try:
        a.start()
        a.wait_ready(90)
        b.start()
        b.wait_ready(90)
        # both share the four partitions
        _wait(lambda: len(_last_assignment(a)) in (1, 2, 3) and _last_assignment(b)
              and set(_last_assignment(a)) | set(_last_assignment(b)) == {0, 1, 2, 3}
              and not set(_last_assignment(a)) & set(_last_assignment(b)),
              60, "the two workers to split the partitions")
        owned_by_b = _last_assignment(b)

        half = len(events) // 2
        replay_events(settings, events[:half], progress=False)
        first = {e.event_id for e in events[:half]}
        _wait(lambda: first <= _predicted_ids(settings, half), 90, "first-half predictions")

        b.kill()  # crash: no clean leave, the group notices after the session timeout
        replay_events(settings, events[half:], progress=False)
        _wait(lambda: _last_assignment(a) == [0, 1, 2, 3], 90,
              "the surviving worker to take all partitions")
        every = {e.event_id for e in events}
        _wait(lambda: every <= _predicted_ids(settings, len(events)), 120, "all predictions")
        a.stop(30)
    finally:
        b.kill()
        a.kill()

    assert owned_by_b  # the killed worker really owned partitions
    # sequences continue across the takeover: final state == crash-free offline reference
    ref, _ = reference_states(model, events, settings)
    got = read_changelog_states(settings)
    assert set(got) == set(ref)
    bad = [u for u in ref if not (np.array_equal(got[u].items, ref[u].items)
                                  and np.array_equal(got[u].hashes, ref[u].hashes))]
    assert not bad, bad[:5]
    # the log a user reads: our lines, not Faust's service life cycle or a terminal escape
    text = a.log_text()
    assert "seqstream worker stopped" in text
    assert "\x1b" not in text and "[^-FaustApp]" not in text
