"""Serving against two real workers on the embedded broker: any worker answers any user
(routing), an answer reflects every processed event (read-your-writes), bad requests get a
JSON 4xx, the bearer token is required, an unknown user gets the cold-start answer.

One pair of workers for the module (joining a group takes seconds); each test uses its own
users."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest

from model_core.datasets.synth import generate
from schemas.event import Event
from stream_app.kafka.broker import free_port
from stream_app.kafka.replay import replay_events
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.serve.client import AsyncClient, Client, ServingError
from stream_app.serve.routing import partition_of
from stream_app.settings import load_settings
from stream_app.worker.process import WorkerProcess

pytestmark = [pytest.mark.broker]

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def cluster(broker, tmp_path_factory, markov_checkpoint):
    tmp = tmp_path_factory.mktemp("serving")
    events = generate(600, seed=6)
    markov_checkpoint(events, tmp / "model")
    tag = f"srv{uuid.uuid4().hex[:6]}"
    base = load_settings(broker_url=broker.url, topic_prefix=f"{tag}.", app_id=tag,
                         model_path=str(tmp / "model"), partitions=4, idle_close_s=1.0,
                         session_timeout_s=6.0, heartbeat_interval_s=0.5, batch_wait_ms=20,
                         serve_token=TOKEN, data_dir=str(tmp / "data"))
    ensure_topics(base)
    ports = [free_port("127.0.0.1"), free_port("127.0.0.1")]
    workers = [WorkerProcess(base.with_overrides(web_port=p, data_dir=str(tmp / f"d{i}")),
                             tmp / f"w{i}.log", name=f"worker-{i}")
               for i, p in enumerate(ports)]
    try:
        workers[0].start()
        workers[0].wait_ready(90)
        workers[1].start()
        workers[1].wait_ready(90)
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        _wait_split(urls)
        yield base, urls, events
    finally:
        for w in workers:
            w.stop(20)


def _ready(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/v1/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _wait_split(urls: list[str], timeout_s: float = 90.0) -> None:
    """Both workers ready and each the owner of some users (the partitions split)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_ready(u) for u in urls):
            served = set()
            for i in range(16):  # users of every partition, asked of worker 0
                try:
                    with Client(urls[0], TOKEN) as c:
                        served.add(c.recommendations(f"probe-{i}", k=1).served_by)
                except ServingError:
                    break
            if len(served) == 2:
                return
        time.sleep(0.5)
    raise AssertionError("the two workers did not split the partitions")


def _event(user: str, item: str, n: int) -> Event:
    return Event(event_id=f"{user}-e{n}", user_id=user, item_id=item, action="view",
                 timestamp_ms=int(time.time() * 1000) - 1000 + n)


def _predictions_of(settings, user: str, n: int, timeout_s: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = [orjson.loads(m.value) for m in read_topic(settings, "predictions", idle_s=0.5,
                                                         timeout_s=10)
               if m.key == user.encode()]
        if len(got) >= n:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{n} predictions for {user} not seen")


def _user_on_each_worker(settings, prefix: str) -> list[str]:
    """Two users whose partitions differ (any two partitions: the workers may own them
    either way; the routing test asks both of both workers)."""
    users, parts = [], set()
    for i in range(100):
        u = f"{prefix}-{i}"
        p = partition_of(u, settings.partitions)
        if p not in parts:
            parts.add(p)
            users.append(u)
    return users


def test_any_worker_answers_any_user_and_reads_its_writes(cluster):
    settings, urls, events = cluster
    items = sorted({e.item_id for e in events})
    users = _user_on_each_worker(settings, f"ryw{uuid.uuid4().hex[:4]}")
    sent = []
    for u in users:
        sent += [_event(u, items[3], 1), _event(u, items[7], 2), _event(u, items[11], 3)]
    replay_events(settings, sent, progress=False)
    owners = set()
    for u in users:
        last = _predictions_of(settings, u, 3)[-1]
        answers = []
        for url in urls:
            with Client(url, TOKEN) as c:
                answers.append(c.recommendations(u, k=settings.top_k))
        owners |= {a.served_by for a in answers}
        for a in answers:
            # every processed event is in the answer: the sequence the last prediction used,
            # the same items (the same model on the same sequence), whichever worker is asked
            assert a.sequence_length == 3
            assert not a.cold_start
            assert a.items == last["items"]
            assert a.model_version == last["model_version"]
        assert answers[0].served_by == answers[1].served_by  # the owner answered both
    assert owners == set(urls)  # each worker owned some of the users: requests were routed

    # one more event: the next answer has it
    u = users[0]
    replay_events(settings, [_event(u, items[20], 4)], progress=False)
    last = _predictions_of(settings, u, 4)[-1]
    for url in urls:
        with Client(url, TOKEN) as c:
            a = c.recommendations(u, k=settings.top_k)
            seen = c.recommendations(u, k=5, exclude_seen=True)
        assert a.sequence_length == 4 and a.items == last["items"]
        assert not {items[3], items[7], items[11], items[20]} & set(seen.items)


def test_rank_reorders_candidates_on_both_workers(cluster):
    settings, urls, events = cluster
    items = sorted({e.item_id for e in events})
    u = f"rank{uuid.uuid4().hex[:4]}"
    replay_events(settings, [_event(u, items[1], 1), _event(u, items[2], 2)], progress=False)
    last = _predictions_of(settings, u, 2)[-1]
    top = last["items"][:3]
    # the model's favourites placed last by the caller, an unknown item first
    cands = ["never-seen-item"] + [i for i in items[30:40] if i not in top] + top[::-1]
    answers = []
    for url in urls:
        with Client(url, TOKEN) as c:
            answers.append(c.rank(u, cands))
    a = answers[0]
    assert sorted(a.items) == sorted(cands) and a.items == answers[1].items
    assert a.sequence_length == 2 and not a.cold_start and a.alpha == 1.0
    # alpha 1: the model's order among the known items; the unknown item keeps the place
    # the caller's order gives it (first)
    assert a.items[0] == "never-seen-item" and a.model_scores[0] is None
    assert a.items[1:4] == top
    # alpha 0: the caller's scores alone
    with Client(urls[1], TOKEN) as c:
        caller = c.rank(u, cands, scores=list(range(len(cands))), alpha=0.0)
    assert caller.items == cands[::-1]


def test_cold_start_answer_for_an_unknown_user(cluster):
    settings, urls, events = cluster
    with Client(urls[0], TOKEN) as c:
        a = c.recommendations(f"nobody-{uuid.uuid4().hex}", k=5)
        r = c.rank(f"nobody-{uuid.uuid4().hex}", [events[0].item_id, "unknown-x"])
    assert a.cold_start and a.sequence_length == 0
    assert len(a.items) == 5 and a.scores == sorted(a.scores, reverse=True)
    assert r.cold_start and sorted(r.items) == sorted([events[0].item_id, "unknown-x"])


def _raw(url: str, method: str, path: str, body: bytes | None = None,
         token: str | None = TOKEN, headers: dict | None = None) -> tuple[int, dict]:
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, orjson.loads(data)


@pytest.mark.parametrize("method,path,body,status,field", [
    ("GET", "/v1/users/u1/recommendations?k=0", None, 400, "k"),
    ("GET", "/v1/users/u1/recommendations?k=abc", None, 400, "k"),
    ("GET", "/v1/users/u1/recommendations?k=100000", None, 400, "k"),
    ("GET", "/v1/users/u1/recommendations?exclude_seen=maybe", None, 400, "exclude_seen"),
    ("GET", "/v1/users/u1/recommendations?kk=3", None, 400, "kk"),
    ("POST", "/v1/rank", b"{not json", 400, None),
    ("POST", "/v1/rank", b"[1, 2]", 400, None),
    ("POST", "/v1/rank", b'{"items": ["a"]}', 400, "user_id"),
    ("POST", "/v1/rank", b'{"user_id": "u1", "items": "a"}', 400, "items"),
    ("POST", "/v1/rank", b'{"user_id": "u1", "items": ["a", 3]}', 400, "items"),
    ("POST", "/v1/rank", b'{"user_id": "u1", "items": ["a"], "scores": [1, 2]}', 400, "scores"),
    ("POST", "/v1/rank", b'{"user_id": "u1", "items": ["a"], "alpha": 2}', 400, "alpha"),
    ("POST", "/v1/rank", b'{"user_id": "u1", "items": ["a"], "extra": 1}', 400, "extra"),
    ("POST", "/v1/rank", orjson.dumps({"user_id": "u1", "items": [f"i{i}" for i in range(1001)]}),
     400, "items"),
    ("POST", "/v1/rank", orjson.dumps({"user_id": "u1", "items": ["x" * 200] * 2000}), 413, None),
])
def test_bad_requests_get_a_json_4xx(cluster, method, path, body, status, field):
    _, urls, _ = cluster
    for url in urls:
        got, doc = _raw(url, method, path, body)
        assert got == status, doc
        assert doc["status"] == status and doc["error"] and doc.get("field") == field


def test_the_bearer_token_is_required(cluster):
    _, urls, _ = cluster
    url = urls[0]
    for token in (None, "wrong", TOKEN + "x"):
        status, doc = _raw(url, "GET", "/v1/users/u1/recommendations", token=token)
        assert status == 401 and "token" in doc["error"]
        status, doc = _raw(url, "POST", "/v1/rank", b'{"user_id": "u1", "items": ["a"]}',
                           token=token)
        assert status == 401
    status, _ = _raw(url, "GET", "/v1/users/u1/recommendations", token=TOKEN)
    assert status == 200
    # the probes and the OpenAPI document need none
    for path in ("/v1/health", "/v1/ready", "/v1/openapi.json"):
        status, doc = _raw(url, "GET", path, token=None)
        assert status == 200
    assert "/v1/rank" in doc["paths"] and "Ranking" in doc["components"]["schemas"]
    with Client(url) as c, pytest.raises(ServingError) as e:
        c.recommendations("u1")
    assert e.value.status == 401


def test_a_forwarded_request_is_not_forwarded_again(cluster):
    settings, urls, _ = cluster
    # a user the asked worker does not own, marked as already routed: 503, never a loop
    for i in range(64):
        u = f"loop-{i}"
        with Client(urls[0], TOKEN) as c:
            if c.recommendations(u, k=1).served_by != urls[0]:
                break
    status, doc = _raw(urls[0], "GET", f"/v1/users/{u}/recommendations?k=1",
                       headers={"X-Seqstream-Routed-By": urls[1]})
    assert status == 503 and "owned by" in doc["error"]


def test_async_client_gives_the_same_answers(cluster):
    settings, urls, events = cluster
    items = sorted({e.item_id for e in events})
    u = f"async{uuid.uuid4().hex[:4]}"

    async def ask():
        async with AsyncClient(urls[1], TOKEN) as c:
            return await asyncio.gather(c.recommendations(u, k=7),
                                        c.rank(u, items[:20]),
                                        *(c.recommendations(f"{u}-{i}", k=3) for i in range(20)))

    got = asyncio.run(ask())
    with Client(urls[1], TOKEN) as c:
        assert got[0] == c.recommendations(u, k=7)
        assert got[1] == c.rank(u, items[:20])


def test_odd_user_ids_survive_the_hop(cluster):
    settings, urls, _ = cluster
    odd, parts = [], set()
    for i in range(200):  # one of every partition: some owned by each worker
        u = f"a b/c?d#e%f-ü-{i}"
        if partition_of(u, settings.partitions) not in parts:
            parts.add(partition_of(u, settings.partitions))
            odd.append(u)
    served = set()
    for u in odd:
        answers = []
        for url in urls:
            with Client(url, TOKEN) as c:
                answers.append(c.recommendations(u, k=2))
        assert all(a.user_id == u for a in answers)
        assert answers[0].served_by == answers[1].served_by
        served.add(answers[0].served_by)
    assert served == set(urls)
