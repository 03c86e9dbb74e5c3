"""Per-user state expiry after a time without events (event time): the index that decides,
and a worker that tombstones expired states so recovery does not bring them back."""

from __future__ import annotations

import time

import pytest

from model_core.datasets.synth import generate
from schemas.event import Event
from stream_app.kafka.replay import replay_events
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.ops.chaos import read_changelog_states
from stream_app.worker.process import WorkerProcess
from stream_app.worker.retention import RetentionIndex


def test_index_expires_by_event_time_per_partition():
    idx = RetentionIndex(1000, sweep_every_s=60, clock=lambda: 0.0)
    idx.touch(0, b"a", 5_000)
    idx.touch(0, b"b", 8_500)
    idx.touch(1, b"c", 5_000)
    assert idx.expired(9_000, [0, 1], lambda p, k: None) == {0: [b"a"], 1: [b"c"]}
    assert idx.parts == {0: {b"b": 8_500}, 1: {}}
    # only the partitions asked for (the others are not this worker's now)
    idx.touch(2, b"d", 1)
    assert idx.expired(9_000, [0], lambda p, k: None) == {}
    assert b"d" in idx.parts[2]
    assert idx.expired_total == 2


def test_keys_learnt_from_the_changelog_read_their_time_once():
    idx = RetentionIndex(1000, clock=lambda: 0.0)
    reads = []

    def last(p, k):
        reads.append(k)
        return {b"old": 100, b"new": 9_900}.get(k)

    for k in (b"old", b"new", b"gone"):
        idx.learn(3, k, True)
    idx.learn(3, b"erased", True)
    idx.learn(3, b"erased", False)  # a tombstone after it
    assert idx.expired(10_000, [3], last) == {3: [b"old"]}
    assert sorted(reads) == [b"gone", b"new", b"old"]
    assert idx.expired(10_000, [3], last) == {} and len(reads) == 3  # "new" is known now
    assert idx.parts[3] == {b"new": 9_900}


def test_sweeps_are_spaced():
    now = [0.0]
    idx = RetentionIndex(1000, sweep_every_s=10, clock=lambda: now[0])
    assert not idx.due()
    now[0] = 10.0
    assert idx.due() and not idx.due()
    with pytest.raises(ValueError):
        RetentionIndex(0)


@pytest.mark.broker
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_worker_expires_inactive_users_and_recovery_keeps_them_gone(stream_settings, tmp_path,
                                                                   markov_checkpoint, store):
    events = generate(400, seed=21)
    model_dir = tmp_path / "model"
    markov_checkpoint(events, model_dir)
    settings = stream_settings.with_overrides(model_path=str(model_dir), state_retention_s=3600,
                                              state_retention_sweep_s=0.2, store=store)
    ensure_topics(settings)
    last = max(e.timestamp_ms for e in events)
    users = sorted({e.user_id for e in events})
    # two hours of event time later, one user comes back: every other user is over the limit
    back = Event("back-1", users[0], events[0].item_id, "view", last + 2 * 3600 * 1000)
    with WorkerProcess(settings, tmp_path / "w1.log") as worker:
        worker.wait_ready(90)
        replay_events(settings, events, progress=False)
        deadline = time.monotonic() + 60
        while len(read_topic(settings, "predictions", idle_s=1.0)) < len(events):
            assert time.monotonic() < deadline
        assert set(read_changelog_states(settings, timeout_s=30.0)) == set(users)
        replay_events(settings, [back], progress=False)
        deadline = time.monotonic() + 60
        while "user states expired" not in worker.log_text():
            assert time.monotonic() < deadline, worker.log_text()[-2000:]
            time.sleep(0.3)
        replay_events(settings, [Event("back-2", users[0], events[0].item_id, "view",
                                       back.timestamp_ms + 1000)], progress=False)
        time.sleep(2.0)
    held = read_changelog_states(settings, timeout_s=30.0)
    assert set(held) == {users[0]}
    # after a restart (recovery from the changelog; rocksdb:// keeps its local store after a
    # clean stop) the expired users stay gone, and the restarted worker knows the held key
    with WorkerProcess(settings, tmp_path / "w2.log") as worker:
        worker.wait_ready(90)
        # a new user 5 hours later: users[0], learnt from recovery or the local store, expires
        replay_events(settings, [Event("late-1", "newcomer", events[0].item_id, "view",
                                       back.timestamp_ms + 5 * 3600 * 1000)], progress=False)
        deadline = time.monotonic() + 60
        while "1 user states expired" not in worker.log_text():
            assert time.monotonic() < deadline, worker.log_text()[-2000:]
            time.sleep(0.3)
    held = read_changelog_states(settings, timeout_s=30.0)
    assert set(held) == {"newcomer"}
