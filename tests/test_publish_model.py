"""``seqstream publish-model``: into the watched directory, or signed on the control topic.
(The control way end to end, with a worker swapping its model, is tests/test_control.py.)"""

from __future__ import annotations

import time

import orjson
import pytest

from model_core.checkpoint import read_meta
from stream_app.cli import main
from stream_app.kafka.topics import read_topic
from stream_app.worker.model_swap import check_control

KEY = b"0123456789abcdef0123456789abcdef"


def test_publish_into_the_watched_dir(clean_env, markov_dir, tmp_path, capsys):
    watch = tmp_path / "watch"
    assert main(["publish-model", str(markov_dir), "--watch-dir", str(watch)]) == 0
    version = read_meta(markov_dir)["model_version"]
    assert (watch / "LATEST").read_text().strip() == version
    assert read_meta(watch / version)["model_version"] == version
    assert f"published model {version}" in capsys.readouterr().out
    # the setting is the default place
    clean_env.setenv("SEQSTREAM_MODEL_WATCH_DIR", str(tmp_path / "watch2"))
    assert main(["publish-model", str(markov_dir)]) == 0
    assert (tmp_path / "watch2" / "LATEST").read_text().strip() == version


@pytest.mark.parametrize("env, args, message", [
    ({}, [], "say where the workers look: --watch-dir DIR (or SEQSTREAM_MODEL_WATCH_DIR), or "
             "--control for the control topic"),
    ({}, ["--control"], "--control signs its record: set SEQSTREAM_CONTROL_KEY_FILE"),
    ({"SEQSTREAM_CONTROL_KEY_FILE": "KEY"}, ["--control"],
     "--control needs SEQSTREAM_MODEL_ROOT"),
    ({"SEQSTREAM_CONTROL_KEY_FILE": "KEY", "SEQSTREAM_MODEL_ROOT": "ELSEWHERE"}, ["--control"],
     "is not inside SEQSTREAM_MODEL_ROOT"),
    ({"SEQSTREAM_CONTROL_KEY_FILE": "SHORT", "SEQSTREAM_MODEL_ROOT": "ROOT"}, ["--control"],
     "the key must be at least 16 bytes"),
])
def test_what_is_missing_is_said_in_one_line(clean_env, markov_dir, tmp_path, capsys, env,
                                             args, message):
    (tmp_path / "key").write_bytes(KEY)
    (tmp_path / "short").write_bytes(b"abc")
    (tmp_path / "elsewhere").mkdir()
    places = {"KEY": tmp_path / "key", "SHORT": tmp_path / "short",
              "ELSEWHERE": tmp_path / "elsewhere", "ROOT": markov_dir.parent}
    for k, v in env.items():
        clean_env.setenv(k, str(places[v]))
    # a broker that is not there: every refusal comes before any connection
    assert main(["publish-model", str(markov_dir), *args,
                 "--broker-url", "kafka://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seqstream publish-model: error: ")
    assert message in err[0]


def test_a_directory_that_is_no_checkpoint_is_refused(clean_env, tmp_path, capsys):
    assert main(["publish-model", str(tmp_path / "nope"), "--watch-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"seqstream publish-model: error: {tmp_path / 'nope'}: no such checkpoint directory")
    assert not (tmp_path / "LATEST").exists()


@pytest.mark.broker
def test_control_sends_a_record_the_workers_key_verifies(clean_env, stream_settings,
                                                        markov_dir, tmp_path, capsys):
    key = tmp_path / "control.key"
    key.write_bytes(KEY)
    clean_env.setenv("SEQSTREAM_CONTROL_KEY_FILE", str(key))
    clean_env.setenv("SEQSTREAM_MODEL_ROOT", str(markov_dir.parent))
    before = int(time.time() * 1000)
    assert main(["publish-model", str(markov_dir), "--control",
                 "--broker-url", stream_settings.broker_url,
                 "--topic-prefix", stream_settings.topic_prefix]) == 0
    assert "sent a signed load_model record" in capsys.readouterr().out
    (msg,) = read_topic(stream_settings, "control", expect=1, timeout_s=30)
    record = orjson.loads(msg.value)
    assert record["path"] == str(markov_dir)
    now = int(time.time() * 1000)
    assert before <= record["issued_at_ms"] <= now
    assert check_control(record, KEY, 0, now, 300) is None  # what a worker checks
    assert check_control(record, b"another key of 32 bytes.........", 0, now, 300)
