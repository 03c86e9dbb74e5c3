"""Turning the raw values of one log row into an :class:`schemas.Event`: times and actions.

Shared by the readers that take a field mapping (``csv`` and ``jsonl``), so a time or an
action means the same in a CSV column, a flat JSON field or an event nested in a session.

Times (:class:`TimeParser`):

- numbers are epoch time in ``time_unit``: ``s``, ``ms``, ``us``, ``ns``, or ``auto`` (the
  default), which reads each number by its size (below 1e11 seconds, below 1e14 milliseconds,
  below 1e17 microseconds, else nanoseconds). For dates in 2000..2100, the only ones an Event
  accepts, these ranges cannot be confused, so ``auto`` is never ambiguous on valid data.
  A stated unit that the first value contradicts (seconds read as milliseconds) gives one
  :class:`DataWarning`; the rows themselves are then rejected by the Event's time range.
- other text is a date-time: ``time_format`` (a :func:`datetime.strptime` pattern) when given,
  else ISO 8601 (``2019-10-01T00:00:04+02:00``, ``2019-10-01 00:00:04``, a trailing ``Z``) or
  the same followed by `` UTC`` / `` GMT`` (``2019-10-01 00:00:04 UTC``, REES46 style).
  An offset or UTC/GMT/Z in the text is honoured; a time without one is in ``timezone``
  (an IANA name, default ``UTC``).

Actions (:class:`ActionMap`): ``actions`` maps raw values (compared as stripped text, exact
first, then case-insensitively) to a canonical action or alias, or to ``None`` to drop the
row; values not in the mapping go through :func:`schemas.normalize_action` as usual. A
dropped row is a :class:`~model_core.datasets._base.Rejected` with ``dropped=True``: counted
apart from bad rows, never an error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from model_core.exceptions import DataFormatError
from schemas import SchemaError, normalize_action

#: Event fields a mapping may name.
REQUIRED_FIELDS = ("user_id", "item_id", "timestamp")
OPTIONAL_FIELDS = ("action", "session_id", "category_id", "price", "event_id")
FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS

#: Milliseconds per unit.
TIME_UNITS: dict[str, float] = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_AUTO_LIMITS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))
_UTC_SUFFIXES = (" UTC", " GMT", "UTC", "GMT")


class DataWarning(UserWarning):
    """A log that reads, but probably not as meant (a stated time unit the data contradicts)."""


def unit_of(value: float) -> str:
    """The epoch unit a number of this size is in, for dates in 2000..2100."""
    v = abs(value)
    for limit, unit in _AUTO_LIMITS:
        if v < limit:
            return unit
    return "ns"


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        t = v.strip()
        if t and (t[0].isdigit() or t[0] in "+-.") and not any(c in t for c in ":/ T"):
            try:
                return float(t)
            except ValueError:
                return None
    return None


class TimeParser:
    """Raw time value -> epoch milliseconds (int); raises :class:`SchemaError` on bad input."""

    def __init__(self, time_unit: str = "auto", time_format: str | None = None,
                 timezone: str = "UTC", offset_s: float = 0.0, field_name: str = "timestamp"):
        if time_unit != "auto" and time_unit not in TIME_UNITS:
            raise DataFormatError(f"time_unit must be auto, {', '.join(TIME_UNITS)}; "
                                  f"got {time_unit!r}")
        try:
            self.tz = dt_timezone.utc if timezone in ("UTC", "utc", "Z") else ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise DataFormatError(f"unknown time zone {timezone!r}; use an IANA name such as "
                                  "UTC or Europe/Berlin") from None
        self.unit = time_unit
        self.format = time_format or None
        self.offset_ms = float(offset_s) * 1000.0
        self.field = field_name
        self._checked = False

    def __call__(self, v: Any) -> int:
        if v is None or (isinstance(v, str) and not v.strip()):
            raise SchemaError(f"{self.field} is empty", "timestamp_ms")
        num = _as_number(v)
        if num is not None and not (self.format and isinstance(v, str)):
            if not math.isfinite(num):
                raise SchemaError(f"{self.field} must be finite", "timestamp_ms")
            unit = unit_of(num) if self.unit == "auto" else self.unit
            if not self._checked:
                self._checked = True
                self._check_unit(num)
            return int(round(num * TIME_UNITS[unit] + self.offset_ms))
        if not isinstance(v, str):
            raise SchemaError(f"{self.field} must be a number or a date-time text, "
                              f"got {type(v).__name__}", "timestamp_ms")
        dt = self._parse_text(v.strip())
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        return int(round(dt.timestamp() * 1000.0 + self.offset_ms))

    def _parse_text(self, text: str) -> datetime:
        if self.format:
            try:
                dt = datetime.strptime(text, self.format)
            except ValueError as e:
                raise SchemaError(f"{self.field} {text[:40]!r} does not match --time-format "
                                  f"{self.format!r} ({e})", "timestamp_ms") from None
            # %Z parses UTC/GMT but leaves the result naive: say what it said
            if dt.tzinfo is None and text.endswith(_UTC_SUFFIXES):
                dt = dt.replace(tzinfo=dt_timezone.utc)
            return dt
        body, utc = text, False
        for suffix in _UTC_SUFFIXES:
            if text.endswith(suffix):
                body, utc = text[: -len(suffix)].rstrip(), True
                break
        try:
            dt = datetime.fromisoformat(body)
        except ValueError:
            raise SchemaError(f"{self.field} {text[:40]!r} is neither a number nor an ISO 8601 "
                              "date-time; pass --time-format (e.g. '%d/%m/%Y %H:%M:%S')",
                              "timestamp_ms") from None
        if utc:
            if dt.tzinfo is not None:
                raise SchemaError(f"{self.field} {text[:40]!r} has both an offset and UTC",
                                  "timestamp_ms")
            dt = dt.replace(tzinfo=dt_timezone.utc)
        return dt

    def _check_unit(self, num: float) -> None:
        if self.unit == "auto":
            return
        looks = unit_of(num)
        if looks != self.unit:
            warnings.warn(DataWarning(
                f"{self.field} values are read as {self.unit} (time_unit={self.unit}) but the "
                f"first one, {num:g}, looks like {looks}: pass --time-unit {looks} "
                "or --time-unit auto"), stacklevel=3)


#: What an :class:`ActionMap` returns for a value it drops.
DROP = None


class ActionMap:
    """Raw action value -> canonical action, or ``None`` to drop the row."""

    def __init__(self, mapping: Mapping[str, str | None] | None = None):
        self.exact: dict[str, str | None] = {}
        self.folded: dict[str, str | None] = {}
        if mapping is not None and not isinstance(mapping, Mapping):
            raise DataFormatError("actions must be a JSON object mapping values to an action "
                                  'or null, e.g. {"remove_from_cart": null, "1": "view"}')
        for raw, target in (mapping or {}).items():
            if target is not None:
                try:
                    target = normalize_action(target)
                except SchemaError as e:
                    raise DataFormatError(f"actions: {raw!r} -> {e}") from None
            key = str(raw).strip()
            self.exact[key] = target
            self.folded.setdefault(key.lower(), target)

    def __bool__(self) -> bool:
        return bool(self.exact)

    def __call__(self, v: Any, default: str) -> str | None:
        if v is None or v == "":
            return default
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise SchemaError(f"action must be a string, got {type(v).__name__}", "action")
        key = (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)).strip()
        if key in self.exact:
            return self.exact[key]
        low = key.lower()
        if low in self.folded:
            return self.folded[low]
        return normalize_action(key)


def id_text(v: Any, name: str) -> str | None:
    """An identifier as text: strings stripped, integers (and whole floats) in decimal."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise SchemaError(f"{name} must be a string or integer, got bool", name)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return v.strip() or None
    raise SchemaError(f"{name} must be a string or integer, got {type(v).__name__}", name)


def price_value(v: Any) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise SchemaError("price must be a number, got bool", "price")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            raise SchemaError(f"price {v[:40]!r} is not a number", "price") from None
    raise SchemaError(f"price must be a number, got {type(v).__name__}", "price")


def event_dict(values: Mapping[str, Any], default_id: str, time: TimeParser,
               actions: ActionMap, default_action: str) -> dict | None:
    """The Event dict of one row's raw field values, or ``None`` when its action is dropped.

    ``values`` maps Event field names (:data:`FIELDS`) to raw values; absent fields are
    absent. A row without a user id but with a session id is that session's user (as in
    session logs, where each session is its own shopper).
    """
    action = actions(values.get("action"), default_action)
    if action is None:
        return None
    session = id_text(values.get("session_id"), "session_id")
    user = id_text(values.get("user_id"), "user_id") or session
    ts = values.get("timestamp")
    d: dict[str, Any] = {
        "event_id": id_text(values.get("event_id"), "event_id") or default_id,
        "user_id": user,
        "item_id": id_text(values.get("item_id"), "item_id"),
        "action": action,
        "timestamp_ms": time(ts),
    }
    if session is not None:
        d["session_id"] = session
    cat = id_text(values.get("category_id"), "category_id")
    if cat is not None:
        d["category_id"] = cat
    price = price_value(values.get("price"))
    if price is not None:
        d["price"] = price
    return d
