"""A record that could not be processed, kept with its original bytes and the reason.

An input larger than ``max_original_bytes`` (:data:`MAX_ORIGINAL_BYTES` by default) is kept
by reference, not copied: its topic, partition and offset (where it can still be read), its
size (``original_size``), and its first :data:`PREFIX_BYTES` bytes (``original_truncated``
true); the same for a key over :data:`PREFIX_BYTES`. Copied whole, base64 makes a 0.8 MB
input a dead letter over 1 MiB, which Apache Kafka refuses by default. Events are at most
16 KiB (:data:`schemas.event.MAX_EVENT_BYTES`), so every input that could have been an event
is still copied whole.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from schemas import _codec

#: Largest input copied whole into its dead letter.
MAX_ORIGINAL_BYTES = 64 * 1024
#: Bytes of a larger input (or key) kept in its dead letter.
PREFIX_BYTES = 1024


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
    original_size: int = 0  # bytes of the input value
    original_truncated: bool = False  # original_b64 holds only its first PREFIX_BYTES
    key_size: int | None = None  # bytes of the key (None: no key)

    @classmethod
    def of(cls, raw: bytes | None, reason: str, topic: str, partition: int, offset: int,
           key: bytes | None = None, failed_at_ms: int = 0, source: str = "stream",
           max_original_bytes: int = MAX_ORIGINAL_BYTES) -> DeadLetter:
        raw = raw or b""
        truncated = len(raw) > max_original_bytes
        if truncated:
            reason = (f"{reason} [input of {len(raw):,} bytes kept by reference: read it at "
                      f"{topic} partition {partition} offset {offset}; its first "
                      f"{PREFIX_BYTES} bytes are here]")
        kept = raw[:PREFIX_BYTES] if truncated else raw
        return cls(
            original_b64=base64.b64encode(kept).decode("ascii"),
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            key_b64=(base64.b64encode(key[:PREFIX_BYTES]).decode("ascii")
                     if key is not None else None),
            failed_at_ms=failed_at_ms,
            source=source,
            original_size=len(raw),
            original_truncated=truncated,
            key_size=len(key) if key is not None else None,
        )

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)

    def to_json(self) -> bytes:
        return _codec.to_json(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        return _codec.from_json(cls, raw)
