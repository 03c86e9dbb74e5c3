"""Per-user rolling sequence state: compact encoding and pure updates.

One :class:`UserState` holds a user's last ``max_len`` events as parallel arrays
(int32 item index, uint8 action class, int64 event time in ms, uint32 event-id hash) and the
user's latest prediction (top-K item indices and predicted next action), which the next event
is scored against (prequential evaluation).

Encoded as bytes (:meth:`UserState.encode`): a 24-byte header, then the arrays. A 50-event
sequence with a top-20 prediction takes 24 + 50 * 17 + 20 * 4 = 954 bytes.

The event-id hashes make updates idempotent: an event whose id is already in the window is a
redelivery (at-least-once input); it is not appended again and not scored again.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

_HEADER = struct.Struct("<BBHHbxqi4x")  # version, flags, n, k, last_action, source_offset, vocab tag
_VERSION = 1
assert _HEADER.size == 24

_EMPTY_I32 = np.zeros(0, dtype=np.int32)


def event_hash(event_id: str) -> int:
    """32-bit hash of an event id (crc32), stored per sequence position for de-duplication."""
    return zlib.crc32(event_id.encode())


@dataclass(slots=True)
class UserState:
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    actions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    timestamps_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))
    last_pred_items: np.ndarray = field(default_factory=lambda: _EMPTY_I32)  # [K], best first
    last_pred_action: int = -1  # predicted next action class, -1 = no prediction yet
    source_offset: int = -1  # highest input offset applied (informational)
    vocab_tag: int = 0  # 32-bit tag of the vocabulary the item indices refer to

    def __len__(self) -> int:
        return len(self.items)

    # ------------------------------------------------------------------ updates
    def append(self, item: int, action: int, timestamp_ms: int, ev_hash: int, max_len: int) -> None:
        """Append one event, keeping the last ``max_len``."""
        n = len(self.items)
        start = max(0, n + 1 - max_len)
        self.items = np.append(self.items[start:], np.int32(item))
        self.actions = np.append(self.actions[start:], np.uint8(action))
        self.timestamps_ms = np.append(self.timestamps_ms[start:], np.int64(timestamp_ms))
        self.hashes = np.append(self.hashes[start:], np.uint32(ev_hash))

    def position_of(self, ev_hash: int) -> int:
        """Index of the event with this id hash in the window, or -1."""
        hit = np.flatnonzero(self.hashes == np.uint32(ev_hash))
        return int(hit[-1]) if len(hit) else -1

    # ------------------------------------------------------------------ bytes
    def encode(self) -> bytes:
        n = len(self.items)
        k = len(self.last_pred_items)
        head = _HEADER.pack(_VERSION, 0, n, k, self.last_pred_action, self.source_offset,
                            self.vocab_tag)
        return b"".join((
            head,
            self.items.astype("<i4", copy=False).tobytes(),
            self.actions.astype("u1", copy=False).tobytes(),
            self.timestamps_ms.astype("<i8", copy=False).tobytes(),
            self.hashes.astype("<u4", copy=False).tobytes(),
            np.asarray(self.last_pred_items, dtype="<i4").tobytes(),
        ))

    @classmethod
    def decode(cls, raw: bytes | None) -> UserState:
        if not raw:
            return cls()
        version, _flags, n, k, last_action, offset, tag = _HEADER.unpack_from(raw, 0)
        if version != _VERSION:
            raise ValueError(f"unknown user-state encoding version {version}")
        pos = _HEADER.size

        def take(dtype: str, count: int) -> np.ndarray:
            nonlocal pos
            arr = np.frombuffer(raw, dtype=dtype, count=count, offset=pos)
            pos += arr.nbytes
            return arr.astype(dtype[1:] if dtype[0] in "<>" else dtype)  # owned, native order

        items = take("<i4", n)
        actions = take("u1", n)
        ts = take("<i8", n)
        hashes = take("<u4", n)
        last = take("<i4", k)
        if pos != len(raw):
            raise ValueError(f"user-state length {len(raw)} does not match its header ({pos})")
        return cls(items, actions, ts, hashes, last, last_action, offset, tag)
