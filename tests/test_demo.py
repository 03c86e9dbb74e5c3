"""The README's main command at a small size, on the real embedded broker.

Also the exactness proof of issue 5: the stream's aggregate HR/NDCG/MRR over its published
windows equals the offline prequential computation over the same replayed events.
"""

from __future__ import annotations

import threading

import orjson
import pytest

from stream_app.cli import main

pytestmark = [pytest.mark.broker]


def test_demo_json_summary(tmp_path, capsys):
    before = set(threading.enumerate())
    rc = main(["demo", "--events", "4000", "--model", "markov", "--out", str(tmp_path / "demo"),
               "--no-report", "--json"])
    # no thread of the demo is left: its followers (predictions, dead letters, metrics) were
    # stopped before its broker, not left polling it (reconnect logs in later tests' caplog)
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []
    out = capsys.readouterr().out.strip().splitlines()
    summary = orjson.loads(out[-1])
    assert rc == 0
    for key in ("events_in", "predictions_out", "dead_letters", "hr_at_10", "ndcg_at_10",
                "mrr", "events_per_s", "latency_p99_ms"):
        assert key in summary, key
    assert summary["events_in"] == 2000
    assert summary["predictions_out"] == summary["events_in"]
    assert summary["dead_letters"] == 0
    # the sequence-aware model beats most-popular on the same replayed events
    assert summary["hr_at_10"] > summary["baseline_popular"]["hr@10"]
    # online (stream windows) == offline prequential, same events and checkpoint
    assert summary["scored_online"] == summary["scored_offline"] > 0
    for k in ("hr@10", "ndcg@10", "mrr@10"):
        assert summary["online"][k] == pytest.approx(summary["prequential_offline"][k],
                                                     rel=1e-9, abs=1e-12)
    # beyond accuracy: the windows' novelty / ARP / long-tail share equal the offline ones;
    # ILD is there (categories learnt from the stream online, the log's offline)
    beyond = summary["beyond"]
    assert beyond["equal"] is True and beyond["k"] == 10
    assert set(beyond["online"]) == set(beyond["prequential_offline"]) == {
        "novelty@10", "arp@10", "aplt@10", "ild@10"}
    assert 0 < beyond["online"]["ild@10"] <= 1 and beyond["ild_differs_by"] is not None
