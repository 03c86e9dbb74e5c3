"""Bad usage ends in one clear line, fast (issue 13): a broker that is not there, a port in
use, bad security settings, invalid or unknown SEQSTREAM_* variables."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import orjson
import pytest

from stream_app.cli import main
from stream_app.kafka.broker import free_port, wait_for_port
from stream_app.settings import (
    ENV_PREFIX,
    SettingsError,
    environment_problems,
    expected,
    load_settings,
    unknown_env_names,
)


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _cli(args: list[str], env: dict[str, str] | None = None, timeout_s: float = 60.0):
    """Run ``seqstream ARGS`` as a user would: (exit code, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "stream_app.cli", *args], capture_output=True,
                       text=True, env=_clean_env(env), timeout=timeout_s)
    return r.returncode, r.stdout, r.stderr, time.monotonic() - t0


# --------------------------------------------------------------------------- no broker
def test_every_kafka_command_says_in_one_line_within_10_s_that_no_broker_is_there(
        tmp_path, markov_dir):
    port = free_port()  # nothing listens here
    url = f"kafka://127.0.0.1:{port}"
    log = tmp_path / "one.jsonl"
    log.write_text('{"user_id":"u1","item_id":"i1","action":"view","timestamp_ms":1000}\n')
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    control_env = {"SEQSTREAM_CONTROL_KEY_FILE": str(key),
                   "SEQSTREAM_MODEL_ROOT": str(markov_dir.parent)}
    commands = [
        (["worker", "--model", str(markov_dir)], {"SEQSTREAM_WEB_PORT": "0"}),
        (["replay", str(log), "--format", "jsonl", "--no-progress"], {}),
        (["tail", "events"], {}),
        (["top", "--once"], {}),
        (["publish-model", str(markov_dir), "--control"], control_env),
    ]
    for args, env in commands:
        rc, out, err, took = _cli([*args, "--broker-url", url], env)
        lines = err.strip().splitlines()
        assert rc == 2, (args, out, err)
        assert len(lines) == 1, (args, err)
        assert lines[0].startswith(f"seqstream {args[0]}: error: no Kafka broker at {url}")
        assert "connection refused" in lines[0]
        assert took < 10.0, (args, took)


def test_a_port_that_is_not_kafka_is_named_within_10_s(tmp_path):
    log = tmp_path / "one.jsonl"
    log.write_text('{"user_id":"u1","item_id":"i1","action":"view","timestamp_ms":1000}\n')
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"kafka://127.0.0.1:{listener.getsockname()[1]}"
        rc, _, err, took = _cli(["replay", str(log), "--format", "jsonl", "--broker-url", url])
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{url} accepts connections but did not answer as a Kafka broker" in err
    assert took < 10.0


# --------------------------------------------------------------------------- ports
@pytest.mark.broker
def test_worker_names_its_web_or_metrics_port_when_it_is_taken(broker, markov_dir):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for var in ("SEQSTREAM_WEB_PORT", "SEQSTREAM_METRICS_PORT"):
            env = {"SEQSTREAM_WEB_PORT": "0", var: str(port)}
            rc, out, err, took = _cli(["worker", "--model", str(markov_dir),
                                       "--broker-url", broker.url], env)
            assert rc == 2, (out, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1, err
            assert lines[0].startswith(
                f"seqstream worker: error: port {port} on 127.0.0.1 is already in use ({var}")
            assert took < 10.0


@pytest.mark.broker
def test_broker_command_names_a_taken_port_instead_of_saying_ready():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        rc, out, err, took = _cli(["broker", "--port", str(port)], timeout_s=30)
    assert rc == 2
    assert "ready" not in out
    assert err.strip().splitlines() == [
        f"seqstream broker: error: port {port} on 127.0.0.1 is already in use (another "
        "broker?): stop it or choose another port"]
    assert took < 10.0


# --------------------------------------------------------------------------- security
def test_bad_security_settings_fail_at_once_not_after_a_retry_loop(tmp_path):
    log = tmp_path / "one.jsonl"
    log.write_text('{"user_id":"u1","item_id":"i1","action":"view","timestamp_ms":1000}\n')
    missing = tmp_path / "no-such-secret"
    env = {"SEQSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SEQSTREAM_SASL_USERNAME": "u",
           "SEQSTREAM_SASL_PASSWORD_FILE": str(missing)}
    for args in (["replay", str(log), "--format", "jsonl"], ["tail", "events"], ["worker"]):
        rc, _, err, took = _cli(args, env)
        assert rc == 2
        assert err.strip().splitlines() == [
            f"seqstream {args[0]}: error: SEQSTREAM_SASL_PASSWORD_FILE: cannot read {missing}: "
            "No such file or directory"], err
        assert took < 5.0


def test_ensure_topics_raises_a_configuration_error_at_once(clean_env, tmp_path):
    from stream_app.kafka.security import SecurityConfigError
    from stream_app.kafka.topics import ensure_topics

    s = load_settings(broker_url=f"kafka://127.0.0.1:{free_port()}", ssl_cafile=str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(SecurityConfigError, match="SEQSTREAM_SSL_CAFILE"):
        ensure_topics(s, timeout_s=30)
    assert time.monotonic() - t0 < 2.0


# --------------------------------------------------------------------------- SEQSTREAM_*
def test_invalid_variables_are_each_named_in_one_line(clean_env, capsys):
    clean_env.setenv("SEQSTREAM_BATCH_SIZE", "abc")
    clean_env.setenv("SEQSTREAM_METRIC_KS", "10,20")  # not JSON
    clean_env.setenv("SEQSTREAM_LOG_FORMAT", "xml")
    clean_env.setenv("SEQSTREAM_ALERT_DRIFT_DELTA", "2")
    clean_env.setenv("SEQSTREAM_SASL_PASSWORD", "")  # fine here: security.py says more
    rc = main(["worker"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert sorted(err) == sorted([
        "seqstream worker: error: SEQSTREAM_BATCH_SIZE='abc': expected an integer >= 1",
        "seqstream worker: error: SEQSTREAM_METRIC_KS='10,20': expected a JSON list of "
        "integers, e.g. [10, 20]",
        "seqstream worker: error: SEQSTREAM_LOG_FORMAT='xml': expected one of text, json",
        "seqstream worker: error: SEQSTREAM_ALERT_DRIFT_DELTA='2': expected a number > 0 "
        "and < 1",
    ])


def test_invalid_variable_from_the_shell_is_one_line_and_exit_2(tmp_path):
    rc, _, err, took = _cli(["tail", "events"], {"SEQSTREAM_PARTITIONS": "0"})
    assert rc == 2
    assert err.strip().splitlines() == [
        "seqstream tail: error: SEQSTREAM_PARTITIONS='0': expected an integer >= 1"]


def test_secret_values_are_not_echoed(clean_env):
    clean_env.setenv("SEQSTREAM_SASL_PASSWORD", "hunter2")
    clean_env.setenv("SEQSTREAM_SASL_MECHANISM", "MD5")
    assert environment_problems(os.environ) == [
        "SEQSTREAM_SASL_MECHANISM='MD5': expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 "
        "(or unset)"]
    from stream_app import settings as settings_mod

    line = settings_mod._problem_line("SEQSTREAM_SASL_PASSWORD", "sasl_password", "hunter2")
    assert "hunter2" not in line


def test_load_settings_raises_settings_error_with_one_problem_per_variable(clean_env):
    clean_env.setenv("SEQSTREAM_TOP_K", "-1")
    clean_env.setenv("SEQSTREAM_FAST_DELIVERY", "maybe")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert sorted(e.value.problems) == [
        "SEQSTREAM_FAST_DELIVERY='maybe': expected true or false",
        "SEQSTREAM_TOP_K='-1': expected an integer >= 1"]
    clean_env.delenv("SEQSTREAM_TOP_K")
    clean_env.delenv("SEQSTREAM_FAST_DELIVERY")
    clean_env.setenv("SEQSTREAM_LOG_LEVEL", "debug")  # accepted as before: upper-cased
    assert load_settings().log_level == "DEBUG"
    clean_env.setenv("SEQSTREAM_METRIC_KS", "[5, 10]")
    assert load_settings().metric_ks == (5, 10)
    with pytest.raises(SettingsError, match="setting top_k=0: expected an integer >= 1"):
        load_settings(top_k=0)


def test_a_check_across_settings_waits_for_the_options(clean_env):
    clean_env.setenv("SEQSTREAM_TOP_K", "1000")  # too large for the default record bound...
    assert load_settings(max_record_bytes=4 << 20).top_k == 1000  # ...not for this one
    with pytest.raises(SettingsError, match="over max_record_bytes"):
        load_settings()


def test_expected_describes_each_kind_of_setting():
    assert expected("batch_size") == "an integer >= 1"
    assert expected("idle_close_s") == "a number > 0"
    assert expected("alert_dead_letter_rate") == "a number >= 0 and <= 1"
    assert expected("verify_end_offsets") == "true or false"
    assert expected("log_level") == "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    assert expected("broker_url") == "text"
    assert expected("max_record_bytes") == "an integer >= 16,384"


def test_unknown_variables_get_a_warning_with_the_closest_name(clean_env, capsys, tmp_path):
    clean_env.setenv("SEQSTREAM_BATCH_SIZ", "3")
    clean_env.setenv("SEQSTREAM_WHATEVER_THIS_IS", "1")
    clean_env.setenv("SEQSTREAM_FAULTS", "model_raise_every=1")  # read elsewhere: not unknown
    assert unknown_env_names(os.environ) == [
        ("SEQSTREAM_BATCH_SIZ", "SEQSTREAM_BATCH_SIZE"), ("SEQSTREAM_WHATEVER_THIS_IS", None)]
    rc = main(["tail", "events", "--broker-url", f"kafka://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2  # no broker there; the warnings come first
    assert err[:2] == [
        "seqstream tail: warning: SEQSTREAM_BATCH_SIZ is not a seqstream setting (ignored); "
        "did you mean SEQSTREAM_BATCH_SIZE?",
        "seqstream tail: warning: SEQSTREAM_WHATEVER_THIS_IS is not a seqstream setting "
        "(ignored)"]
    assert len(err) == 3 and "no Kafka broker" in err[2]


# --------------------------------------------------------------------------- log options
@pytest.mark.broker
def test_worker_log_format_json_and_level_from_the_command_line(stream_settings, markov_dir,
                                                                tmp_path):
    from stream_app.worker.process import WorkerProcess

    settings = stream_settings.with_overrides(model_path=str(markov_dir))
    worker = WorkerProcess(settings, tmp_path / "worker.log",
                           extra_args=["--log-format", "json", "--log-level", "debug"])
    with worker:
        worker.wait_ready(90)
    lines = [ln for ln in worker.log_text().splitlines() if ln.startswith("{")]
    records = [orjson.loads(ln) for ln in lines]
    starting = [r for r in records if r["message"].startswith("seqstream worker starting")]
    assert len(starting) == 1 and starting[0]["level"] == "INFO"
    assert {"time", "level", "logger", "message"} <= set(starting[0])
    assert any(r["level"] == "DEBUG" for r in records)  # --log-level debug took effect


@pytest.mark.broker
def test_broker_log_format_json_passes_tansu_lines_as_json():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "broker", "--port",
                             str(port), "--log-format", "json", "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_clean_env())
    try:
        assert wait_for_port("127.0.0.1", port, 20.0)
        time.sleep(1.5)  # the command passes Tansu's lines on every 0.5 s
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "broker ready" in out
    records = [orjson.loads(ln) for ln in err.splitlines() if ln.strip()]
    assert records and all(r["logger"] == "seqstream.broker" for r in records)
    assert any(f"127.0.0.1:{port}" in r["message"] for r in records)  # Tansu's listen line


def test_log_options_are_checked_when_parsed(capsys):
    with pytest.raises(SystemExit) as e:
        main(["worker", "--log-format", "xml"])
    assert e.value.code == 2
    assert "--log-format: invalid choice: 'xml'" in capsys.readouterr().err


def test_a_retired_variable_names_what_replaced_it(clean_env, capsys):
    """The learner's gate moved into its schedule (gate=N,margin=M): the old variables are
    no longer read, and say where the value goes now."""
    from stream_app.commands._common import settings_from_args

    clean_env.setenv("SEQSTREAM_LEARN_GATE_WINDOW", "2000")
    settings_from_args(argparse.Namespace(command="learner"))
    assert capsys.readouterr().err.splitlines() == [
        "seqstream learner: warning: SEQSTREAM_LEARN_GATE_WINDOW is retired (ignored): set "
        "gate=N in SEQSTREAM_LEARN_SCHEDULE instead"]
