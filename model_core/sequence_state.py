"""Per-user rolling sequence state: compact encoding and pure updates.

One :class:`UserState` holds a user's last ``max_len`` events as parallel arrays
(int32 item index, uint8 action class, int64 event time in ms, uint64 event-id hash) and the
user's latest prediction (top-K item indices and predicted next action), which the next event
is scored against (prequential evaluation).

Encoded as bytes (:meth:`UserState.encode`, format version 2): a 24-byte header, then the
arrays. Event times are stored as the first event's time (int64) plus int32 offsets from it
whenever the window spans less than about 24 days either side of its first event (flag
``TS32``; otherwise int64 each), which keeps a 50-event sequence with a top-20 prediction at
24 + 8 + 50 * 17 + 20 * 4 = 962 bytes despite the 64-bit id hashes (under 1 KiB).

The event-id hashes make updates idempotent: an event whose id is already in the window is a
redelivery (at-least-once input); it is not appended again and not scored again. They are 64
bits (blake2b): with 32 bits (crc32) two different ids collide after about 77,000 random ids
by the birthday bound, and a crc32 collision can be constructed at will, so a genuinely new
event would be dropped as a redelivery.

Version 1 states (uint32 crc32 hashes) still decode: each old hash is kept as
``LEGACY_MARK | crc32`` (:func:`legacy_event_hash`) and the state is flagged
(``UserState.legacy``), so a redelivery of an event recorded before the upgrade is still
recognised by its crc32 until it slides out of the window. A new 64-bit hash never carries
the mark, so the two kinds cannot be confused. Every state is written back as version 2.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import zlib
from dataclasses import dataclass, field

import numpy as np

_HEADER = struct.Struct("<BBHHbxqi4x")  # version, flags, n, k, last_action, source_offset, vocab tag
_VERSION = 2
_V1 = 1  # uint32 crc32 id hashes: upgraded on read
_FLAG_LEGACY = 0x01  # some id hashes are upgraded crc32 values (LEGACY_MARK | crc32)
_FLAG_TS32 = 0x02  # event times stored as int64 base + int32 offsets from it
_BASE = struct.Struct("<q")
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
assert _HEADER.size == 24

LEGACY_MARK = 0xFFFFFFFF << 32  # the top 32 bits of an upgraded crc32 id hash

_EMPTY_I32 = np.zeros(0, dtype=np.int32)
_unpack_header = _HEADER.unpack_from
_I4, _U1, _I8, _U4, _U8 = (np.dtype("<i4"), np.dtype("u1"), np.dtype("<i8"), np.dtype("<u4"),
                           np.dtype("<u8"))
_MARK_HI = np.uint64(0xFFFFFFFF)
_NATIVE_LE = sys.byteorder == "little"


def _view(raw: bytes, dtype: np.dtype, count: int, offset: int) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return arr if _NATIVE_LE else arr.astype(dtype.newbyteorder("="))


def event_hash(event_id: str) -> int:
    """64-bit hash of an event id (blake2b), stored per sequence position for de-duplication.

    Never carries :data:`LEGACY_MARK` in its top 32 bits (one bit is flipped in the 1 in 2**32
    case that would), so it cannot equal an upgraded version-1 hash.
    """
    h = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")
    return h ^ (1 << 32) if h >> 32 == 0xFFFFFFFF else h


def legacy_event_hash(event_id: str) -> int:
    """How a version-1 state's crc32 hash of ``event_id`` is held after upgrade."""
    return LEGACY_MARK | zlib.crc32(event_id.encode())


@dataclass(slots=True)
class UserState:
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    actions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    timestamps_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    last_pred_items: np.ndarray = field(default_factory=lambda: _EMPTY_I32)  # [K], best first
    last_pred_action: int = -1  # predicted next action class, -1 = no prediction yet
    source_offset: int = -1  # highest input offset applied (informational)
    vocab_tag: int = 0  # 32-bit tag of the vocabulary the item indices refer to
    legacy: bool = False  # some hashes may be upgraded crc32 values (see the module docstring)

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
        self.hashes = np.append(self.hashes[start:].astype(np.uint64, copy=False),
                                np.uint64(ev_hash))

    def position_of(self, ev_hash: int) -> int:
        """Index of the event with this id hash in the window, or -1."""
        hit = np.flatnonzero(self.hashes == np.uint64(ev_hash))
        return int(hit[-1]) if len(hit) else -1

    def position_of_id(self, event_id: str) -> int:
        """Index of the event with this id in the window, or -1 (upgraded crc32 hashes
        included)."""
        pos = self.position_of(event_hash(event_id))
        if pos < 0 and self.legacy:
            pos = self.position_of(legacy_event_hash(event_id))
        return pos

    # ------------------------------------------------------------------ bytes
    def encode(self) -> bytes:
        n = len(self.items)
        k = len(self.last_pred_items)
        hashes = np.asarray(self.hashes, dtype=np.uint64)
        if self.legacy:  # still flagged only while an upgraded hash is in the window
            self.legacy = bool(((hashes >> np.uint64(32)) == _MARK_HI).any())
        flags = _FLAG_LEGACY if self.legacy else 0
        ts = np.asarray(self.timestamps_ms, dtype=np.int64)
        times = [ts.astype("<i8", copy=False).tobytes()]
        if n:
            delta = ts - ts[0]
            if int(delta.min()) >= _I32_MIN and int(delta.max()) <= _I32_MAX:
                flags |= _FLAG_TS32
                times = [_BASE.pack(int(ts[0])), delta.astype("<i4").tobytes()]
        head = _HEADER.pack(_VERSION, flags, n, k, self.last_pred_action, self.source_offset,
                            self.vocab_tag)
        return b"".join((
            head,
            self.items.astype("<i4", copy=False).tobytes(),
            self.actions.astype("u1", copy=False).tobytes(),
            *times,
            hashes.astype("<u8", copy=False).tobytes(),
            np.asarray(self.last_pred_items, dtype="<i4").tobytes(),
        ))

    @staticmethod
    def peek_source_offset(raw: bytes) -> int:
        """The ``source_offset`` of an encoded state, read from its header alone (both
        versions keep it there); ValueError when ``raw`` is no state header."""
        if len(raw) < _HEADER.size:
            raise ValueError(f"user-state of {len(raw)} bytes is shorter than its header")
        version, _, _, _, _, offset, _ = _unpack_header(raw, 0)
        if version not in (_V1, _VERSION):
            raise ValueError(f"unknown user-state encoding version {version}")
        return offset

    @classmethod
    def decode(cls, raw: bytes | None) -> UserState:
        """The state ``raw`` encodes. On a little-endian machine its arrays other than the
        event times are read-only views of ``raw`` (no copy: a state is replaced, never changed
        in place). A version-1 state is upgraded (its crc32 id hashes marked, see the module
        docstring)."""
        if not raw:
            return cls()
        version, flags, n, k, last_action, offset, tag = _unpack_header(raw, 0)
        if version == _V1:
            return cls._decode_v1(raw, n, k, last_action, offset, tag)
        if version != _VERSION:
            raise ValueError(f"unknown user-state encoding version {version}")
        ts32 = flags & _FLAG_TS32
        end = _HEADER.size + (8 + 17 * n if ts32 else 21 * n) + 4 * k
        if end != len(raw):
            raise ValueError(f"user-state length {len(raw)} does not match its header ({end})")
        pos = _HEADER.size
        items = _view(raw, _I4, n, pos)
        pos += 4 * n
        actions = _view(raw, _U1, n, pos)
        pos += n
        if ts32:
            (base,) = _BASE.unpack_from(raw, pos)
            pos += 8
            ts = _view(raw, _I4, n, pos).astype(np.int64)
            ts += base
            pos += 4 * n
        else:
            ts = _view(raw, _I8, n, pos)
            pos += 8 * n
        hashes = _view(raw, _U8, n, pos)
        last = _view(raw, _I4, k, pos + 8 * n)
        return cls(items, actions, ts, hashes, last, last_action, offset, tag,
                   bool(flags & _FLAG_LEGACY))

    @classmethod
    def _decode_v1(cls, raw: bytes, n: int, k: int, last_action: int, offset: int,
                   tag: int) -> UserState:
        end = _HEADER.size + 17 * n + 4 * k
        if end != len(raw):
            raise ValueError(f"user-state length {len(raw)} does not match its header ({end})")
        pos = _HEADER.size
        items = _view(raw, _I4, n, pos)
        actions = _view(raw, _U1, n, pos + 4 * n)
        ts = _view(raw, _I8, n, pos + 5 * n)
        crc = _view(raw, _U4, n, pos + 13 * n)
        last = _view(raw, _I4, k, pos + 17 * n)
        hashes = crc.astype(np.uint64) | np.uint64(LEGACY_MARK)
        return cls(items, actions, ts, hashes, last, last_action, offset, tag, n > 0)
