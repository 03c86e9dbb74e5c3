"""Hot model swap: a new checkpoint is picked up between batches, no prediction is dropped
or duplicated, each names its model_version, and user state follows the new vocabulary."""

from __future__ import annotations

import collections
import time
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from model_core.checkpoint import save_model
from model_core.datasets.synth import generate
from model_core.models import create_model
from model_core.sequence_state import UserState
from model_core.sequences import group_by_user
from model_core.vocab import ItemVocab
from stream_app.kafka.replay import replay_events
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.worker.model_swap import (
    SWAP_MARK,
    ModelSwapper,
    publish_checkpoint,
    send_load_model,
    vocab_tag,
)
from stream_app.worker.process import WorkerProcess


def test_state_is_remapped_to_the_new_vocabulary():
    old, new = ItemVocab(["a", "b", "c"]), ItemVocab(["c", "x", "a"])
    processor = SimpleNamespace(model=SimpleNamespace(vocab=old))
    sw = ModelSwapper(SimpleNamespace(model_path=None), processor)
    st = UserState(items=np.array([1, 2, 3], dtype=np.int32),
                   last_pred_items=np.array([3, 1], dtype=np.int32), last_pred_action=0,
                   vocab_tag=vocab_tag(old))
    sw.switch_vocab(new)
    out = sw.adapt(st)
    assert [new.item_id(i) if i else None for i in out.items] == ["a", None, "c"]
    assert out.last_pred_items.tolist() == [new.index("c"), new.index("a")]
    assert out.vocab_tag == vocab_tag(new) and sw.stats.remapped == 1
    # a tag this worker never loaded: the sequence is reset (ids kept), not mis-read
    stray = UserState(items=np.array([1, 2], dtype=np.int32), hashes=np.array([7, 8], dtype=np.uint32),
                      last_pred_items=np.array([1], dtype=np.int32), last_pred_action=2,
                      vocab_tag=12345)
    out = sw.adapt(stray)
    assert out.items.tolist() == [0, 0] and out.hashes.tolist() == [7, 8]
    assert out.last_pred_action == -1 and len(out.last_pred_items) == 0
    assert sw.stats.reset == 1


@pytest.mark.broker
def test_swap_mid_replay(stream_settings, tmp_path, markov_checkpoint):
    events = generate(4000, seed=21)
    v1 = markov_checkpoint(events[:1000], tmp_path / "v1")
    v2 = markov_checkpoint(events[:3000], tmp_path / "v2")  # another vocabulary: states are remapped
    assert v1.version != v2.version
    watch = tmp_path / "watch"
    key = tmp_path / "control.key"
    key.write_bytes(b"k" * 32)
    settings = stream_settings.with_overrides(model_path=str(tmp_path / "v1"),
                                              model_watch_dir=str(watch), model_poll_s=0.3,
                                              model_root=str(tmp_path),
                                              control_key_file=str(key))
    ensure_topics(settings)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready(90)
        half = len(events) // 2
        replay_events(settings, events[:half], progress=False)
        # mid-stream: once v1 has answered the first half (a fresh worker's first fetch can
        # take a second: a model published at once could be in place before any event came);
        # the second half is sent once the worker has switched
        read_topic(settings, "predictions", expect=half, timeout_s=60)
        publish_checkpoint(tmp_path / "v2", watch)
        deadline = time.monotonic() + 30
        while f"{SWAP_MARK} to {v2.version}" not in worker.log_text():
            assert time.monotonic() < deadline, worker.log_text()[-2000:]
            time.sleep(0.2)
        replay_events(settings, events[half:], progress=False)
        preds = read_topic(settings, "predictions", expect=len(events), timeout_s=120)
        # the control topic reaches the worker too
        pop = create_model("popular", v2.vocab)
        pop.fit(group_by_user(events[:3000], v2.vocab))
        save_model(pop, tmp_path / "v3")
        send_load_model(settings, tmp_path / "v3")
        deadline = time.monotonic() + 30
        while f"{SWAP_MARK} to {pop.version}" not in worker.log_text():
            assert time.monotonic() < deadline, worker.log_text()[-2000:]
            time.sleep(0.3)

    got = [(m.partition, m.offset, orjson.loads(m.value)) for m in preds]
    ids = collections.Counter(p["event_id"] for _, _, p in got)
    assert len(ids) == len(events) and max(ids.values()) == 1  # none dropped, none twice
    versions = {p["model_version"] for _, _, p in got}
    assert versions == {v1.version, v2.version}
    # per output partition (= per user), v1 then v2, never back
    by_part = collections.defaultdict(list)
    for part, _off, p in sorted(got, key=lambda t: (t[0], t[1])):
        by_part[part].append(p["model_version"])
    for seq in by_part.values():
        switched = seq.index(v2.version) if v2.version in seq else len(seq)
        assert all(v == v1.version for v in seq[:switched])
        assert all(v == v2.version for v in seq[switched:])
