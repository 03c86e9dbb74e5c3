"""Erasing a shopper's data: the request, sent on the events topic, and its audit record.

A request travels on the ``events`` topic, keyed by the user id like the user's events and
marked by the record header :data:`ERASE_HEADER`, so it lands in the user's partition and is
handled by whichever worker owns that partition, in order with the user's events: events
before it are erased with the state, events after it start a fresh sequence. The worker
removes the user's state, writes a tombstone to the table's changelog (recovery does not bring
the state back) and publishes an :class:`ErasureAudit` on the ``audit`` topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import _codec

#: Kafka record header that marks an erase request on the events topic.
ERASE_HEADER = ("seqstream-type", b"erase")


@dataclass(slots=True)
class EraseRequest:
    """Erase one user's state (on the events topic, keyed by ``user_id``, header
    :data:`ERASE_HEADER`)."""

    user_id: str  # the id as producers send it (pseudonymised by the worker if configured)
    requested_by: str  # who asked (an operator, a ticket id); kept in the audit record
    requested_at_ms: int
    reason: str = ""
    hmac: str | None = None  # required when the workers have a control key

    def to_json(self) -> bytes:
        return _codec.to_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> EraseRequest:
        return _codec.from_json(cls, raw)


@dataclass(slots=True)
class ErasureAudit:
    """What was erased, when and for whom; never the user id itself."""

    user_key_sha256: str  # SHA-256 of the key the state was held under
    requested_by: str
    requested_at_ms: int
    erased_at_ms: int
    had_state: bool  # False: nothing was held for that user (already gone, or never seen)
    partition: int
    offset: int  # the request's offset on the events topic
    reason: str = ""

    def to_json(self) -> bytes:
        return _codec.to_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ErasureAudit:
        return _codec.from_json(cls, raw)


def is_erase_request(headers) -> bool:
    """Whether a record's headers (a list of (name, value) pairs or a mapping) mark it as an
    erase request."""
    if not headers:
        return False
    name, value = ERASE_HEADER
    pairs = headers.items() if hasattr(headers, "items") else headers
    return any(k == name and v == value for k, v in pairs)
