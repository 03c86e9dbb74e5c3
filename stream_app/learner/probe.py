"""The learner's health and metrics over HTTP (``web_port``; off when it is 0).

``GET /v1/live``: 200 while the learner's loop turns (its last turn less than
``stall_s`` ago), 503 when it is wedged — a liveness probe restarts the pod, which goes on
from the newest version and the offsets committed with it. ``GET /v1/ready``: 200 once it
has partitions of the events topic, 503 with the reason before. ``GET /metrics``: the
driver's counts in Prometheus' text format (``seqstream_learner_*``: events taken,
learned, skipped, updates, versions published and refused by the gate, rollbacks, erase
requests and the held events they dropped, lag, seconds spent learning, the current version
as an info label).

A plain standard-library HTTP server in a daemon thread: the learner's loop is synchronous
(kafka-python), and three read-only pages need no framework.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: Prometheus name, kind, help; value read from the driver's stats of the same name.
_METRICS = (
    ("events_in", "counter", "valid events taken from the events topic"),
    ("events_learned", "counter", "events learned"),
    ("skipped", "counter", "events not learned (behind the stream: subsampled or skipped)"),
    ("updates", "counter", "model updates"),
    ("published", "counter", "versions published"),
    ("refused", "counter", "versions the validation gate did not publish"),
    ("rollbacks", "counter", "rollbacks followed"),
    ("erased", "counter", "erase requests carried out"),
    ("erased_events", "counter", "events of erased users dropped before they were learned"),
    ("lag_alerts", "counter", "learner_lag alerts sent"),
    ("learn_seconds", "counter", "wall seconds inside updates"),
    ("lag", "gauge", "events behind the end of the events topic, last measured"),
)


class _StatsCollector(Collector):
    """The driver's counts as Prometheus families, read when the page is asked for."""

    def __init__(self, driver) -> None:
        self.driver = driver

    def collect(self):
        stats = self.driver.stats
        for name, kind, doc in _METRICS:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(f"seqstream_learner_{name}", doc, value=float(getattr(stats, name)))
        info = GaugeMetricFamily("seqstream_learner_info", "the version the learner is at",
                                 labels=["version"])
        info.add_metric([str(self.driver.learner.version)], 1.0)
        yield info


class LearnerProbe:
    """Holds what the pages report; the learner's loop calls :meth:`turned` each turn."""

    def __init__(self, driver, stall_s: float = 300.0) -> None:
        self.driver = driver
        self.stall_s = stall_s
        self.assigned = False
        self.last_turn = time.monotonic()
        self._server: ThreadingHTTPServer | None = None

    def turned(self, assigned: bool) -> None:
        self.last_turn = time.monotonic()
        self.assigned = assigned

    def live(self) -> tuple[int, dict]:
        idle = time.monotonic() - self.last_turn
        if idle > self.stall_s:
            return 503, {"live": False, "reason": f"the learner's loop has not turned for "
                         f"{idle:.0f} s (bound {self.stall_s:.0f} s)"}
        return 200, {"live": True}

    def ready(self) -> tuple[int, dict]:
        if not self.assigned:
            return 503, {"ready": False, "reasons": ["no partitions of the events topic yet "
                                                     "(joining the learner's group)"]}
        return 200, {"ready": True, "version": self.driver.learner.version}

    def metrics_text(self) -> str:
        """The pages' ``/metrics``, rendered by prometheus_client as the workers' metrics are
        (its counter suffix and label escaping), from the driver's stats at the time asked."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_StatsCollector(self.driver))
        return generate_latest(registry).decode()

    def serve(self, host: str, port: int) -> int:
        """Start the server in a daemon thread; returns the port it listens on."""
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    code, body, ctype = 200, probe.metrics_text(), "text/plain; version=0.0.4"
                elif path in ("/v1/live", "/v1/health", "/v1/ready"):
                    code, obj = probe.ready() if path == "/v1/ready" else probe.live()
                    body, ctype = json.dumps(obj), "application/json"
                else:
                    code, body, ctype = 404, json.dumps({"error": "not found"}), "application/json"
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # probes every few seconds: no log line
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="learner-probe",
                         daemon=True).start()
        return self._server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


__all__ = ["LearnerProbe"]
