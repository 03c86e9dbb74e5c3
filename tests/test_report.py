"""The static report: PNG plots + index.html from windows and alerts (no Kafka)."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from model_core.datasets.synth import generate
from model_core.evaluate import item_category_table
from model_core.models import create_model
from model_core.prequential import PrequentialEngine
from model_core.sequences import build_vocab, group_by_user
from schemas import Alert, MetricsWindow
from stream_app.cli import main
from stream_app.observe.alerts import AlertConfig, AlertMonitor
from stream_app.observe.report import (
    decode_messages,
    latest_per_key,
    load_alerts_jsonl,
    load_windows_jsonl,
    save_windows_jsonl,
    write_report,
)
from stream_app.windows.aggregation import WindowAggregator, aggregate_beyond, aggregate_windows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_with_change():
    """A prequential run over a log whose transitions change mid-way: windows + alerts."""
    n = 8000
    events = generate(n, seed=0, change_at=0.6)
    train, stream = events[: int(0.3 * n)], events[int(0.3 * n):]
    vocab = build_vocab(events)
    model = create_model("markov", vocab)
    model.fit(group_by_user(train, vocab))
    engine = PrequentialEngine(model, k=20)
    cats = item_category_table(model, {e.item_id: e.category_id for e in events})
    agg = WindowAggregator(window_s=600, n_items=vocab.n_items, model_version=model.version,
                           item_counts=model.item_counts, item_categories=cats)
    mon = AlertMonitor(AlertConfig(latency_p99_limit_ms=400), model.version)
    rng = np.random.default_rng(0)
    states: dict = {}
    windows: list[MetricsWindow] = []
    alerts: list[Alert] = []
    wall = 0
    for i in range(0, len(stream), 200):
        batch = stream[i:i + 200]
        result = engine.process(batch, states)
        lat = list(rng.gamma(2, 20, len(batch)) + (400 if 3000 <= i < 3400 else 0))
        wall += 150
        agg.add_batch(batch, result, lat, wall)
        agg.add_dead_letters(i % 3, wall)
        alerts += mon.observe_batch(batch, result, lat, wall)
        closed = agg.close_until(wall)
        windows += closed
        alerts += mon.observe_windows(closed)
    closed = agg.flush(wall)
    windows += closed
    alerts += mon.observe_windows(closed)
    return windows, alerts


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC
    return struct.unpack(">II", head[16:24])


def test_write_report(run_with_change, tmp_path):
    windows, alerts = run_with_change
    assert {a.metric for a in alerts} >= {"hit@10", "latency_p99_ms"}
    index = write_report(windows, alerts, tmp_path / "rep")
    assert index == tmp_path / "rep" / "index.html"
    page = index.read_text()
    for name in ("quality.png", "latency.png", "throughput.png"):
        path = tmp_path / "rep" / name
        assert f'src="{name}"' in page
        assert path.stat().st_size <= 100_000, (name, path.stat().st_size)
        w, h = png_size(path)
        assert 600 <= w <= 1200 and 250 <= h <= 600
    for a in alerts:
        assert a.metric in page
    assert "fell from" in page and f"Alerts ({len(alerts)})" in page
    total = aggregate_windows(windows)
    assert f"{total['hr@10']:.4f}" in page and f"{total['mrr@10']:.4f}" in page
    beyond = aggregate_beyond(windows)
    for key, label in (("novelty@10", "novelty @10"), ("ild@20", "ILD (categories) @20")):
        assert f"<th>{label}</th><td>{beyond[key]:.4f}</td>" in page
    assert f"windows (newest {windows[-1].beyond['gini@10']:.4f})" in page
    assert f"{sum(w.events for w in windows):,}" in page


def test_report_merges_partitions_and_repeats(tmp_path):
    def w(start, events, hr, part_version="m", key=None):
        return MetricsWindow(window_start_ms=start, window_end_ms=start + 60_000,
                             events=events, scored=events, metrics={"hr@10": hr},
                             latency_p50_ms=5.0, latency_p95_ms=9.0, latency_p99_ms=10.0,
                             model_version=part_version)

    t0 = 1_704_067_200_000
    pairs = [(b"tumbling/0/p0", w(t0, 10, 0.0)),  # replaced by the re-published record
             (b"tumbling/0/p1", w(t0, 30, 0.5)),
             (b"tumbling/0/p0", w(t0, 10, 1.0)),
             (None, w(t0 + 60_000, 5, 0.2))]
    ws = latest_per_key(pairs)
    assert len(ws) == 3 and ws[0].metrics["hr@10"] == 1.0
    path = tmp_path / "m.jsonl"
    assert save_windows_jsonl(pairs, path) == 4
    with path.open("ab") as f:
        f.write(b"{not json\n[1, 2]\n\n")
    loaded = load_windows_jsonl(path)
    assert loaded.rejected == 2 and len(loaded.reasons) == 2
    assert loaded.records == ws
    index = write_report(loaded.records, [], tmp_path / "r")
    page = index.read_text()
    assert "2 tumbling" in page and "No alerts." in page
    # merged first window: (10 * 1.0 + 30 * 0.5) / 40, then 0.2 over 5: (25 + 1) / 45
    assert f"{26 / 45:.4f}" in page


def test_decode_messages_counts_bad_values():
    good = MetricsWindow(window_start_ms=0, window_end_ms=1).to_json()
    msgs = [SimpleNamespace(key=b"k", value=good, topic="t", offset=0),
            SimpleNamespace(key=None, value=b"\xff", topic="t", offset=1)]
    pairs, res = decode_messages(msgs, MetricsWindow)
    assert len(pairs) == 1 and pairs[0][0] == b"k" and res.rejected == 1


def test_report_command_from_jsonl(run_with_change, tmp_path, capsys):
    windows, alerts = run_with_change
    mpath, apath = tmp_path / "metrics.jsonl", tmp_path / "alerts.jsonl"
    save_windows_jsonl([(None, w) for w in windows], mpath)
    apath.write_bytes(b"".join(a.to_json() + b"\n" for a in alerts) + b"oops\n")
    assert len(load_alerts_jsonl(apath).records) == len(alerts)
    rc = main(["report", "--out", str(tmp_path / "out"), "--from-jsonl", str(mpath),
               "--alerts-jsonl", str(apath)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert (tmp_path / "out" / "index.html").exists() and (tmp_path / "out" / "quality.png").exists()
    assert f"{len(windows)} windows, {len(alerts)} alerts, 1 bad records skipped" in out
    # nothing to report: a clear error, not a traceback
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert main(["report", "--out", str(tmp_path / "o2"), "--from-jsonl", str(empty)]) == 2
    assert "no tumbling windows to report" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "o3"), "--from-jsonl",
                 str(tmp_path / "missing.jsonl")]) == 2


def test_alert_json_lines_round_trip(run_with_change):
    _, alerts = run_with_change
    for a in alerts:
        assert Alert.from_json(orjson.dumps(orjson.loads(a.to_json()))) == a


# --------------------------------------------------------------------------- seqstream top
def test_top_once_from_jsonl(run_with_change, tmp_path, capsys, monkeypatch):
    windows, alerts = run_with_change
    mpath, apath = tmp_path / "metrics.jsonl", tmp_path / "alerts.jsonl"
    save_windows_jsonl([(None, w) for w in windows], mpath)
    apath.write_bytes(b"".join(a.to_json() + b"\n" for a in alerts))
    monkeypatch.setenv("COLUMNS", "220")
    rc = main(["top", "--once", "--rows", "4", "--from-jsonl", str(mpath),
               "--alerts-jsonl", str(apath)])
    out = capsys.readouterr().out
    assert rc == 0
    ws = sorted(windows, key=lambda w: w.window_start_ms)
    assert f"{len(windows)} tumbling windows" in out
    assert "HR@10" in out and "p99 ms" in out and f"alerts ({len(alerts)})" in out
    assert "ILD@10" in out and "Gini@10" in out and "nov@10" in out
    last = ws[-1]
    from stream_app.commands.top import _t

    assert _t(last.window_end_ms, date=True) in out
    assert _t(ws[-5].window_end_ms, date=True) not in out  # only the newest 4 rows
    assert f"{last.metrics['hr@10']:.3f}" in out
    assert "fell from" in out


@pytest.mark.parametrize("width", [80, 120])
def test_top_fits_the_terminal_with_whole_values(run_with_change, width):
    """At 80 and 120 columns no line is wider, and the figures are printed whole (not 0.…)."""
    from rich.console import Console

    from stream_app.commands.top import render_frame

    windows, alerts = run_with_change
    console = Console(width=width, record=True)
    console.print(render_frame(windows, alerts, rows=5, source="metrics.jsonl", width=width))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= width
    assert "…" not in text
    last = max(windows, key=lambda w: w.window_start_ms)
    for col in ("events", "HR@10", "NDCG@10", "dead", "p99 ms"):
        assert col in text
    assert f"{last.metrics['hr@10']:.3f}" in text
    beyond = aggregate_beyond(windows)
    assert (f"beyond@10: novelty {beyond['novelty@10']:.2f}" in text
            and f"ILD {beyond['ild@10']:.3f}" in text
            and f"Gini {last.beyond['gini@10']:.3f} (newest)" in text)
    if width == 80:
        assert "ILD@10" not in text  # the beyond columns are the first to go


def test_top_state_keeps_latest_per_key_and_counts_bad_records():
    from stream_app.commands.top import TopState, render_frame

    st = TopState(max_alerts=2)
    w1 = MetricsWindow(window_start_ms=0, window_end_ms=60_000, events=1)
    w2 = MetricsWindow(window_start_ms=0, window_end_ms=60_000, events=7)
    st.add_window_message(b"tumbling/0/p0", w1.to_json())
    st.add_window_message(b"tumbling/0/p0", w2.to_json())
    st.add_window_message(None, b"garbage")
    for i in range(3):
        st.add_alert_message(Alert("hit@10", "drift", "adwin", 0.5, 0.2, 0, i, f"m{i}").to_json())
    assert [w.events for w in st.windows()] == [7] and st.rejected == 1
    assert [a.message for a in st.alerts] == ["m1", "m2"]
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render_frame([], [], rows=3))
    text = console.export_text()
    assert "no closed window yet" in text and "no alerts" in text


@pytest.mark.parametrize("width_s, n", [(600, 22), (1, 200), (86_400, 50), (60, 1)])
def test_report_time_axes_for_any_range(tmp_path, width_s, n):
    """Every span of event time gets date ticks (a matplotlib warning is an error here)."""
    t0 = 1_704_067_200_000
    ws = [MetricsWindow(window_start_ms=t0 + i * width_s * 1000,
                        window_end_ms=t0 + (i + 1) * width_s * 1000, events=3, scored=3,
                        metrics={"hr@10": 0.5}, latency_p50_ms=1.0, latency_p95_ms=2.0,
                        latency_p99_ms=3.0, events_per_s=10.0) for i in range(n)]
    alert = Alert("hit@10", "drift", "adwin", 0.5, 0.2, t0, t0 + width_s * 500, "m",
                  direction="down")
    assert write_report(ws, [alert], tmp_path).exists()


def test_write_report_takes_dicts_and_json(run_with_change, tmp_path):
    """The demo hands over alerts as decoded JSON dicts; bad records are left out."""
    windows, alerts = run_with_change
    index = write_report([w.to_json() for w in windows] + [b"junk"],
                         [orjson.loads(a.to_json()) for a in alerts] + [{"metric": 1}],
                         tmp_path)
    page = index.read_text()
    assert f"Alerts ({len(alerts)})" in page and "fell from" in page


def test_top_and_report_give_gini_per_partition(run_with_change, tmp_path):
    """A Gini is not merged: with two partitions' windows, top gives the newest range's
    partition Ginis and the report their range, while the means stay exact."""
    from dataclasses import replace

    from rich.console import Console

    from stream_app.commands.top import render_frame

    windows, _ = run_with_change
    other = [replace(w, beyond={**w.beyond, "gini@10": w.beyond["gini@10"] / 2})
             for w in windows]
    console = Console(width=100, record=True)
    console.print(render_frame(windows + other, [], rows=3, width=100))
    text = console.export_text()
    g = windows[-1].beyond["gini@10"]
    assert f"Gini {g / 2:.3f}-{g:.3f} (newest, 2 parts)" in text
    beyond = aggregate_beyond(windows)
    assert f"novelty {beyond['novelty@10']:.2f}" in text  # the same lists twice: same mean
    page = write_report(windows + other, [], tmp_path / "r").read_text()
    ginis = [w.beyond["gini@10"] for w in windows + other]
    assert f"{min(ginis):.4f} – {max(ginis):.4f} over {len(ginis)} windows" in page
