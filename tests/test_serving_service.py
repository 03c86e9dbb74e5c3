"""ServingService in process, without Kafka: states from a store, batching of requests,
the cold-start counts fed by batches, the two model-thread modes, a failing model.

The worker's agent is stood in for by the attributes the service uses (its table's store,
its processor, its hot-swap adapter, its model thread); the states come from the very
BatchProcessor the worker runs, so an answer can be compared with the prediction the stream
made after the same events."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from model_core.datasets.synth import generate
from model_core.models import create_model
from model_core.sequences import build_vocab, group_by_user
from schemas.event import Event
from schemas.exceptions import SchemaError
from schemas.serving import RankRequest
from stream_app.serve.service import ServingService
from stream_app.settings import Settings
from stream_app.worker.processor import BatchProcessor, RawRecord


@pytest.fixture(scope="module")
def trained():
    events = generate(500, seed=4)
    vocab = build_vocab(events)
    model = create_model("markov", vocab)
    model.fit(group_by_user(events, vocab))
    model.version = "markov-test"
    return events, model


def _agent(model, settings: Settings, pseudonyms=None):
    proc = BatchProcessor(model, max_len=settings.max_seq_len, k=settings.top_k,
                          pseudonyms=pseudonyms)
    return SimpleNamespace(
        processor=proc, table=SimpleNamespace(data={}),
        swapper=SimpleNamespace(adapt=lambda st: st), item_encoder=None,
        executor=ThreadPoolExecutor(max_workers=1))


def _process(agent, events) -> list[dict]:
    """The events through the worker's own stages; states written as the agent writes them;
    the published predictions back."""
    now = int(time.time() * 1000)
    recs = [RawRecord(e.user_id.encode(), e.to_json(), "events", 0, i, now)
            for i, e in enumerate(events)]
    states: dict = {}
    out = agent.processor.process(recs, states)
    for user, st in out.result.touched.items():
        agent.table.data[user.encode()] = st.encode()
    return out, [orjson.loads(v) for _, v in out.predictions]


@pytest.mark.parametrize("thread", ["shared", "own"])
def test_answers_equal_the_streams_last_prediction(trained, thread):
    events, model = trained
    settings = Settings(serve_model_thread=thread, serve_batch_size=8)
    agent = _agent(model, settings)
    service = ServingService(agent, settings, served_by="http://me")
    assert (service.executor is agent.executor) is (thread == "shared")
    out, preds = _process(agent, events[:300])
    service.observe_batch(out)
    last = {}
    for p in preds:
        last[p["user_id"]] = p
    users = sorted(last)[:20]
    cands = sorted({e.item_id for e in events[:300]})[:50]

    async def ask():
        # 20 recommendations + 20 ranks + 5 unknown users at once: batched 8 at a time
        return await asyncio.gather(
            *(service.recommend(u, settings.top_k) for u in users),
            *(service.rank(RankRequest(u, cands)) for u in users),
            *(service.recommend(f"new-{i}", 5) for i in range(5)))

    got = asyncio.run(ask())
    recs, ranks, cold = got[:20], got[20:40], got[40:]
    for u, r in zip(users, recs, strict=True):
        assert r.items == last[u]["items"] and r.model_version == "markov-test"
        n = sum(1 for e in events[:300] if e.user_id == u)
        assert r.sequence_length == min(n, settings.max_seq_len) and not r.cold_start
        assert r.served_by == "http://me"
    for r in ranks:
        assert sorted(r.items) == cands and not r.cold_start
        known = [s for s in r.model_scores if s is not None]
        assert known == sorted(known, reverse=True)  # alpha 1: the model's order
    popular = [e.item_id for e in events[:300]]
    top = max(set(popular), key=lambda i: (popular.count(i), -model.vocab.index(i)))
    for r in cold:
        assert r.cold_start and r.sequence_length == 0 and len(r.items) == 5
    # 45 requests queued at once, 8 per batch: 5 batches of known users (one model job
    # each), then the 5 unknown users (no model call)
    assert service.batches == 5
    assert service.requests == 45
    assert top in cold[0].items


def test_cold_start_follows_the_stream(trained):
    events, model = trained
    settings = Settings()
    agent = _agent(model, settings)
    service = ServingService(agent, settings)
    seeded = service.popular.top(3)[0].tolist()  # a counting model: its training counts
    assert seeded
    hot = events[-1].item_id
    burst = [Event(f"hot{i}", f"h{i}", hot, "view", events[0].timestamp_ms) for i in range(5000)]
    service.observe_batch(SimpleNamespace(events=burst))
    r = asyncio.run(service.recommend("nobody", 3))
    assert r.cold_start and r.items[0] == hot


def test_a_failing_model_fails_its_requests_not_the_service(trained):
    events, model = trained
    settings = Settings()
    agent = _agent(model, settings)
    service = ServingService(agent, settings)
    _process(agent, events[:100])
    user = events[0].user_id

    class Broken:
        vocab = model.vocab

        def predict_topk(self, *a, **k):
            raise RuntimeError("boom")

    good = agent.processor.model
    agent.processor.model = Broken()

    async def ask():
        with pytest.raises(RuntimeError, match="boom"):
            await service.recommend(user, 5)
        agent.processor.model = good
        return await service.recommend(user, 5)  # the next batch is served

    assert not asyncio.run(ask()).cold_start


def test_a_state_in_an_old_vocabulary_is_adapted(trained):
    events, model = trained
    settings = Settings()
    agent = _agent(model, settings)
    _process(agent, events[:100])
    seen = []

    def adapt(st):
        seen.append(len(st))
        st.items = np.zeros_like(st.items)  # as ModelSwapper does for an unknown vocabulary
        return st

    agent.swapper.adapt = adapt
    service = ServingService(agent, settings)
    r = asyncio.run(service.recommend(events[0].user_id, 5))
    assert seen and r.sequence_length == seen[0]


def test_pseudonymous_states_are_found_by_the_raw_id(trained):
    from stream_app.worker.privacy import Pseudonyms

    events, model = trained
    settings = Settings()
    agent = _agent(model, settings, pseudonyms=Pseudonyms(b"k" * 32))
    _, preds = _process(agent, events[:100])
    raw = events[0].user_id
    assert raw.encode() not in agent.table.data  # the table holds only pseudonyms
    r = asyncio.run(ServingService(agent, settings).recommend(raw, settings.top_k))
    assert not r.cold_start and r.user_id == raw
    mine = [p for p in preds if p["user_id"] == agent.processor.pseudonyms(raw)]
    assert r.items == mine[-1]["items"]


def test_explain_true_explains_the_first_items(trained):
    events, model = trained
    settings = Settings()
    agent = _agent(model, settings)
    _process(agent, events[:200])
    service = ServingService(agent, settings)
    user = events[0].user_id
    plain = asyncio.run(service.recommend(user, 5))
    why = asyncio.run(service.recommend(user, 5, explain=True))
    assert plain.explanations is None and why.items == plain.items
    assert [x["item"] for x in why.explanations] == why.items[:3]
    assert all(x["method"] == "transition" for x in why.explanations)
    assert all(b["events_ago"] >= 0 for x in why.explanations for b in x["because"])
    from stream_app.serve.views import parse_recommendation_query

    assert parse_recommendation_query({"explain": "true"}, 100, 20)[3] is True
    # rank: the first 3 items of the answer the model knows (the unknown one stays first)
    cands = ["no-such-item"] + plain.items
    doc = {"user_id": user, "items": cands, "scores": list(range(len(cands), 0, -1)),
           "alpha": 0.5}
    ranked = asyncio.run(service.rank(RankRequest.from_dict({**doc, "explain": True})))
    assert asyncio.run(service.rank(RankRequest.from_dict(doc))).explanations is None
    assert ranked.items[0] == "no-such-item" and ranked.model_scores[0] is None
    assert [x["item"] for x in ranked.explanations] == ranked.items[1:4]
    with pytest.raises(SchemaError):
        RankRequest.from_dict({**doc, "explain": "yes"})


# --------------------------------------------------------------------------- the model thread
def test_the_model_thread_runs_a_request_batch_before_the_streams_waiting_parts():
    import threading

    from stream_app.worker.model_thread import ModelThread

    thread = ModelThread("test-model")
    ran: list[str] = []
    gate, running = threading.Event(), threading.Event()
    first = thread.submit(lambda: (running.set(), gate.wait(5), ran.append("part 1")))
    assert running.wait(5)  # part 1 is on the thread; the rest queue behind it
    rest = [thread.submit(ran.append, f"part {i}") for i in (2, 3)]
    urgent = thread.submit_urgent(ran.append, "request batch")
    failing = thread.submit_urgent(lambda: 1 / 0)
    gate.set()
    for f in (first, *rest, urgent):
        f.result(5)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    # the part on the thread finishes; then the request batch, then the stream goes on
    assert ran == ["part 1", "request batch", "part 2", "part 3"]
    thread.shutdown()
    with pytest.raises(RuntimeError):
        thread.submit(ran.append, "late")


def test_the_model_thread_gives_the_stream_its_turn_after_urgent_turns_requests():
    import threading

    from stream_app.worker.model_thread import ModelThread

    thread = ModelThread("test-model", urgent_turns=1)
    ran: list[str] = []
    gate, running = threading.Event(), threading.Event()
    first = thread.submit(lambda: (running.set(), gate.wait(5), ran.append("part 1")))
    assert running.wait(5)
    futures = [thread.submit(ran.append, f"part {i}") for i in (2, 3)]
    futures += [thread.submit_urgent(ran.append, f"request {i}") for i in (1, 2, 3)]
    gate.set()
    for f in (first, *futures):
        f.result(5)
    # while both wait they take turns; requests left alone run back to back
    assert ran == ["part 1", "request 1", "part 2", "request 2", "part 3", "request 3"]
    thread.shutdown()


@pytest.mark.parametrize("name", ["markov", "gru4rec"])
def test_the_streams_model_call_in_parts_equals_one_call(trained, name):
    from stream_app.worker.processor import join_topk

    events, markov = trained
    model = markov if name == "markov" else create_model("gru4rec", markov.vocab, dim=16)
    proc = BatchProcessor(model, k=10)
    now = int(time.time() * 1000)
    recs = [RawRecord(e.user_id.encode(), e.to_json(), "events", 0, i, now)
            for i, e in enumerate(events[:150])]
    parsed, positions, dead = proc.parse(recs)
    step = proc.prepare(recs, parsed, positions, dead, {}).step
    whole = step.predict()
    assert len(proc.predict_parts(step, 0)) == 1 == len(proc.predict_parts(step, 150))
    parts = proc.predict_parts(step, 64)
    assert len(parts) == 3
    joined = join_topk([p() for p in parts])
    np.testing.assert_array_equal(joined.items, whole.items)
    np.testing.assert_allclose(joined.scores, whole.scores, rtol=1e-5, atol=1e-6)
    assert (joined.action_probs is None) is (whole.action_probs is None)
