"""Smoke test of ``seqstream bench`` at a tiny size: it runs end to end and reports every
figure of its summary. No timing assertions (speed is measured, not tested)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model_core.predictor import SequenceBatch
from stream_app.ops.bench.workload import (
    NoopRecommender,
    catalogue_vocab,
    make_events,
    sequence_rows,
)

KEYS = ("ratio_machinery_vs_faust_ceiling", "ratio_machinery_vs_raw",
        "ratio_model_path_gru4rec", "ratio_model_path_sasrec", "ratio_vs_naive_faust",
        "latency_p99_ms_at_half_load", "state_bytes_per_user")
RUNS = ("raw", "faust_naive", "faust_ceiling", "faust_ceiling_tb", "seqstream_noop",
        "model_gru4rec",
        "model_sasrec", "seqstream_gru4rec", "seqstream_sasrec")


def test_events_are_deterministic_and_in_time_order():
    a, b = make_events(500, 100, seed=3), make_events(500, 100, seed=3)
    assert a == b
    assert all(x.timestamp_ms < y.timestamp_ms for x, y in zip(a, a[1:], strict=False))
    assert len({e.event_id for e in a}) == 500
    vocab = catalogue_vocab(100)
    assert vocab.n_items == 100 and all(vocab.index(e.item_id) > 0 for e in a)


def test_sequence_rows_are_the_last_max_len_events():
    events = make_events(300, 50, seed=1)
    items, actions, ts = sequence_rows(events, catalogue_vocab(50), max_len=5)
    assert len(items) == 300 and max(len(r) for r in items) == 5
    user = events[-1].user_id
    mine = [e for e in events if e.user_id == user][-5:]
    assert ts[-1].tolist() == [e.timestamp_ms for e in mine]


def test_noop_model_is_a_recommender():
    model = NoopRecommender(catalogue_vocab(30), k=20)
    top = model.predict_topk(SequenceBatch([np.array([1, 2], np.int32)] * 3), 20)
    assert top.items.shape == (3, 20) and top.items.min() >= 1
    assert np.allclose(top.action_probs.sum(1), 1.0)
    assert model.score(SequenceBatch([np.array([1], np.int32)])).shape == (1, 31)


@pytest.mark.broker
def test_bench_quick_json(tmp_path, capsys):
    from stream_app.cli import main

    rc = main(["bench", "--quick", "--events", "1500", "--items", "300", "--paced-s", "1",
               "--json", "--work-dir", str(tmp_path)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in KEYS:
        assert key in out, key
        assert isinstance(out[key], (int, float)) and math.isfinite(out[key]), (key, out[key])
        assert out[key] > 0, (key, out[key])
    assert out["state_bytes_per_user"] <= 1024
    for name in RUNS:
        run = out["runs"][name]
        assert run["events_per_s"] > 0, name
        assert run["events"] >= 1500 if not name.startswith("faust_ceiling") else run["events"] > 0
        assert run["peak_rss_mb"] > 10, name
        if not name.startswith("model_"):
            assert run["latency_ms"]["p99"] >= run["latency_ms"]["p50"] > 0, name
            assert run["extra"]["paced_outputs"] == run["extra"]["paced_events"], name


def test_bench_rejects_a_non_positive_paced_rate(capsys):
    from stream_app.cli import main

    assert main(["bench", "--quick", "--paced-rate", "0"]) == 2
    assert "--paced-rate must be a positive rate" in capsys.readouterr().err
