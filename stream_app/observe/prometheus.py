"""Prometheus metrics of a worker (prometheus-client), served on ``settings.metrics_port``.

Counters: ``seqstream_events_total`` (valid events), ``seqstream_predictions_total``,
``seqstream_dead_letters_total``, ``seqstream_duplicates_total`` (redelivered events),
``seqstream_batches_total``, ``seqstream_windows_published_total``,
``seqstream_alerts_total{metric}``.
Histograms: ``seqstream_batch_size`` (records per micro-batch),
``seqstream_end_to_end_latency_seconds`` (per event: Kafka timestamp to prediction),
``seqstream_model_inference_seconds`` (per batch: the batched model call),
``seqstream_event_loop_lag_seconds`` (how late the event loop runs what is ready:
:mod:`stream_app.observe.loop_lag`).
Gauges: ``seqstream_consumer_lag{partition}`` (the consumer's highwater minus the next offset
to process, after each batch), ``seqstream_event_watermark_seconds``,
``seqstream_model_info{version}``.

Each :class:`WorkerMetrics` has its own registry (several apps in one process do not
collide). The per-event latency histogram is filled a batch at a time with numpy
(:class:`BulkHistogram`): one Python call per batch, not per event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

#: seconds; end-to-end latency spans milliseconds (live) to minutes (a replay's backlog)
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                     60.0, 300.0)
INFERENCE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
LOOP_LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BulkHistogram(Collector):
    """A Prometheus histogram fed many values at once (numpy), exposed at scrape time."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last: above all
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float] | np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if not len(v):
            return
        # bucket i holds bounds[i-1] < x <= bounds[i] (Prometheus "le")
        idx = np.searchsorted(self.bounds, v, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(v.sum())

    def collect(self):
        with self._lock:
            cum = np.cumsum(self._counts)
            total_sum = self._sum
        buckets = [(_fmt_le(b), int(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)]
        buckets.append(("+Inf", int(cum[-1])))
        fam = HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                    sum_value=total_sum)
        yield fam

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation)]

    @property
    def count(self) -> int:
        return int(self._counts.sum())


def _fmt_le(b: float) -> str:
    return repr(float(b))


class WorkerMetrics:
    """The worker's Prometheus metrics (one registry per instance)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.events = Counter("seqstream_events", "valid events processed", registry=r)
        self.predictions = Counter("seqstream_predictions", "predictions published",
                                   registry=r)
        self.dead_letters = Counter("seqstream_dead_letters", "records sent to dead-letters",
                                    registry=r)
        self.duplicates = Counter("seqstream_duplicates",
                                  "redelivered events recognised (not scored again)",
                                  registry=r)
        self.batches = Counter("seqstream_batches", "micro-batches processed", registry=r)
        self.failed_batches = Counter(
            "seqstream_failed_model_calls",
            "model calls that raised (each is retried; a batch whose tries all fail goes to "
            "dead-letters)", registry=r)
        self.fenced_batches = Counter(
            "seqstream_fenced_batches",
            "batches not written because the worker's group membership was lost", registry=r)
        self.windows = Counter("seqstream_windows_published",
                               "metrics windows published on the metrics topic", registry=r)
        self.alerts = Counter("seqstream_alerts", "alerts published, by metric", ["metric"],
                              registry=r)
        self.batch_size = Histogram("seqstream_batch_size", "records per micro-batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("seqstream_model_inference_seconds",
                                   "batched model call per micro-batch (seconds)",
                                   buckets=INFERENCE_BUCKETS_S, registry=r)
        self.latency = BulkHistogram("seqstream_end_to_end_latency_seconds",
                                     "per event: Kafka record timestamp to prediction (seconds)",
                                     LATENCY_BUCKETS_S)
        r.register(self.latency)
        self.loop_lag = BulkHistogram(
            "seqstream_event_loop_lag_seconds",
            "how late the event loop woke a 10 ms sleep (seconds): what a request or a "
            "batch that became ready waited for the loop", LOOP_LAG_BUCKETS_S)
        r.register(self.loop_lag)
        self.lag = Gauge("seqstream_consumer_lag",
                         "highwater minus the next offset to process, per input partition",
                         ["partition"], registry=r)
        self.watermark = Gauge("seqstream_event_watermark_seconds",
                               "highest event time seen (Unix seconds)", registry=r)
        self.model_info = Gauge("seqstream_model_info", "1 for the model version served",
                                ["version"], registry=r)
        self._version: str | None = None
        self.server = None

    # ------------------------------------------------------------------ feeding
    def observe_batch(self, n_records: int, n_events: int, n_predictions: int, n_dead: int,
                      n_duplicates: int, latencies_ms: Sequence[float] | np.ndarray,
                      model_s: float | None = None) -> None:
        self.batches.inc()
        self.batch_size.observe(n_records)
        if n_events:
            self.events.inc(n_events)
        if n_predictions:
            self.predictions.inc(n_predictions)
        if n_dead:
            self.dead_letters.inc(n_dead)
        if n_duplicates:
            self.duplicates.inc(n_duplicates)
        if len(latencies_ms):
            self.latency.observe_many(np.asarray(latencies_ms, dtype=np.float64) / 1000.0)
        if model_s is not None:
            self.inference.observe(model_s)

    def set_lag(self, lags: dict[int, int]) -> None:
        for part, lag in lags.items():
            self.lag.labels(partition=str(part)).set(max(0, lag))

    def set_watermark(self, ts_ms: int | None) -> None:
        if ts_ms is not None:
            self.watermark.set(ts_ms / 1000.0)

    def set_model_version(self, version: str) -> None:
        if version == self._version:
            return
        if self._version is not None:
            self.model_info.labels(version=self._version).set(0)
        self.model_info.labels(version=version).set(1)
        self._version = version

    def count_failed_batch(self) -> None:
        self.failed_batches.inc()

    def count_fenced_batch(self) -> None:
        self.fenced_batches.inc()

    def count_windows(self, n: int) -> None:
        if n:
            self.windows.inc(n)

    def count_alerts(self, alerts: Iterable) -> None:
        for a in alerts:
            self.alerts.labels(metric=a.metric).inc()

    # ------------------------------------------------------------------ exposing
    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` over HTTP on ``addr``:``port`` (a daemon thread).

        The endpoint has no authentication: it listens on loopback unless the caller opens
        it (setting ``metrics_host``, e.g. ``0.0.0.0`` behind a network policy)."""
        from prometheus_client import start_http_server

        self.server = start_http_server(port, addr=addr, registry=self.registry)

    def stop(self) -> None:
        if self.server:
            server, _thread = self.server
            server.shutdown()
            server.server_close()
            self.server = None

    def render(self) -> bytes:
        """The text exposition (what a scrape returns)."""
        return generate_latest(self.registry)


def consumer_lags(consumer, last_offsets: dict[tuple[str, int], int]) -> dict[int, int]:
    """Lag per partition from a Faust consumer's highwater marks (known ones only).

    ``last_offsets``: (topic, partition) -> the last offset processed. Any failure (a driver
    without ``highwater``, a partition not fetched yet) leaves that partition out.
    """
    from faust.types import TP

    out: dict[int, int] = {}
    for (topic, part), off in last_offsets.items():
        try:
            hw = consumer.highwater(TP(topic, part))
        except Exception:  # noqa: BLE001 - lag is best effort, never stops the agent
            continue
        if hw is not None:
            out[part] = int(hw) - (off + 1)
    return out


__all__ = ["BulkHistogram", "WorkerMetrics", "consumer_lags"]
