"""What `evaluate` and `compare` report beyond HR/NDCG (issue 20): ILD from the log's item
categories, per-segment figures printed with intervals, cost, and the sliding-window test of
prequential runs; every printed line within 80 columns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_core.cost import measure_phase
from model_core.datasets.synth import generate, write_jsonl
from schemas import Event

T0 = 1_704_067_200_000


def _hand_log(tmp_path, with_categories: bool):
    """4 users, each ``d a a a a b b b c c d d`` (one second apart): LOO holds out ``d``
    twice, so ``popular`` ranks a (16 training events) > b (12) > c (8) > d (4) for every
    case.
    Categories: a, b -> x; c -> y; d none."""
    cat = {"a": "x", "b": "x", "c": "y"} if with_categories else {}
    events = []
    for u in range(4):
        for j, item in enumerate("daaaabbbccdd"):
            events.append(Event(f"e{u}-{j}", f"u{u}", item, "view", T0 + (u * 100 + j) * 1000,
                                category_id=cat.get(item)))
    p = tmp_path / ("cats.jsonl" if with_categories else "plain.jsonl")
    write_jsonl(events, p)
    return p


def _run(capsys, argv) -> tuple[list[str], dict]:
    from stream_app.cli import main

    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return out[:-1], json.loads(out[-1])


def test_ild_from_the_logs_categories_and_segments_printed(tmp_path, capsys):
    base = ["evaluate", "--format", "jsonl", "--model", "popular", "--protocol", "loo",
            "--ks", "2,3", "--bootstrap", "20", "--json"]
    printed, d = _run(capsys, base + ["--data", str(_hand_log(tmp_path, True))])
    # every list is [a, b, c]: @2 both x -> 0; @3 pairs ab same, ac and bc differ -> 2/3
    assert d["metrics"]["ild@2"] == 0.0
    assert d["metrics"]["ild@3"] == pytest.approx(2 / 3)
    assert all(len(line) <= 80 for line in printed)
    text = "\n".join(printed)
    assert "ILD 0.667" in text and "per segment @3 (95% CI)" in text
    # the segment rows carry the figures of extra.segments, with their intervals
    view = d["extra"]["segments"]["action"]["view"]
    row = next(line for line in printed if line.startswith("action view"))
    assert str(view["n"]) in row and f"{view['hr@3']['mean']:.4f} [" in row
    # a log without categories: no ild, and the printout says why
    printed, d = _run(capsys, base + ["--data", str(_hand_log(tmp_path, False))])
    assert not any(k.startswith("ild@") for k in d["metrics"])
    assert "ILD - (no item categories)" in "\n".join(printed)


def test_cost_is_measured_per_phase():
    with measure_phase() as idle:
        pass
    with measure_phase() as big:
        block = np.ones(100 * 2**20 // 8)  # 100 MiB, touched
        block.sum()
    del block
    assert big.seconds > 0 and big.cpu_seconds >= 0
    if big.method == "vmhwm":  # the kernel's peak was reset at each phase's start
        assert big.peak_rss_mib - idle.peak_rss_mib > 90
    else:
        assert big.peak_rss_mib >= idle.peak_rss_mib


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "synth.jsonl"
    write_jsonl(generate(3000, seed=2), p)
    return p


def test_prequential_compare_has_the_sliding_window_test_and_cost(synth_file, capsys):
    printed, d = _run(capsys, ["compare", "popular", "markov", "--data", str(synth_file),
                               "--protocol", "prequential", "--ks", "10", "--bootstrap", "50",
                               "--json"])
    assert all(len(line) <= 80 for line in printed)
    w = d["paired_windows"]["hr@10"]
    # the test pairs the two results' own per-window series
    a_win = d["a"]["extra"]["windows"]["hr@10"]
    b_win = d["b"]["extra"]["windows"]["hr@10"]
    assert w["a_windows"] == pytest.approx(a_win) and w["b_windows"] == pytest.approx(b_win)
    assert w["windows"] == 20 and w["mean_diff"] == pytest.approx(np.mean(a_win) - np.mean(b_win))
    assert w["windows_b_better"] > w["windows_a_better"] and w["ci_high"] < 0
    assert any("sliding-window test, 20 windows" in line for line in printed)
    for side in ("a", "b"):
        c = d[side]["cost"]
        assert c["trained_here"] and c["train_s"] > 0 and c["eval_s"] > 0
        assert c["eval_events"] == d[side]["extra"]["events"] and c["eval_events_per_s"] > 0
        assert c["eval_peak_rss_mib"] > 0 and c["peak_rss_method"] in ("vmhwm", "ru_maxrss")
        assert {"novelty@10", "arp@10", "aplt@10", "gini@10", "ild@10"} <= set(d[side]["metrics"])
    assert any(line.startswith("cost (peak RSS") for line in printed)
    # prequential runs have segments too: every scored event in one bucket per segmentation
    seg = d["b"]["extra"]["segments"]
    for name in ("history", "popularity", "action"):
        assert sum(g["n"] for g in seg[name].values()) == d["b"]["n_test_cases"]
