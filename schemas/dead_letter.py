"""A record that could not be processed, kept with its original bytes and the reason."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from schemas import _codec


@dataclass(slots=True)
class DeadLetter:
    original_b64: str  # the original value bytes, base64
    reason: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    failed_at_ms: int = 0
    source: str = "stream"  # "stream" (worker) or "replay" (a file line)

    @classmethod
    def of(cls, raw: bytes | None, reason: str, topic: str, partition: int, offset: int,
           key: bytes | None = None, failed_at_ms: int = 0, source: str = "stream") -> DeadLetter:
        return cls(
            original_b64=base64.b64encode(raw or b"").decode("ascii"),
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            key_b64=base64.b64encode(key).decode("ascii") if key is not None else None,
            failed_at_ms=failed_at_ms,
            source=source,
        )

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)

    def to_json(self) -> bytes:
        return _codec.to_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        return _codec.from_json(cls, raw)
