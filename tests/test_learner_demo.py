"""``seqstream demo --learn``: one worker and one learner in lockstep give the offline
replay's figures exactly — new items joining, old ones evicted from a bounded item table —
and the learner's new items are recommended and hit."""

from __future__ import annotations

import orjson
import pytest

from stream_app.ops.demo import DemoOptions, run_demo


@pytest.mark.broker
def test_demo_learn_online_equals_offline(tmp_path):
    # a bounded item table: new items take the slots of items not seen for long, so the
    # worker's states must map the reused slots to 0 as the offline replay does
    s = run_demo(DemoOptions(events=1600, learn="every=200,max_items=100", model="markov",
                             seed=3, out_dir=str(tmp_path), live=False, report=False),
                 say=lambda *_a: None)
    assert s["predictions_out"] == s["events_in"] == 800
    assert s["versions_published"] == s["versions_offline"] == 4
    assert s["prediction_versions"] == 4  # the start version and u1..u3 scored events
    assert s["online_equals_offline"] and s["online_offline_max_abs_diff"] <= 1e-12
    assert s["scored_online"] == s["scored_offline"] > 600
    for key in ("hr@20", "ndcg@20", "mrr@20"):
        assert s["online"][key] == pytest.approx(s["prequential_offline"][key], abs=1e-12)
    # items born after training are learned and hit; the frozen model cannot name them
    assert s["online"]["new_item_hits"] == s["prequential_offline"]["new_item_hits"] > 0
    assert s["frozen"]["new_item_hits"] == 0
    assert s["online"]["hr@20"] > s["frozen"]["hr@20"]
    assert s["learner_offline"]["vocab_size"] == 100
    evicted = [slot for meta in (tmp_path / "versions").glob("*/meta.json")
               for slot in orjson.loads(meta.read_bytes())["learner"]["evicted"]]
    assert len(evicted) > 20


@pytest.mark.broker
def test_demo_learn_gated_online_equals_offline(tmp_path):
    # margin 0 on the drifting log with a bounded table: the gate refuses some versions (a
    # seeded log and a counting model, so the same ones every run); the worker keeps the
    # served version for their events, as the offline replay does
    s = run_demo(DemoOptions(events=1600, learn="every=100,max_items=80,gate=100,margin=0",
                             model="markov", seed=3, out_dir=str(tmp_path), live=False,
                             report=False), say=lambda *_a: None)
    refused = {p.name.removesuffix(".json")
               for p in (tmp_path / "versions" / ".refused").glob("*.json")}
    assert s["versions_refused"]["online"] == s["versions_refused"]["prequential_offline"] \
        == len(refused) >= 1
    assert s["versions_published"] == s["versions_offline"]
    assert s["versions_published"] + len(refused) == 800 // 100 - 1  # the last is not judged
    assert s["prediction_versions"] == s["versions_published"] + 1  # never a refused one
    assert s["online_equals_offline"] and s["online_offline_max_abs_diff"] <= 1e-12
    assert s["scored_online"] == s["scored_offline"] > 600
    for key in ("hr@20", "ndcg@20", "mrr@20", "new_item_hits"):
        assert s["online"][key] == pytest.approx(s["prequential_offline"][key], abs=1e-12)
