"""Shoppers' privacy: pseudonymous ids at ingress, erase requests carried out by the owning
worker in order with the user's events, tombstoned and audited, never brought back by
recovery."""

from __future__ import annotations

import time

import orjson
import pytest

from model_core.datasets.synth import generate
from model_core.models import create_model
from model_core.vocab import ItemVocab
from schemas.erasure import ERASE_HEADER, EraseRequest, ErasureAudit, is_erase_request
from schemas.event import Event
from schemas.exceptions import SchemaError, SeqstreamError
from stream_app.kafka.replay import replay_events
from stream_app.kafka.topics import ensure_topics, read_topic
from stream_app.ops.chaos import read_changelog_states
from stream_app.worker.privacy import (
    Pseudonyms,
    read_erase_request,
    send_erase_requests,
    sign_erase,
)
from stream_app.worker.process import WorkerProcess
from stream_app.worker.processor import BatchProcessor, RawRecord

KEY = b"0123456789abcdef0123456789abcdef"


def test_pseudonyms_are_keyed_stable_and_hide_the_key():
    p, q = Pseudonyms(KEY), Pseudonyms(b"another key of 16+ bytes")
    assert p("alice") == p("alice") != p("bob")
    assert p("alice") != q("alice")
    assert len(p("alice")) == 32 and "alice" not in p("alice")
    assert "0123" not in repr(p)
    with pytest.raises(SeqstreamError, match="at least 16 bytes"):
        Pseudonyms(b"short")


def test_pseudonym_key_file_errors_name_the_setting(tmp_path):
    from stream_app.settings import load_settings

    missing = load_settings(pseudonym_key_file=str(tmp_path / "nope"))
    with pytest.raises(SeqstreamError, match="SEQSTREAM_PSEUDONYM_KEY_FILE=.*cannot read"):
        Pseudonyms.from_settings(missing)
    assert Pseudonyms.from_settings(load_settings()) is None


def _erase(user="u1", key=None, **over) -> bytes:
    req = EraseRequest(user, "ops@shop", 1_700_000_000_000, "GDPR art. 17")
    if key is not None:
        req.hmac = sign_erase(key, user, req.requested_at_ms)
    d = orjson.loads(orjson.dumps(req))
    d.update(over)
    return orjson.dumps(d)


def test_erase_requests_are_checked():
    assert read_erase_request(_erase(), b"u1", None).user_id == "u1"
    assert read_erase_request(_erase(key=KEY), b"u1", KEY).requested_by == "ops@shop"
    with pytest.raises(SchemaError, match="HMAC"):
        read_erase_request(_erase(), b"u1", KEY)  # unsigned, the worker has a key
    with pytest.raises(SchemaError, match="HMAC"):
        read_erase_request(_erase(key=b"x" * 32), b"u1", KEY)
    with pytest.raises(SchemaError, match="Kafka key"):
        read_erase_request(_erase(), b"u2", None)
    with pytest.raises(SchemaError, match="requested_by"):
        read_erase_request(_erase(requested_by=""), b"u1", None)
    with pytest.raises(SchemaError):
        read_erase_request(b"not json", b"u1", None)
    assert is_erase_request([ERASE_HEADER]) and is_erase_request(dict([ERASE_HEADER]))
    assert not is_erase_request(None) and not is_erase_request([("seqstream-type", b"x")])


def test_processor_replaces_user_ids_by_pseudonyms():
    p = Pseudonyms(KEY)
    proc = BatchProcessor(create_model("popular", ItemVocab(["i1", "i2"])), k=2, pseudonyms=p)
    ev = Event("e1", "alice", "i1", "view", 1_700_000_000_000)
    rec = RawRecord(b"alice", ev.to_json(), "events", 0, 0, 1_000)
    states: dict = {}
    out = proc.process([rec], states)
    assert list(out.result.touched) == [p("alice")] and proc.state_key("alice") == p("alice").encode()
    key, value = out.predictions[0]
    assert key == p("alice").encode() and b"alice" not in value
    assert orjson.loads(value)["user_id"] == p("alice")
    # the raw key is still checked against the raw id before it is replaced
    bad = RawRecord(b"mallory", ev.to_json(), "events", 0, 1, 1_000)
    assert proc.process([bad], states).dead_letters


def _wait(cond, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _setup(stream_settings, tmp_path, markov_checkpoint, n: int, seed: int):
    """A log of ``n`` events, a Markov checkpoint of it, the key file, topics created."""
    events = generate(n, seed=seed)
    model_dir = tmp_path / "model"
    markov_checkpoint(events, model_dir)
    key_file = tmp_path / "test.key"
    key_file.write_bytes(KEY)
    settings = stream_settings.with_overrides(model_path=str(model_dir))
    ensure_topics(settings)
    return events, settings, str(key_file)


def _audits(settings) -> list[ErasureAudit]:
    return [ErasureAudit.from_json(m.value) for m in read_topic(settings, "audit", idle_s=1.0)]


@pytest.mark.broker
def test_forget_erases_state_survives_recovery_and_starts_fresh(stream_settings, tmp_path,
                                                              markov_checkpoint):
    events, settings, key_file = _setup(stream_settings, tmp_path, markov_checkpoint, 600, 11)
    settings = settings.with_overrides(pseudonym_key_file=key_file)
    pseudo = Pseudonyms(KEY)
    users = sorted({e.user_id for e in events})
    gone, kept = users[0], users[1]
    n_gone = sum(e.user_id == gone for e in events)
    assert n_gone >= 2

    def states():
        return read_changelog_states(settings, timeout_s=30.0)

    with WorkerProcess(settings, tmp_path / "w1.log") as worker:
        worker.wait_ready(90)
        replay_events(settings, events, progress=False)
        _wait(lambda: len(read_topic(settings, "predictions", idle_s=1.0)) >= len(events),
              "every prediction")
        held = states()
        assert all(u not in held for u in users), "raw ids in the changelog"
        assert len(held[pseudo(gone)].items) == min(n_gone, settings.max_seq_len)
        assert send_erase_requests(settings, [gone, "never-seen"], "ops@shop", "test") == 2
        audits = _wait(lambda: _audits(settings) if len(_audits(settings)) >= 2 else None,
                       "two audit records")
        log = worker.log_text()
    import hashlib

    by_key = {a.user_key_sha256: a for a in audits}
    a = by_key[hashlib.sha256(pseudo(gone).encode()).hexdigest()]
    assert a.had_state and a.requested_by == "ops@shop" and a.reason == "test"
    assert not by_key[hashlib.sha256(pseudo("never-seen").encode()).hexdigest()].had_state
    assert gone not in log and kept not in log  # neither raw id reaches the worker's log
    held = states()
    assert pseudo(gone) not in held and pseudo(kept) in held

    # a restarted worker recovers the table from the changelog: the user stays gone, and
    # their next event starts a fresh sequence
    later = Event("after-erase-1", gone, events[0].item_id, "view",
                  max(e.timestamp_ms for e in events) + 1000)
    with WorkerProcess(settings, tmp_path / "w2.log") as worker:
        worker.wait_ready(90)
        replay_events(settings, [later], progress=False)
        _wait(lambda: pseudo(gone) in states(), "the erased user's new state")
    fresh = states()[pseudo(gone)]
    assert len(fresh.items) == 1
    assert len(states()[pseudo(kept)].items) > 0


@pytest.mark.broker
def test_unsigned_erase_is_refused_when_workers_have_a_control_key(stream_settings, tmp_path,
                                                                  markov_checkpoint):
    events, settings, key_file = _setup(stream_settings, tmp_path, markov_checkpoint, 200, 12)
    worker_settings = settings.with_overrides(control_key_file=key_file)
    user = events[0].user_id
    with WorkerProcess(worker_settings, tmp_path / "w.log") as worker:
        worker.wait_ready(90)
        replay_events(settings, events, progress=False)
        send_erase_requests(settings, [user], "someone")  # no key on this side: unsigned
        dead = _wait(lambda: [orjson.loads(m.value) for m in read_topic(
            settings, "dead-letters", idle_s=1.0)], "the refused request's dead letter")
        send_erase_requests(worker_settings, [user], "ops")  # signed
        _wait(lambda: _audits(settings), "the signed request's audit record")
    assert any("HMAC" in d["reason"] for d in dead)
    assert user not in read_changelog_states(settings, timeout_s=30.0)


def test_dead_letters_get_their_own_retention():
    from stream_app.kafka.topics import topic_configs
    from stream_app.settings import load_settings

    s = load_settings()
    assert topic_configs(s, "dead-letters") == {"retention.ms": str(7 * 24 * 3600 * 1000)}
    assert topic_configs(s, "events") == {}
    assert topic_configs(s.with_overrides(dead_letter_retention_ms=0), "dead-letters") == {}
