"""Model swaps through the control topic: signed records only, checkpoints only from the
model root, verified before they serve, never re-applied after a restart."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from model_core.datasets.synth import generate
from model_core.exceptions import CheckpointError
from model_core.models import create_model
from model_core.sequences import build_vocab, group_by_user
from model_core.verify import verify_model
from stream_app.kafka.replay import make_producer
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.worker.model_swap import (
    SWAP_MARK,
    check_control,
    inside_root,
    send_load_model,
    sign_control,
)
from stream_app.worker.process import WorkerProcess

KEY = b"0123456789abcdef0123456789abcdef"


def _signed(path: str, issued: int, key: bytes = KEY) -> dict:
    return {"command": "load_model", "path": path, "issued_at_ms": issued,
            "hmac": sign_control(key, "load_model", path, issued)}


def test_check_control_accepts_only_signed_fresh_records():
    now = 1_000_000
    assert check_control(_signed("/m/v2", now - 1000), KEY, 0, now, 300) is None
    unsigned = {"command": "load_model", "path": "/m/v2", "issued_at_ms": now}
    assert "HMAC" in check_control(unsigned, KEY, 0, now, 300)
    assert "HMAC" in check_control(_signed("/m/v2", now, b"x" * 32), KEY, 0, now, 300)
    tampered = _signed("/m/v2", now)
    tampered["path"] = "/m/evil"
    assert "HMAC" in check_control(tampered, KEY, 0, now, 300)
    assert "newer" in check_control(_signed("/m/v2", now), KEY, now, now, 300)
    assert "ago" in check_control(_signed("/m/v2", now - 301_000), KEY, 0, now, 300)
    assert check_control({"command": "rm -rf"}, KEY, 0, now, 300) is not None


def test_inside_root_resolves_links_and_dots(tmp_path):
    root = tmp_path / "models"
    (root / "v1").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert inside_root(root / "v1", root)
    assert not inside_root(root / ".." / "elsewhere", root)
    assert not inside_root(root / "link", root)  # a link out of the root
    assert not inside_root(root / "v1", None)


def test_verify_model_rejects_a_model_that_fails_its_trial_batch():
    events = generate(800, seed=3)
    vocab = build_vocab(events)
    model = create_model("markov", vocab)
    model.fit(group_by_user(events, vocab))
    verify_model(model, 10)

    class Broken:
        name, version, vocab = "broken", "b1", model.vocab

        def predict_topk(self, batch, k, exclude_history=False):
            raise IndexError("index 9999 is out of bounds")

    with pytest.raises(CheckpointError, match="trial batch"):
        verify_model(Broken(), 10)

    class NaNs(Broken):
        def predict_topk(self, batch, k, exclude_history=False):
            top = model.predict_topk(batch, k)
            top.scores = np.full_like(top.scores, np.nan)
            return top

    with pytest.raises(CheckpointError, match="not finite"):
        verify_model(NaNs(), 10)


@pytest.mark.broker
def test_control_records_are_verified_and_not_replayed(stream_settings, tmp_path,
                                                      markov_checkpoint):
    events = generate(1500, seed=8)
    root = tmp_path / "models"
    v1 = markov_checkpoint(events[:500], root / "v1")
    v2 = markov_checkpoint(events[:1000], root / "v2")
    planted = markov_checkpoint(events[500:], tmp_path / "planted")  # outside the model root
    key = tmp_path / "control.key"
    key.write_bytes(KEY)
    settings = stream_settings.with_overrides(model_path=str(root / "v1"), model_poll_s=0.3,
                                              model_root=str(root),
                                              control_key_file=str(key))
    ensure_topics(settings)

    def wait_log(worker, text, timeout_s=30.0):
        deadline = time.monotonic() + timeout_s
        while text not in worker.log_text():
            assert time.monotonic() < deadline, worker.log_text()[-3000:]
            time.sleep(0.2)

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    with worker:
        worker.wait_ready(90)
        time.sleep(1.0)  # the control consumer positions at the end on the first poll
        producer = make_producer(settings)
        # anyone who can write the topic: an unsigned record naming a model in the root
        producer.send(settings.topic("control"), key=b"model", value=orjson.dumps(
            {"command": "load_model", "path": str(root / "v2"),
             "issued_at_ms": int(time.time() * 1000)}))
        producer.flush()
        producer.close()
        wait_log(worker, "HMAC does not verify")
        # signed, but outside the model root
        send_load_model(settings, tmp_path / "planted")
        wait_log(worker, "is not inside SEQSTREAM_MODEL_ROOT")
        # signed and inside: applied
        send_load_model(settings, root / "v2")
        wait_log(worker, f"{SWAP_MARK} to {v2.version}")
        log = worker.log_text()
        assert f"{SWAP_MARK} to {planted.version}" not in log
        assert log.count(SWAP_MARK) == 1
    alerts = [orjson.loads(m.value) for m in read_topic(settings, "alerts", idle_s=2.0)]
    refused = [a for a in alerts if a["metric"] == "model_swap"]
    assert len(refused) == 2 and all(a["severity"] == "critical" for a in refused)

    # a restart starts from SEQSTREAM_MODEL_PATH: the old record is never applied again
    restarted = WorkerProcess(settings, tmp_path / "worker2.log")
    with restarted:
        restarted.wait_ready(90)
        time.sleep(8 * settings.model_poll_s + 1.0)
        log = restarted.log_text()
        assert f"model={v1.version}" in log and SWAP_MARK not in log
