"""On the broker: a new item appears in the stream, the learner (its own consumer group)
publishes a version holding it, the worker swaps to it without a restart and recommends it;
every prediction names the version that made it."""

from __future__ import annotations

import collections
import time

import orjson
import pytest

from model_core.datasets.synth import generate
from schemas.event import Event
from stream_app.kafka.replay import replay_events
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.learner.service import LearnerProcess
from stream_app.worker.model_swap import SWAP_MARK
from stream_app.worker.process import WorkerProcess


def _ev(n: int, user: str, item: str, t: int) -> Event:
    return Event(f"new-{n}", user, item, "view", t)


@pytest.mark.broker
def test_a_new_item_is_recommended_within_the_next_version(stream_settings, tmp_path,
                                                           markov_checkpoint):
    train = generate(800, seed=8)
    base = markov_checkpoint(train, tmp_path / "base")
    hub = collections.Counter(e.item_id for e in train).most_common(1)[0][0]
    settings = stream_settings.with_overrides(
        model_path=str(tmp_path / "base"), model_watch_dir=str(tmp_path / "watch"),
        model_poll_s=0.2, learn_schedule="every=100", batch_wait_ms=20)
    ensure_topics(settings)
    t0 = train[-1].timestamp_ms + 1000
    # 50 new shoppers view the hub, then an item nobody has seen: 100 events, one update
    born = [e for u in range(50) for e in (_ev(2 * u, f"n{u}", hub, t0 + 10 * u),
                                           _ev(2 * u + 1, f"n{u}", "fresh-1", t0 + 10 * u + 5))]
    later = [_ev(1000 + u, f"m{u}", hub, t0 + 10_000 + u) for u in range(10)]
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    learner = LearnerProcess(settings, tmp_path / "learner.log").start()
    try:
        worker.wait_ready(90)
        learner.wait_ready(60)
        replay_events(settings, born, progress=False)
        version = f"{base.version}+u1"
        deadline = time.monotonic() + 30
        while f"{SWAP_MARK} to {version}" not in worker.log_text():
            assert time.monotonic() < deadline, (learner.log_text()[-2000:],
                                                 worker.log_text()[-2000:])
            time.sleep(0.1)
        replay_events(settings, later, progress=False)
        preds = read_topic(settings, "predictions", expect=len(born) + len(later), timeout_s=30)
    finally:
        learner.stop()
        worker.stop()
    assert learner.published() == [version]
    stats = learner.final_stats()
    assert stats["events_learned"] == 100 and stats["items"] == base.vocab.n_items + 1
    got = {p["event_id"]: p for p in (orjson.loads(m.value) for m in preds)}
    assert set(got) == {e.event_id for e in born + later}
    # the worker may already have swapped for the last of them
    assert {got[e.event_id]["model_version"] for e in born} <= {base.version, version}
    assert not any("fresh-1" in p["items"] for p in got.values()
                   if p["model_version"] == base.version)
    for e in later:  # the version holding the new item recommends it after the hub
        assert got[e.event_id]["model_version"] == version
        assert got[e.event_id]["items"][0] == "fresh-1"
