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
import sys
import zlib
from dataclasses import dataclass, field

import numpy as np

_HEADER = struct.Struct("<BBHHbxqi4x")  # version, flags, n, k, last_action, source_offset, vocab tag
_VERSION = 1
assert _HEADER.size == 24

_EMPTY_I32 = np.zeros(0, dtype=np.int32)
_unpack_header = _HEADER.unpack_from
_I4, _U1, _I8, _U4 = np.dtype("<i4"), np.dtype("u1"), np.dtype("<i8"), np.dtype("<u4")
_NATIVE_LE = sys.byteorder == "little"


def _view(raw: bytes, dtype: np.dtype, count: int, offset: int) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return arr if _NATIVE_LE else arr.astype(dtype.newbyteorder("="))


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
        """The state ``raw`` encodes. On a little-endian machine its arrays are read-only
        views of ``raw`` (no copy: a state is replaced, never changed in place)."""
        if not raw:
            return cls()
        version, _flags, n, k, last_action, offset, tag = _unpack_header(raw, 0)
        if version != _VERSION:
            raise ValueError(f"unknown user-state encoding version {version}")
        end = _HEADER.size + 17 * n + 4 * k
        if end != len(raw):
            raise ValueError(f"user-state length {len(raw)} does not match its header ({end})")
        pos = _HEADER.size
        items = _view(raw, _I4, n, pos)
        pos += 4 * n
        actions = _view(raw, _U1, n, pos)
        pos += n
        ts = _view(raw, _I8, n, pos)
        pos += 8 * n
        hashes = _view(raw, _U4, n, pos)
        last = _view(raw, _I4, k, pos + 4 * n)
        return cls(items, actions, ts, hashes, last, last_action, offset, tag)
