"""The behaviour event: one user acting on one item at one time.

On the wire: a JSON object (orjson), Kafka key = ``user_id``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.actions import ACTIONS, normalize_action
from schemas.exceptions import SchemaError

#: Largest accepted size of one serialized event.
MAX_EVENT_BYTES = 16 * 1024
#: Longest accepted identifier (event, user, item, session, category).
MAX_ID_CHARS = 256
#: Accepted event-time range: 2000-01-01 .. 2100-01-01 (UTC), in ms.
MIN_TIMESTAMP_MS = 946_684_800_000
MAX_TIMESTAMP_MS = 4_102_444_800_000
#: Largest accepted price.
MAX_PRICE = 1e9
#: Default of how far ahead of the wall clock an event time may be (the stream's
#: ``max_future_ms`` setting): one day covers clock skew and time zones mistaken for UTC.
DEFAULT_MAX_FUTURE_MS = 86_400_000

_REQUIRED = ("event_id", "user_id", "item_id", "action", "timestamp_ms")
_OPTIONAL_IDS = ("session_id", "category_id")
_CANONICAL = frozenset(ACTIONS)


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    action: str
    timestamp_ms: int
    session_id: str | None = None
    category_id: str | None = None
    price: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in d.items() if v is not None}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> Event:
        """Validate a decoded JSON object; raises :class:`SchemaError` with the reason."""
        if type(d) is dict and len(d) == 5:
            # the common record (the five required fields, string ids, a canonical action,
            # an integer time) checked inline: the same rules as below, a third of the calls
            e, u, i, a, t = (d.get("event_id"), d.get("user_id"), d.get("item_id"),
                             d.get("action"), d.get("timestamp_ms"))
            if (type(e) is str and type(u) is str and type(i) is str and type(t) is int
                    and 0 < len(e) <= MAX_ID_CHARS and 0 < len(u) <= MAX_ID_CHARS
                    and 0 < len(i) <= MAX_ID_CHARS and type(a) is str and a in _CANONICAL
                    and MIN_TIMESTAMP_MS <= t <= MAX_TIMESTAMP_MS):
                return cls(e, u, i, a, t)
        return cls._from_dict_checked(d)

    @classmethod
    def _from_dict_checked(cls, d: Any) -> Event:
        if not isinstance(d, dict):
            raise SchemaError(f"event must be a JSON object, got {type(d).__name__}")
        missing = [k for k in _REQUIRED if k not in d or d[k] is None]
        if missing:
            raise SchemaError(f"missing required field(s): {', '.join(missing)}", missing[0])
        ids = {k: _id(d[k], k) for k in ("event_id", "user_id", "item_id")}
        opt = {k: (_id(d[k], k) if d.get(k) is not None else None) for k in _OPTIONAL_IDS}
        return cls(
            action=normalize_action(d["action"]),
            timestamp_ms=_timestamp(d["timestamp_ms"]),
            price=_price(d.get("price")),
            **ids,
            **opt,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        return parse_event(raw)


def parse_event(raw: bytes | str | None) -> Event:
    """Decode and validate one event from wire bytes; raises :class:`SchemaError`."""
    if raw is None:
        raise SchemaError("empty record (null value)")
    if isinstance(raw, str):
        # the limit is on bytes: a str is measured as the UTF-8 it stands for
        size = len(raw.encode("utf-8", "surrogatepass"))
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        size = memoryview(raw).nbytes
    else:
        raise SchemaError(f"record must be bytes or str, got {type(raw).__name__}")
    if size > MAX_EVENT_BYTES:
        raise SchemaError(f"record of {size} bytes exceeds the {MAX_EVENT_BYTES}-byte limit")
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise SchemaError(f"not valid JSON: {e}") from None
    return Event.from_dict(d)


def check_event_time(ev: Event, now_ms: int, max_future_ms: int) -> None:
    """Refuse an event timed more than ``max_future_ms`` after the wall clock ``now_ms``
    (0 = no limit); raises :class:`SchemaError`.

    The static range above admits any time up to 2100, but event time drives the stream's
    windows: one event from 2099 would move a partition's watermark to 2099 and every later
    window would close as soon as it opened. Only the live stream checks this (offline logs
    are judged by their own time range).
    """
    if max_future_ms and ev.timestamp_ms > now_ms + max_future_ms:
        ahead_h = (ev.timestamp_ms - now_ms) / 3_600_000
        raise SchemaError(
            f"timestamp_ms {ev.timestamp_ms} is {ahead_h:,.1f} h ahead of the wall clock "
            f"({now_ms}); the limit is max_future_ms={max_future_ms}", "timestamp_ms")


def _id(v: Any, name: str) -> str:
    # Integers are accepted as ids (logs often have numeric ids) and kept as their decimal text.
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise SchemaError(f"{name} must be a string or integer, got {type(v).__name__}", name)
    s = v if isinstance(v, str) else str(v)
    if not s:
        raise SchemaError(f"{name} must not be empty", name)
    if len(s) > MAX_ID_CHARS:
        raise SchemaError(f"{name} is {len(s)} characters long; the limit is {MAX_ID_CHARS}", name)
    return s


def _timestamp(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchemaError(f"timestamp_ms must be a number, got {type(v).__name__}", "timestamp_ms")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise SchemaError("timestamp_ms must be finite", "timestamp_ms")
        v = int(v)
    if v < 0:
        raise SchemaError(f"timestamp_ms is negative ({v})", "timestamp_ms")
    if not MIN_TIMESTAMP_MS <= v <= MAX_TIMESTAMP_MS:
        raise SchemaError(
            f"timestamp_ms {v} is outside 2000-01-01..2100-01-01 (is it in seconds?)",
            "timestamp_ms",
        )
    return v


def _price(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchemaError(f"price must be a number, got {type(v).__name__}", "price")
    f = float(v)
    if not math.isfinite(f) or f < 0 or f > MAX_PRICE:
        raise SchemaError(f"price {v!r} is not a finite number in 0..{MAX_PRICE:g}", "price")
    return f
