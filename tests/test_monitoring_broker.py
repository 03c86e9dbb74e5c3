"""Monitoring on the real embedded broker: alerts after an injected change, Prometheus
endpoint of the worker, ``seqstream top --once`` and ``seqstream report`` from the topics."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_core.checkpoint import save_model
from model_core.datasets.synth import generate, write_jsonl
from model_core.models import create_model
from model_core.sequences import build_vocab, group_by_user
from schemas import Alert, MetricsWindow
from stream_app.cli import main
from stream_app.kafka.replay import replay_file
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.observe.report import latest_per_key
from stream_app.worker.process import WorkerProcess

pytestmark = [pytest.mark.broker]

N_EVENTS = 6000
CHANGE_AT = 0.6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{label}}}" if label else "")] = s.value
    return out


@pytest.fixture
def drifting_log(tmp_path):
    """A log whose transition structure switches at 60 %; the model learns the first 30 %
    (not replayed): the replayed stream is 30 % stable, then changed."""
    events = generate(N_EVENTS, seed=0, change_at=CHANGE_AT)
    change_ts = events[int(CHANGE_AT * N_EVENTS)].timestamp_ms
    train, stream = events[: int(0.3 * N_EVENTS)], events[int(0.3 * N_EVENTS):]
    vocab = build_vocab(events)
    model = create_model("markov", vocab)
    model.fit(group_by_user(train, vocab))
    ckpt = save_model(model, tmp_path / "ckpt")
    path = tmp_path / "stream.jsonl"
    write_jsonl(stream, path)
    return path, stream, change_ts, ckpt


def test_alerts_and_prometheus_on_the_broker(stream_settings, drifting_log, tmp_path, capsys,
                                             monkeypatch):
    path, stream, change_ts, ckpt = drifting_log
    port = free_port()
    settings = stream_settings.with_overrides(model_path=str(ckpt), window_s=600,
                                              metrics_port=port, alert_dead_letter_rate=0.5)
    ensure_topics(settings)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready(90)
        rep = replay_file(settings, path, "jsonl", progress=False)
        assert rep.sent == len(stream)
        preds = read_topic(settings, "predictions", expect=len(stream), timeout_s=180)
        assert len(preds) >= len(stream)
        prom = scrape(port)
        worker.stop()
        assert worker.proc.returncode == 0, worker.log_text()[-3000:]
    alerts = [Alert.from_json(m.value) for m in read_topic(settings, "alerts", idle_s=2)]
    windows = latest_per_key((m.key, MetricsWindow.from_json(m.value))
                             for m in read_topic(settings, "metrics", idle_s=2))

    # the injected change raised a hit-rate alert, and nothing did before it
    hit = [a for a in alerts if a.metric == "hit@10"]
    assert hit, (f"no hit@10 alert among {len(alerts)}: "
                 + "; ".join(a.message for a in alerts))
    assert all(a.window_end_ms >= change_ts for a in hit), [
        ((a.window_end_ms - change_ts) / 1000, a.message) for a in hit]
    assert hit[0].direction == "down" and hit[0].new_level < hit[0].old_level
    assert hit[0].model_version.startswith("markov-") and "fell from" in hit[0].message
    assert not [a for a in alerts if a.metric == "dead_letter_rate"]  # no dead letters

    # Prometheus: every event counted, latency observed per event, lag known per partition
    assert prom["seqstream_events_total"] == len(stream)
    assert prom["seqstream_predictions_total"] >= len(stream)
    assert prom["seqstream_end_to_end_latency_seconds_count"] == len(stream)
    assert prom["seqstream_batches_total"] == prom["seqstream_batch_size_count"] >= 1
    assert prom["seqstream_batch_size_sum"] >= len(stream)
    assert prom["seqstream_model_inference_seconds_count"] >= 1
    lags = {k: v for k, v in prom.items() if k.startswith("seqstream_consumer_lag{")}
    assert lags and all(v >= 0 for v in lags.values())
    assert any(k.startswith("seqstream_model_info{version=markov-") and v == 1
               for k, v in prom.items())
    assert prom.get("seqstream_alerts_total{metric=hit@10}", 0) >= 1

    assert sum(w.events for w in windows if w.window_kind == "tumbling") == len(stream)

    # seqstream top --once and seqstream report read the same topics
    kafka = ["--broker-url", settings.broker_url, "--topic-prefix", settings.topic_prefix]
    monkeypatch.setenv("COLUMNS", "240")
    assert main(["top", "--once", "--rows", "3", "--idle-s", "1", *kafka]) == 0
    out = capsys.readouterr().out
    assert "tumbling windows" in out and f"alerts ({len(alerts)})" in out
    assert main(["report", "--out", str(tmp_path / "report"), "--idle-s", "1", "--save-jsonl",
                 str(tmp_path / "metrics.jsonl"), *kafka]) == 0
    out = capsys.readouterr().out
    assert f"{len(alerts)} alerts" in out
    page = (tmp_path / "report" / "index.html").read_text()
    assert "hit@10" in page and (tmp_path / "report" / "quality.png").stat().st_size < 100_000
    assert (tmp_path / "metrics.jsonl").read_bytes().count(b"\n") == len(windows)
