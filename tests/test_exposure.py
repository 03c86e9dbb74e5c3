"""Faust's web server and the Prometheus endpoint have no authentication (issue 12, item
12): by default both listen on loopback only, a setting opens them, and Faust's /router/ and
/table/ views (cluster layout, any user's state by key) are off."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from stream_app.settings import load_settings
from stream_app.worker.app import app_options


def _free_port() -> int:
    """A free port below the kernel's ephemeral range (32768-60999 here). A port the kernel
    hands out for ``bind(0)`` comes from that range, where the Kafka clients of the other
    test process take their outgoing ports all the time: one took the worker's metrics port
    between this check and the worker's bind (a fresh-clone CI run: nothing listened)."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state != "0A" or int(p, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            if len(raw) == 4:
                out.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                out.add(socket.inet_ntop(socket.AF_INET6, words))
    return out


def test_defaults_bind_to_loopback_and_table_views_are_off():
    s = load_settings()
    assert s.web_host == "127.0.0.1" and s.metrics_host == "127.0.0.1"
    opts = app_options(s)
    assert opts["web_bind"] == "127.0.0.1"
    assert opts["web_router_enabled"] is False and opts["web_tables_enabled"] is False
    assert app_options(load_settings(web_host="0.0.0.0"))["web_bind"] == "0.0.0.0"


def test_prometheus_endpoint_defaults_to_loopback():
    from stream_app.observe.prometheus import WorkerMetrics

    port = _free_port()
    m = WorkerMetrics()
    m.serve(port)
    try:
        assert _listening(port) == {"127.0.0.1"}
    finally:
        m.stop()


@pytest.mark.broker
def test_worker_listens_on_loopback_only(stream_settings, tmp_path):
    from model_core.datasets.synth import generate
    from stream_app.kafka.topics import ensure_topics
    from stream_app.ops.chaos import _train_markov
    from stream_app.worker.process import WorkerProcess

    _train_markov(generate(300, seed=1), tmp_path / "model")
    web, metrics = _free_port(), _free_port()
    s = stream_settings.with_overrides(model_path=str(tmp_path / "model"), web_port=web,
                                       metrics_port=metrics)
    ensure_topics(s)
    with WorkerProcess(s, tmp_path / "worker.log") as worker:
        worker.wait_ready(90)
        assert _listening(web) == {"127.0.0.1"}, worker.log_text()[-2000:]
        assert _listening(metrics) == {"127.0.0.1"}
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=10) as r:
            assert r.status == 200
        for path in ("/router/", "/table/", "/table/user-state/"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{web}{path}", timeout=10)
            assert e.value.code == 404, path
        worker.stop()
