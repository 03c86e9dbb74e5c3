"""Drift and threshold alerts (pure: no Kafka)."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.datasets.synth import generate
from model_core.models import create_model
from model_core.prequential import PrequentialEngine
from model_core.sequences import build_vocab, group_by_user
from schemas import Alert, MetricsWindow
from stream_app.observe.alerts import AlertConfig, AlertMonitor
from stream_app.settings import load_settings

T0 = 1_704_067_200_000


def bernoulli_ranks(rng, p: float, n: int) -> np.ndarray:
    return np.where(rng.random(n) < p, 1, 0)


# --------------------------------------------------------------------------- hit drift
def test_hit_drop_alerts_after_the_change_not_before():
    rng = np.random.default_rng(0)
    ranks = np.r_[bernoulli_ranks(rng, 0.5, 5000), bernoulli_ranks(rng, 0.15, 3000)]
    ts = T0 + np.arange(len(ranks)) * 1000
    mon = AlertMonitor(model_version="m-1")
    alerts = []
    for i in range(0, len(ranks), 250):  # in batches, as the worker feeds it
        alerts += mon.observe_hits(ranks[i:i + 250], ts[i:i + 250], now_ms=42)
    assert alerts, "no alert for a hit rate falling from 50% to 15%"
    a = alerts[0]
    assert a.window_end_ms >= ts[5000]  # not before the change
    assert a.window_end_ms < ts[5000 + 600]  # and soon after it
    assert (a.metric, a.kind, a.detector, a.direction) == ("hit@10", "drift", "adwin", "down")
    assert a.old_level == pytest.approx(0.5, abs=0.05) and a.new_level < a.old_level - 0.08
    assert a.window_start_ms <= a.window_end_ms and a.n_observations > 0
    assert "fell from" in a.message and "hit@10" in a.message
    assert a.model_version == "m-1" and a.emitted_at_ms == 42
    assert all(x.window_end_ms >= ts[5000] for x in alerts)
    assert mon.levels()["hit@10_rolling"] == pytest.approx(0.15, abs=0.05)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stable_hit_rate_raises_nothing(seed):
    rng = np.random.default_rng(seed)
    ranks = bernoulli_ranks(rng, 0.4, 20_000)
    mon = AlertMonitor()
    assert mon.observe_hits(ranks, T0 + np.arange(len(ranks))) == []


def test_page_hinkley_sees_the_drop():
    rng = np.random.default_rng(7)
    ranks = np.r_[bernoulli_ranks(rng, 0.5, 3000), bernoulli_ranks(rng, 0.1, 1500)]
    ts = T0 + np.arange(len(ranks))
    mon = AlertMonitor(AlertConfig(page_hinkley=True, hit_delta=1e-9))  # ADWIN nearly off
    alerts = [a for a in mon.observe_hits(ranks, ts) if a.detector == "page_hinkley"]
    assert alerts and alerts[0].direction == "down" and alerts[0].window_end_ms >= ts[3000]
    assert alerts[0].new_level < alerts[0].old_level - 0.08
    assert "Page-Hinkley" in alerts[0].message


def test_small_changes_are_not_raised():
    rng = np.random.default_rng(4)
    ranks = np.r_[bernoulli_ranks(rng, 0.50, 8000), bernoulli_ranks(rng, 0.47, 8000)]
    mon = AlertMonitor(AlertConfig(hit_delta=0.2))  # a trigger-happy detector
    assert mon.observe_hits(ranks, T0 + np.arange(len(ranks))) == []


def test_rank_beyond_k_is_a_miss():
    mon = AlertMonitor(AlertConfig(hit_k=5))
    mon.observe_hits([6, 5, 0, 1], [T0] * 4)
    assert mon.levels()["hit@5_rolling"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- prequential
@pytest.mark.parametrize("seed", [0, 3])
def test_prequential_run_with_injected_change(seed):
    """Switch the generator's transitions mid-stream: an alert after the switch, none before."""
    n = 12_000
    events = generate(n, seed=seed, change_at=0.6)
    change_ts = events[int(0.6 * n)].timestamp_ms
    train, stream = events[: int(0.3 * n)], events[int(0.3 * n):]
    vocab = build_vocab(events)
    model = create_model("markov", vocab)
    model.fit(group_by_user(train, vocab))
    engine = PrequentialEngine(model, k=20)
    mon = AlertMonitor(model_version=model.version)
    states: dict = {}
    alerts: list[Alert] = []
    for i in range(0, len(stream), 500):
        batch = stream[i:i + 500]
        result = engine.process(batch, states)
        alerts += mon.observe_batch(batch, result, [10.0] * len(batch), now_ms=0)
    hit_alerts = [a for a in alerts if a.metric == "hit@10"]
    assert hit_alerts, "the change of transitions raised no alert"
    assert all(a.window_end_ms >= change_ts for a in hit_alerts), [
        (a.window_end_ms - change_ts, a.message) for a in hit_alerts]
    first = hit_alerts[0]
    assert first.direction == "down" and first.new_level < first.old_level
    assert first.window_end_ms - change_ts < 600_000  # within 10 minutes of event time
    assert not [a for a in alerts if a.metric == "latency_ms"]  # constant latency


# --------------------------------------------------------------------------- latency drift
def test_latency_rise_alerts():
    rng = np.random.default_rng(5)
    lat = np.r_[rng.normal(30, 5, 4000), rng.normal(400, 50, 2000)].clip(1)
    ts = T0 + np.arange(len(lat)) * 10
    mon = AlertMonitor()
    alerts = mon.observe_latencies(lat, ts)
    assert alerts and alerts[0].metric == "latency_ms" and alerts[0].direction == "up"
    assert alerts[0].window_end_ms >= ts[4000]
    assert alerts[0].old_level == pytest.approx(30, abs=5)
    assert "rose from" in alerts[0].message
    assert mon.levels()["latency_p99_ms_rolling"] > 300


def test_latency_jitter_is_not_raised():
    rng = np.random.default_rng(6)
    lat = np.r_[rng.normal(30, 5, 4000), rng.normal(45, 5, 4000)]  # +15 ms: below 50 ms
    assert AlertMonitor().observe_latencies(lat, T0 + np.arange(len(lat))) == []


# --------------------------------------------------------------------------- thresholds
def window(i: int, p99: float = 10.0, dead: int = 0, events: int = 100,
           kind: str = "tumbling") -> MetricsWindow:
    return MetricsWindow(window_start_ms=T0 + i * 60_000, window_end_ms=T0 + (i + 1) * 60_000,
                         window_kind=kind, events=events, dead_letters=dead,
                         dead_letter_rate=dead / (events + dead), latency_p50_ms=p99 / 2,
                         latency_p95_ms=p99, latency_p99_ms=p99, model_version="m-2")


@pytest.mark.parametrize("p99s, fired", [
    ([10, 20, 30], []),
    ([10, 900, 950, 10, 1200], [1, 4]),  # once per breach; re-armed by a window under it
    ([600, 600], [0]),
])
def test_latency_threshold(p99s, fired):
    mon = AlertMonitor(AlertConfig(latency_p99_limit_ms=500))
    got = []
    for i, p in enumerate(p99s):
        for a in mon.observe_window(window(i, p99=p)):
            got.append(i)
            assert a.metric == "latency_p99_ms" and a.kind == "threshold"
            assert a.old_level == 500 and a.new_level == p and a.severity == "critical"
            assert a.window_start_ms == T0 + i * 60_000 and "above the 500 ms limit" in a.message
    assert got == fired


def test_dead_letter_threshold_and_off_by_default():
    on = AlertMonitor(AlertConfig(dead_letter_rate_limit=0.05))
    off = AlertMonitor()
    ws = [window(0, dead=1), window(1, dead=20), window(2, dead=30, kind="hopping")]
    got = on.observe_windows(ws)
    assert [a.metric for a in got] == ["dead_letter_rate"]
    assert got[0].new_level == pytest.approx(20 / 120) and "dead-lettered" in got[0].message
    assert off.observe_windows(ws + [window(3, p99=1e6)]) == []


# --------------------------------------------------------------------------- records
def test_alert_round_trip_and_settings():
    a = Alert(metric="hit@10", kind="drift", detector="adwin", old_level=0.5, new_level=0.2,
              window_start_ms=1, window_end_ms=2, message="m", direction="down")
    assert Alert.from_json(a.to_json()) == a
    s = load_settings(alert_latency_p99_ms=250.0, alert_dead_letter_rate=0.01,
                      alert_page_hinkley=True, alert_hit_k=20)
    cfg = AlertConfig.from_settings(s)
    assert (cfg.latency_p99_limit_ms, cfg.dead_letter_rate_limit, cfg.page_hinkley,
            cfg.hit_k) == (250.0, 0.01, True, 20)


def test_uneven_partitions_are_fed_in_event_time_order():
    """A worker reads partitions unevenly: partition 0 here runs far ahead of the others.
    Given the partitions, the detectors still see event-time order: no alert before the
    change, spans that make sense, and nothing lost."""
    n = 12_000
    events = generate(n, seed=3, change_at=0.6)
    change_ts = events[int(0.6 * n)].timestamp_ms
    train, stream = events[: int(0.3 * n)], events[int(0.3 * n):]
    vocab = build_vocab(events)
    model = create_model("markov", vocab)
    model.fit(group_by_user(train, vocab))
    engine = PrequentialEngine(model, k=20)
    part_of = {u: int(u[1:]) % 4 for u in {e.user_id for e in stream}}
    queues = [[e for e in stream if part_of[e.user_id] == p] for p in range(4)]
    take = [600, 60, 60, 60]  # events per batch from each partition
    mon = AlertMonitor()
    states: dict = {}
    alerts: list[Alert] = []
    held_max = 0
    while any(queues):
        batch = []
        for p in range(4):
            batch += queues[p][:take[p]]
            queues[p] = queues[p][take[p]:]
        result = engine.process(batch, states)
        alerts += mon.observe_batch(batch, result, [10.0] * len(batch),
                                    partitions=[part_of[e.user_id] for e in batch])
        held_max = max(held_max, mon.held)
    alerts += mon.flush()
    assert held_max > 1000 and mon.held == 0
    assert mon.levels()["latency_observations"] == len(stream)
    hit = [a for a in alerts if a.metric == "hit@10"]
    assert hit and all(a.window_end_ms >= change_ts for a in hit), [
        (a.window_end_ms - change_ts, a.message) for a in hit]
    assert all(a.window_start_ms <= a.window_end_ms for a in alerts)


def test_thresholds_per_source():
    """Per-partition windows cross the limit on their own: p1 under the limit does not
    re-arm p0, and p0 staying above raises nothing new."""
    mon = AlertMonitor(AlertConfig(latency_p99_limit_ms=500))
    got = mon.observe_windows([window(0, 900), window(0, 10), window(1, 950), window(1, 900)],
                              sources=["p0", "p1", "p0", "p1"])
    assert [(a.window_start_ms - T0) // 60_000 for a in got] == [0, 1]
    assert "input partition 0" in got[0].message and "input partition 1" in got[1].message
