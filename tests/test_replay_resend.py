"""Re-sent files (issue 12, item 8): two exports with one file name are two sets of
events; a true re-send of a file is recognised (the worker counts it as duplicates) and
reported by replay, never silently dropped."""

from __future__ import annotations

import time

import pytest

from model_core.datasets.synth import generate


def _taobao(events, path):
    behaviour = {"view": "pv", "purchase": "buy", "cart": "cart", "fav": "pv", "click": "pv"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{e.user_id},{e.item_id},1,{behaviour[e.action]},"
                            f"{e.timestamp_ms // 1000}\n" for e in events))
    return path


def test_replay_ledger_finds_an_earlier_replay_of_the_same_content(tmp_path):
    from stream_app.kafka.replay import _record_replay, file_sha256, find_replay
    from stream_app.settings import load_settings

    s = load_settings(data_dir=str(tmp_path / "data"))
    a = _taobao(generate(20, seed=1), tmp_path / "a" / "part-00000.csv")
    b = _taobao(generate(20, seed=2), tmp_path / "b" / "part-00000.csv")
    target = {"broker": "127.0.0.1:9092", "topic": "seqstream.events"}
    assert find_replay(s, file_sha256(a), target) is None
    _record_replay(s, {"sha256": file_sha256(a), **target, "path": str(a), "sent": 20,
                       "at": "2026-01-01T00:00:00Z"})
    assert find_replay(s, file_sha256(a), target)["sent"] == 20
    assert find_replay(s, file_sha256(b), target) is None  # same name, other content
    assert find_replay(s, file_sha256(a), {**target, "topic": "other.events"}) is None
    (tmp_path / "data" / "replayed.jsonl").open("ab").write(b"{damaged\n")
    assert find_replay(s, file_sha256(a), target)["sent"] == 20


def _counter(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


@pytest.mark.broker
def test_same_named_exports_are_both_processed_and_a_resend_is_reported(stream_settings,
                                                                       tmp_path, capsys):
    """On main the second export (same name, other content) was taken for a re-send: its
    events whose ids (<stem>:<line>) were in the same user's window were dropped."""
    import socket

    from stream_app.cli import main
    from stream_app.kafka.replay import replay_file
    from stream_app.kafka.topics import ensure_topics, read_topic
    from stream_app.ops.chaos import _train_markov
    from stream_app.worker.process import WorkerProcess, settings_env

    first, second = generate(300, seed=11), generate(300, seed=12)
    a = _taobao(first, tmp_path / "day1" / "part-00000.csv")
    b = _taobao(second, tmp_path / "day2" / "part-00000.csv")
    _train_markov(first, tmp_path / "model")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = stream_settings.with_overrides(model_path=str(tmp_path / "model"), metrics_port=port)
    ensure_topics(s)
    with WorkerProcess(s, tmp_path / "worker.log") as worker:
        worker.wait_ready(90)
        rep_a = replay_file(s, a, "taobao", progress=False)
        rep_b = replay_file(s, b, "taobao", progress=False)
        assert rep_a.sent == rep_b.sent == 300
        assert rep_a.resent_of is None and rep_b.resent_of is None
        # the CLI says that the third replay is a re-send of the first file
        env = settings_env(s, base={})
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            assert main(["replay", str(a), "--format", "taobao", "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "sent 300 events" in out and "was replayed to" in out and "duplicates" in out
        preds = read_topic(s, "predictions", expect=900, timeout_s=120)
        # the worker's duplicate count: the re-sent first file, nothing of the second
        deadline = time.monotonic() + 30
        while (_counter(port, "seqstream_predictions_total") < 900
               and time.monotonic() < deadline):
            time.sleep(0.5)
        duplicates = _counter(port, "seqstream_duplicates_total")
        worker.stop()
        assert worker.proc.returncode == 0, worker.log_text()[-2000:]
    assert len(preds) == 900  # every event predicted, the re-sent ones again
    assert duplicates == 300
