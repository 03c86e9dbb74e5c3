"""Shoppers' privacy in the worker: pseudonymous user ids and erase requests.

Pseudonymous ids (``SEQSTREAM_PSEUDONYM_KEY_FILE``): the worker replaces each event's
``user_id`` at ingress by a keyed hash (BLAKE2b-128 with the file's key, hex), so the table,
its changelog, the predictions and the logs never hold the raw id. Producers keep keying
events by the raw id (the partition is chosen from it); the hash is a pseudonym, not an
anonymisation: whoever holds the key can recompute it from a known id, which is how an erase
request finds the state. The key is read once and never logged.

Erase requests (:mod:`schemas.erasure`): ``seqstream forget USER_ID...`` sends one per user on
the events topic. With a control key configured (``SEQSTREAM_CONTROL_KEY_FILE``) a request
must carry its HMAC, as control records do; without one, anyone who may write the events
topic may erase (they may also write any user's events).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import orjson

from schemas.erasure import ERASE_HEADER, EraseRequest
from schemas.exceptions import SchemaError, SeqstreamError
from stream_app.worker.model_swap import control_key, sign_control


class Pseudonyms:
    """``user_id`` → its keyed hash (32 hex characters)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise SeqstreamError("the pseudonym key must be at least 16 bytes (e.g. `head -c 32 "
                                 "/dev/urandom | base64 > FILE`)")
        self._key = hashlib.sha256(key).digest()  # BLAKE2b keys are at most 64 bytes

    @classmethod
    def from_settings(cls, settings) -> Pseudonyms | None:
        path = settings.pseudonym_key_file
        if not path:
            return None
        try:
            key = Path(path).read_bytes().strip()
        except OSError as e:
            raise SeqstreamError(f"SEQSTREAM_PSEUDONYM_KEY_FILE={path}: cannot read it "
                                 f"({e.strerror})") from None
        try:
            return cls(key)
        except SeqstreamError as e:
            raise SeqstreamError(f"SEQSTREAM_PSEUDONYM_KEY_FILE={path}: {e}") from None

    def __call__(self, user_id: str) -> str:
        return hashlib.blake2b(user_id.encode(), key=self._key, digest_size=16).hexdigest()

    def __repr__(self) -> str:  # never the key
        return "Pseudonyms(<key hidden>)"


def sign_erase(key: bytes, user_id: str, requested_at_ms: int) -> str:
    return sign_control(key, "erase", user_id, requested_at_ms)


def read_erase_request(value: bytes | None, record_key: bytes | None,
                       key: bytes | None) -> EraseRequest:
    """The erase request in a record, checked; :class:`SchemaError` with the reason if it is
    not one this worker may act on."""
    import hmac

    if value is None:
        raise SchemaError("erase request without a value", "value")
    req = EraseRequest.from_json(value)
    if not isinstance(req.user_id, str) or not req.user_id:
        raise SchemaError("erase request: user_id must be a non-empty string", "user_id")
    if not isinstance(req.requested_by, str) or not req.requested_by:
        raise SchemaError("erase request: requested_by must say who asked", "requested_by")
    if not isinstance(req.requested_at_ms, int) or isinstance(req.requested_at_ms, bool):
        raise SchemaError("erase request: requested_at_ms must be an integer", "requested_at_ms")
    if record_key != req.user_id.encode():
        raise SchemaError("erase request: the Kafka key must be the user_id (so it reaches the "
                          "user's partition)", "key")
    if key is not None and (not isinstance(req.hmac, str) or not hmac.compare_digest(
            req.hmac, sign_erase(key, req.user_id, req.requested_at_ms))):
        raise SchemaError("erase request: its HMAC does not verify with this worker's control "
                          "key", "hmac")
    return req


def send_erase_requests(settings, user_ids: list[str], requested_by: str,
                        reason: str = "") -> int:
    """One signed (when a control key is configured) erase request per user id on the events
    topic, keyed by the id; returns how many were sent."""
    from stream_app.kafka.replay import make_producer
    from stream_app.kafka.topics import ensure_topics

    key = control_key(settings)
    now_ms = int(time.time() * 1000)
    ensure_topics(settings)
    producer = make_producer(settings)
    header = [(ERASE_HEADER[0], ERASE_HEADER[1])]
    try:
        for uid in user_ids:
            req = EraseRequest(uid, requested_by, now_ms, reason)
            if key is not None:
                req.hmac = sign_erase(key, uid, now_ms)
            producer.send(settings.topic("events"), key=uid.encode(),
                          value=orjson.dumps(req), headers=header)
        producer.flush()
    finally:
        producer.close()
    return len(user_ids)
