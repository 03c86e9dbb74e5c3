"""Serving without a broker: the ranking maths, the cold-start counts, the model calls,
request validation, authentication, the query string, the OpenAPI document, the client's
one implementation."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from model_core.predictor import SequenceBatch
from model_core.serving import (
    PopularItems,
    UserSequence,
    blend,
    candidate_scores,
    default_alpha,
    finite_prefix,
    percentile_ranks,
    recommend,
)
from schemas.exceptions import SchemaError
from schemas.json_schema import json_schema
from schemas.serving import SERVING_RECORDS, Ranking, RankRequest, Recommendations
from stream_app.serve.auth import BearerAuth, is_loopback
from stream_app.serve.client import ServingError, _Answer, _rank, _recommendations
from stream_app.serve.openapi import openapi_document
from stream_app.serve.routing import advertised_url, partition_of
from stream_app.serve.views import RequestError, parse_recommendation_query
from stream_app.settings import Settings


# --------------------------------------------------------------------------- ranking maths
@pytest.mark.parametrize("x,want", [
    ([], []),
    ([5.0], [1.0]),
    ([1.0, 3.0, 2.0], [0.0, 1.0, 0.5]),
    ([2.0, 2.0, 1.0, 3.0], [0.5, 0.5, 0.0, 1.0]),  # ties share their mean rank
    ([7.0, 7.0], [0.5, 0.5]),
])
def test_percentile_ranks(x, want):
    np.testing.assert_allclose(percentile_ranks(np.array(x)), want)


def test_blend_model_order_without_caller_scores():
    m = np.array([0.1, 0.9, 0.5])
    order, b = blend(m, None, 1.0)
    assert order.tolist() == [1, 2, 0]
    np.testing.assert_allclose(b, [0.0, 1.0, 0.5])


def test_blend_caller_order_with_alpha_zero_and_mix_in_between():
    m = np.array([3.0, 2.0, 1.0])  # the model: 0 > 1 > 2
    c = np.array([1.0, 2.0, 30.0])  # the caller: 2 > 1 > 0 (scale does not matter)
    assert blend(m, c, 0.0)[0].tolist() == [2, 1, 0]
    assert blend(m, c, 1.0)[0].tolist() == [0, 1, 2]
    order, b = blend(m, c, 0.5)  # percentiles 1,.5,0 and 0,.5,1: all 0.5, input order kept
    np.testing.assert_allclose(b, [0.5, 0.5, 0.5])
    assert order.tolist() == [0, 1, 2]
    order, b = blend(m, c, 0.75)
    np.testing.assert_allclose(b, [0.75, 0.5, 0.25])


def test_blend_unknown_items_keep_the_callers_place():
    m = np.array([np.nan, 0.2, 0.8, np.nan])
    order, b = blend(m, None, 1.0)  # caller order 0 > 1 > 2 > 3 (percentiles 1, 2/3, 1/3, 0)
    np.testing.assert_allclose(b[[0, 3]], [1.0, 0.0])
    np.testing.assert_allclose(b[[1, 2]], [0.0, 1.0])  # the known ones by the model
    assert order.tolist() == [0, 2, 1, 3]
    # all unknown: the caller's scores alone
    assert blend(np.full(3, np.nan), np.array([1.0, 3.0, 2.0]), 1.0)[0].tolist() == [1, 2, 0]


def test_blend_refuses_bad_arguments():
    with pytest.raises(ValueError):
        blend(np.zeros(2), np.zeros(3), 0.5)
    with pytest.raises(ValueError):
        blend(np.zeros(2), None, 1.5)


def test_default_alpha():
    assert default_alpha(False) == 1.0 and default_alpha(True) == 0.5


def test_finite_prefix():
    assert finite_prefix(np.array([3, 2, 1]), np.array([1.0, 0.5, 0.1])) == 3
    assert finite_prefix(np.array([3, 2, 1]), np.array([1.0, -np.inf, -np.inf])) == 1
    assert finite_prefix(np.array([3, 0, 1]), np.array([1.0, 0.5, 0.1])) == 1


# --------------------------------------------------------------------------- popularity
def test_popular_items_count_decay_and_exclude():
    p = PopularItems(5, half_life_events=6)
    p.add(np.array([1, 2, 2, 0, 3]))  # index 0 (unknown) is never counted
    idx, c = p.top(10)
    assert idx.tolist() == [2, 1, 3] and c.tolist() == [2.0, 1.0, 1.0]  # ties: lower index
    p.add(np.array([3, 3]))  # 6 events counted: every count halved
    np.testing.assert_allclose(p.counts, [0, 0.5, 1.0, 1.5, 0])
    assert p.top(2)[0].tolist() == [3, 2]
    assert p.top(5, exclude=np.array([3]))[0].tolist() == [2, 1]
    p.add(np.array([9]))  # an item added to the vocabulary at run time: the array grows
    assert len(p.counts) == 10 and p.counts[9] == 1.0
    np.testing.assert_allclose(p.scores_of(np.array([0, 3, 4, 42])), [np.nan, 1.5, 0.0, 0.0])


def test_popular_items_seeded_from_training_counts():
    p = PopularItems(4, seed=np.array([100.0, 2.0, np.inf, 5.0]))
    assert p.counts.tolist() == [0.0, 2.0, 0.0, 5.0]  # index 0 and non-finite dropped
    assert p.top(1)[0].tolist() == [3]
    assert PopularItems(3).top(5)[0].tolist() == []  # nothing counted: nothing popular


# --------------------------------------------------------------------------- model calls
@pytest.fixture(scope="module")
def models():
    from model_core.datasets.synth import generate
    from model_core.models import create_model
    from model_core.sequences import build_vocab, group_by_user

    events = generate(300, seed=3)
    vocab = build_vocab(events)
    markov = create_model("markov", vocab)
    markov.fit(group_by_user(events, vocab))
    gru = create_model("gru4rec", vocab, dim=16)  # untrained: the calls, not the quality
    return markov, gru


def _rows(n_items: int) -> list[UserSequence]:
    rng = np.random.default_rng(0)
    out = []
    for n in (1, 4, 9):
        out.append(UserSequence(rng.integers(1, n_items + 1, n).astype(np.int32),
                                np.zeros(n, np.uint8), np.arange(n, dtype=np.int64) * 1000))
    return out


@pytest.mark.parametrize("which", [0, 1])
def test_recommend_is_the_streams_predict_topk(models, which):
    model = models[which]
    rows = _rows(model.vocab.n_items)
    got = recommend(model, rows, 5, exclude_seen=False)
    want = model.predict_topk(SequenceBatch([r.items for r in rows], [r.actions for r in rows],
                                            [r.timestamps_ms for r in rows]), 5)
    np.testing.assert_array_equal(got.items, want.items)
    seen = recommend(model, rows, 5, exclude_seen=True)
    for r, items in zip(rows, seen.items, strict=True):
        assert not set(items.tolist()) & set(r.items.tolist())


@pytest.fixture(scope="module")
def all_models(models):
    """One of each model kind the candidate path knows (trained where counts matter), and
    one it does not (session-kNN: the full-catalogue fallback)."""
    import torch

    from model_core.datasets.synth import generate
    from model_core.models import create_model
    from model_core.sequences import group_by_user

    markov, gru = models
    vocab = markov.vocab
    data = group_by_user(generate(300, seed=3), vocab)
    out = {"markov": markov, "gru4rec": gru}
    for name in ("popular", "itemknn", "sknn"):
        out[name] = create_model(name, vocab).fit(data)
    out["sasrec"] = create_model("sasrec", vocab, dim=16)
    biased = create_model("gru4rec", vocab, dim=16, bias=True)
    with torch.no_grad():  # a bias that is not zero, so that leaving it out shows
        biased.module.out_bias.uniform_(-1.0, 1.0)
    out["gru4rec+bias"] = biased
    counted = create_model("sasrec", vocab, dim=16, transitions=True)
    counted.module.transitions.fit(data.items, vocab.n_items)
    counted.module.transitions.weight.fill_(2.0)
    out["sasrec+transitions"] = counted
    return out


@pytest.mark.parametrize("name", ["markov", "gru4rec", "gru4rec+bias", "sasrec", "popular",
                                  "itemknn", "sknn", "sasrec+transitions"])
def test_candidate_scores_equal_the_full_scores_at_the_candidates(all_models, name,
                                                                   monkeypatch):
    from model_core.models.base import _RecommenderBase

    model = all_models[name]
    rows = _rows(model.vocab.n_items)
    full = model.score(SequenceBatch([r.items for r in rows], [r.actions for r in rows],
                                     [r.timestamps_ms for r in rows]))
    n = model.vocab.n_items
    many = np.random.default_rng(1).integers(1, n + 1, 40)
    # repeats, an unknown item (0) and one past the vocabulary (n + 1) among them
    cands = [np.array([1, 0, 3, 3, n + 1]), many, np.array([0, 0])]
    default = type(model).score_candidates is _RecommenderBase.score_candidates
    assert default is (name == "sknn")  # session-kNN: the full scores, gathered
    if name != "sknn":  # the candidates only: the full-catalogue call is never made
        monkeypatch.setattr(model, "score", lambda batch: pytest.fail("full scores"))
    got = candidate_scores(model, rows, cands)
    tol = dict(rtol=1e-5, atol=1e-5) if "gru" in name or "sasrec" in name else dict(rtol=0)
    np.testing.assert_allclose(got[0][[0, 2, 3]], full[0, [1, 3, 3]], **tol)
    assert np.isnan(got[0][[1, 4]]).all() and np.isnan(got[2]).all()
    np.testing.assert_allclose(got[1], full[1, many], **tol)
    assert candidate_scores(model, [], []) == []


# --------------------------------------------------------------------------- requests
def test_rank_request_accepts_a_good_body():
    r = RankRequest.from_dict({"user_id": "u", "items": ["a", "b"], "scores": [1, 2.5],
                               "alpha": 1})
    assert r == RankRequest("u", ["a", "b"], [1.0, 2.5], 1.0)
    assert RankRequest.from_dict({"user_id": "u", "items": []}).items == []


@pytest.mark.parametrize("doc,field", [
    ({"items": ["a"]}, "user_id"),
    ({"user_id": "", "items": ["a"]}, "user_id"),
    ({"user_id": 5, "items": ["a"]}, "user_id"),
    ({"user_id": "\x00x", "items": ["a"]}, "user_id"),
    ({"user_id": "u" * 1000, "items": ["a"]}, "user_id"),
    ({"user_id": "u"}, "items"),
    ({"user_id": "u", "items": ["a", ""]}, "items"),
    ({"user_id": "u", "items": ["a"] * 11}, "items"),
    ({"user_id": "u", "items": ["a"], "scores": ["x"]}, "scores"),
    ({"user_id": "u", "items": ["a"], "scores": [float("nan")]}, "scores"),
    ({"user_id": "u", "items": ["a"], "scores": [True]}, "scores"),
    ({"user_id": "u", "items": ["a"], "alpha": -0.1}, "alpha"),
    ({"user_id": "u", "items": ["a"], "alpha": "1"}, "alpha"),
    ({"user_id": "u", "items": ["a"], "k": 1}, "k"),
])
def test_rank_request_names_the_bad_field(doc, field):
    with pytest.raises(SchemaError) as e:
        RankRequest.from_dict(doc, max_items=10)
    assert e.value.field == field and e.value.reason


def test_recommendation_query():
    assert parse_recommendation_query({}, 50, 20) == (20, False, False, False)
    assert parse_recommendation_query({}, 10, 20) == (10, False, False, False)
    assert parse_recommendation_query({"k": "3", "exclude_seen": "TRUE", "actions": "1",
                                       "explain": "true"}, 50, 20) == (3, True, True, True)
    for q, field in (({"k": "51"}, "k"), ({"k": "-1"}, "k"), ({"k": "1.5"}, "k"),
                     ({"actions": "y"}, "actions"), ({"top": "1"}, "top")):
        with pytest.raises(RequestError) as e:
            parse_recommendation_query(q, 50, 20)
        assert e.value.status == 400 and e.value.field == field


# --------------------------------------------------------------------------- auth
@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                       ("127.0.0.2", True), ("0.0.0.0", False),
                                       ("10.0.0.3", False), ("worker-0", False)])
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


def test_auth_with_a_token():
    a = BearerAuth("tok", "0.0.0.0")
    assert a.check("Bearer tok") is None and a.check("bearer tok") is None
    for header in (None, "", "Bearer", "Bearer tok2", "Basic tok", "tok"):
        denied = a.check(header)
        assert denied is not None and denied.status == 401
    assert "require" in a.describe()


def test_auth_without_a_token_only_on_loopback():
    assert BearerAuth(None, "127.0.0.1").check(None) is None
    assert "loopback" in BearerAuth(None, "127.0.0.1").describe()
    denied = BearerAuth(None, "0.0.0.0").check("Bearer anything")
    assert denied is not None and denied.status == 403 and "SEQSTREAM_SERVE_TOKEN" in denied.reason
    assert "refuse" in BearerAuth(None, "0.0.0.0").describe()
    assert BearerAuth.from_settings(Settings(serve_token="x", web_host="0.0.0.0")).check(
        "Bearer x") is None


# --------------------------------------------------------------------------- routing
def test_partition_of_is_the_producers_partitioner():
    from aiokafka.partitioner import murmur2

    for u in ("u1", "user-42", "ü"):
        assert partition_of(u, 4) == (murmur2(u.encode()) & 0x7FFFFFFF) % 4


def test_advertised_url():
    assert advertised_url(Settings(web_host="127.0.0.1", web_port=7000)) == "http://127.0.0.1:7000"
    assert advertised_url(Settings(web_advertised_url="http://w-0.svc:6066/")) == \
        "http://w-0.svc:6066"
    import socket
    assert advertised_url(Settings(web_host="0.0.0.0", web_port=1)) == \
        f"http://{socket.getfqdn()}:1"


# --------------------------------------------------------------------------- schemas, docs
def test_serving_records_have_json_schemas_and_the_openapi_document_uses_them():
    doc = openapi_document(Settings(serve_max_candidates=77))
    for name, cls in SERVING_RECORDS.items():
        schema = json_schema(cls)
        assert doc["components"]["schemas"][name]["properties"] == schema["properties"]
    rank = doc["paths"]["/v1/rank"]["post"]
    assert rank["requestBody"]["content"]["application/json"]["schema"]["allOf"][1] == \
        {"properties": {"items": {"maxItems": 77}}}
    assert set(json_schema(Ranking)["required"]) >= {"items", "scores", "model_scores"}
    orjson.dumps(doc)


# --------------------------------------------------------------------------- client
def _drive(call, status: int, body: bytes):
    req = next(call)
    try:
        call.send(_Answer(status, body))
    except StopIteration as done:
        return req, done.value
    raise AssertionError("no answer")


def test_client_calls_build_requests_and_decode_answers():
    rec = Recommendations("u 1", ["a"], [1.0], {}, "v1", 3, False, True, "http://w")
    req, got = _drive(_recommendations("u 1/x", 5, True, False), 200, orjson.dumps(rec))
    assert req.method == "GET" and req.body is None
    assert req.path == "/v1/users/u%201%2Fx/recommendations?exclude_seen=true&actions=false&k=5"
    assert got == rec
    ranking = Ranking("u", ["b", "a"], [1.0, 0.0], [0.2, None], "v1", 1, False, 1.0, "")
    req, got = _drive(_rank("u", ["a", "b"], [1, 2], 0.3), 200, orjson.dumps(ranking))
    assert req.method == "POST" and orjson.loads(req.body) == {
        "user_id": "u", "items": ["a", "b"], "scores": [1.0, 2.0], "alpha": 0.3}
    assert got == ranking


def test_client_raises_the_servers_error_line():
    with pytest.raises(ServingError) as e:
        _drive(_rank("u", [], None, None), 400,
               b'{"error": "items: expected a list", "status": 400, "field": "items"}')
    assert e.value.status == 400 and e.value.field == "items" and "items" in str(e.value)
    with pytest.raises(ServingError) as e:
        _drive(_recommendations("u", None, False, False), 502, b"<html>bad gateway</html>")
    assert e.value.status == 502 and "bad gateway" in e.value.error


# --------------------------------------------------------------------------- the benchmark's summary
def test_serving_bench_summary_takes_the_worst_per_thread_mode():
    from stream_app.ops.bench_serving import (
        ModelResult,
        ServingBenchConfig,
        format_table,
        summarise,
    )

    def phases(alone, rec, rank):
        return {"stream_only": {"stream_events_per_s": alone},
                "recommendations": {"stream_events_per_s": rec[0], "requests_per_s": rec[1],
                                    "latency_ms": {"p50": 1.0, "p99": rec[2]}, "errors": {}},
                "rank": {"stream_events_per_s": rank[0], "requests_per_s": rank[1],
                         "latency_ms": {"p50": 2.0, "p99": rank[2]}, "errors": {"503": 1}}}

    results = {
        "gru4rec/shared": ModelResult("gru4rec", "shared", 2000, 1000,
                                      phases(1000, (900, 199, 30.0), (950, 200, 40.0))),
        "sasrec/shared": ModelResult("sasrec", "shared", 1000, 500,
                                     phases(500, (500, 200, 10.0), (400, 198, 12.0))),
        "gru4rec/own": ModelResult("gru4rec", "own", 2000, 1000,
                                   phases(1000, (990, 200, 8.0), (980, 200, 9.0))),
    }
    s = summarise(ServingBenchConfig(threads=("shared", "own")), {"requests_per_s": 9000.0},
                  results, 60.0, (1.0, 1.0, 1.0))
    shared = s["by_thread"]["shared"]
    assert shared == {"rank_p99_ms": 40.0, "recommend_p99_ms": 30.0, "requests_per_s": 198,
                      "stream_events_ratio": 0.8}
    assert s["by_thread"]["own"]["stream_events_ratio"] == 0.98
    assert s["rank_p99_ms"] == s["by_thread"][s["serve_model_thread"]]["rank_p99_ms"]
    assert s["aiohttp_baseline_requests_per_s"] == 9000.0
    assert s["models"]["sasrec/shared"]["phases"]["rank"]["stream_events_ratio"] == 0.8
    table = format_table(s)
    assert "sasrec/shared" in table and "{'503': 1}" in table


def test_server_timing_and_the_latency_profile():
    import time

    from stream_app.ops.bench_serving import latency_profile, parse_server_timing
    from stream_app.serve.views import server_timing

    header = server_timing({"queue": 1.5, "model": 2.25}, time.perf_counter() - 0.004)
    got = parse_server_timing(header)
    assert got["queue"] == 1.5 and got["model"] == 2.25 and 4.0 <= got["app"] < 1000
    assert parse_server_timing(None) == {} and parse_server_timing("x;desc=y") == {}
    prof = latency_profile([0.010, 0.020], [{"queue": 1.0, "model": 2.0, "app": 4.0}, {}])
    assert prof["app"]["p99"] == 4.0 and prof["outside"]["p99"] == 6.0
    assert latency_profile([0.01], [{}]) == {}


def test_loop_lag_probe_and_the_bucket_percentile_of_two_scrapes():
    import asyncio
    import time

    from stream_app.observe.loop_lag import LoopLag
    from stream_app.observe.prometheus import WorkerMetrics
    from stream_app.ops.bench_serving import bucket_percentile_ms

    metrics = WorkerMetrics()
    probe = LoopLag(interval_s=0.001, sink=metrics.loop_lag.observe_many, flush_every=5)

    async def busy_loop():
        task = asyncio.ensure_future(probe.run())
        for _ in range(12):
            await asyncio.sleep(0.002)
            time.sleep(0.03)  # the loop held: the probe wakes >= ~30 ms late
        task.cancel()

    asyncio.run(busy_loop())
    assert probe.percentiles_ms()["max"] >= 20.0 and metrics.loop_lag.count >= 5
    assert b"seqstream_event_loop_lag_seconds_bucket" in metrics.render()
    before = {0.005: 10.0, 0.025: 10.0, 0.1: 10.0, float("inf"): 10.0}
    after = {0.005: 90.0, 0.025: 108.0, 0.1: 110.0, float("inf"): 110.0}
    assert bucket_percentile_ms(before, after, 50) == 5.0
    assert bucket_percentile_ms(before, after, 99) == 100.0
    assert bucket_percentile_ms(after, after, 99) is None
