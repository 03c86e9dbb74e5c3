"""Prometheus metrics of the worker (no Kafka; one test scrapes the HTTP endpoint)."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from schemas import Alert
from stream_app.observe.prometheus import BulkHistogram, WorkerMetrics, consumer_lags


def samples(m: WorkerMetrics) -> dict:
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                            + "}" if s.labels else "")
            out[key] = s.value
    return out


def test_bulk_histogram_matches_prometheus_histogram():
    from prometheus_client import CollectorRegistry

    rng = np.random.default_rng(0)
    values = np.r_[rng.exponential(0.2, 500), [0.005, 0.01, 1.0, 400.0]]  # edges included
    bounds = (0.005, 0.01, 0.1, 1.0, 10.0)
    reg = CollectorRegistry()
    ref = Histogram("ref", "r", buckets=bounds, registry=reg)
    for v in values:
        ref.observe(v)
    bulk = BulkHistogram("bulk", "b", bounds)
    bulk.observe_many(values[:100])
    bulk.observe_many(values[100:])
    reg.register(bulk)
    got = {s.name.replace("bulk", "X") + s.labels.get("le", ""): s.value
           for fam in reg.collect() if fam.name == "bulk" for s in fam.samples}
    want = {s.name.replace("ref", "X") + s.labels.get("le", ""): s.value
            for fam in reg.collect() if fam.name == "ref" for s in fam.samples
            if not s.name.endswith("_created")}
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v), k


def test_worker_metrics_counts():
    m = WorkerMetrics()
    m.observe_batch(n_records=10, n_events=8, n_predictions=8, n_dead=2, n_duplicates=1,
                    latencies_ms=[5.0] * 7 + [2000.0], model_s=0.02)
    m.observe_batch(n_records=3, n_events=3, n_predictions=3, n_dead=0, n_duplicates=0,
                    latencies_ms=[10.0, 10.0, 10.0], model_s=0.01)
    m.set_lag({0: 5, 1: -1})
    m.set_model_version("markov-1")
    m.set_model_version("markov-2")
    m.count_windows(4)
    m.count_alerts([Alert("hit@10", "drift", "adwin", 0.5, 0.2, 0, 1, "m")])
    s = samples(m)
    assert s["seqstream_events_total"] == 11 and s["seqstream_predictions_total"] == 11
    assert s["seqstream_dead_letters_total"] == 2 and s["seqstream_duplicates_total"] == 1
    assert s["seqstream_batches_total"] == 2 and s["seqstream_batch_size_count"] == 2
    assert s["seqstream_batch_size_sum"] == 13
    assert s["seqstream_end_to_end_latency_seconds_count"] == 11
    assert s["seqstream_end_to_end_latency_seconds_bucket{le=0.005}"] == 7
    assert s["seqstream_end_to_end_latency_seconds_bucket{le=1.0}"] == 10
    assert s["seqstream_end_to_end_latency_seconds_sum"] == pytest.approx(2.065)
    assert s["seqstream_model_inference_seconds_count"] == 2
    assert s["seqstream_consumer_lag{partition=0}"] == 5
    assert s["seqstream_consumer_lag{partition=1}"] == 0
    assert s["seqstream_model_info{version=markov-2}"] == 1
    assert s["seqstream_model_info{version=markov-1}"] == 0
    assert s["seqstream_windows_published_total"] == 4
    assert s["seqstream_alerts_total{metric=hit@10}"] == 1
    WorkerMetrics()  # a second instance: own registry, no duplicate-name error


def test_consumer_lags():
    class Consumer:
        def highwater(self, tp):
            if tp.partition == 2:
                raise RuntimeError("not assigned")
            return {0: 100, 1: None}[tp.partition]

    got = consumer_lags(Consumer(), {("ev", 0): 89, ("ev", 1): 5, ("ev", 2): 7})
    assert got == {0: 10}


def test_http_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = WorkerMetrics()
    m.serve(port, addr="127.0.0.1")
    try:
        m.observe_batch(1, 1, 1, 0, 0, [3.0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            body = r.read().decode()
        assert "seqstream_events_total 1.0" in body
        assert "seqstream_end_to_end_latency_seconds_bucket" in body
    finally:
        m.stop()
