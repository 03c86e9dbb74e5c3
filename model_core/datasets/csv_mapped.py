"""Generic CSV/TSV logs with a column mapping.

``columns`` maps event fields to column names (with a header) or 0-based column positions
(``header=False``): ``{"user_id": "uid", "item_id": "sku", "timestamp": "ts", ...}``.
Fields: ``user_id``, ``item_id``, ``timestamp`` (required); ``action``, ``session_id``,
``category_id``, ``price``, ``event_id`` (optional). With a header and no mapping for a field,
a column named like the field is used. Time is in ``time_unit`` (``s`` or ``ms``), plus
``time_offset_s``. Rows without an action column get ``default_action``.
Quoted fields are supported within one line (a quoted line break is not).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

from model_core.datasets._base import (
    LogItem,
    Rejected,
    decode,
    event_id_prefix,
    make_event,
    open_lines,
)
from model_core.exceptions import DataFormatError
from schemas import SchemaError

REQUIRED_FIELDS = ("user_id", "item_id", "timestamp")
OPTIONAL_FIELDS = ("action", "session_id", "category_id", "price", "event_id")
TIME_UNITS = {"s": 1000.0, "ms": 1.0}


def _resolve(columns: Mapping[str, str | int], names: list[str] | None) -> dict[str, int]:
    unknown = sorted(set(columns) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise DataFormatError(
            f"unknown field(s) in columns: {', '.join(unknown)}; "
            f"fields are {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}"
        )
    out: dict[str, int] = {}
    for f in REQUIRED_FIELDS + OPTIONAL_FIELDS:
        col = columns.get(f)
        if col is None and names is not None and f in names:
            col = f
        if col is None and f == "timestamp" and names is not None and "timestamp_ms" in names:
            col = "timestamp_ms"
        if col is None:
            continue
        if isinstance(col, int) or (isinstance(col, str) and col.isdigit() and names is None):
            out[f] = int(col)
        elif names is None:
            raise DataFormatError(f"column {col!r} for {f}: without a header use 0-based positions")
        elif col not in names:
            raise DataFormatError(f"column {col!r} for {f} is not in the header {names[:12]}")
        else:
            out[f] = names.index(col)
    missing = [f for f in REQUIRED_FIELDS if f not in out]
    if missing:
        raise DataFormatError(f"no column for required field(s) {', '.join(missing)}; "
                              "give them in columns={...}")
    return out


def _to_ms(v: float) -> int | float:
    # non-finite values pass through so that Event validation names the problem
    return int(round(v)) if math.isfinite(v) else v


def _split(text: str, delimiter: str) -> list[str]:
    return next(csv.reader([text], delimiter=delimiter), [])


def iter_csv(path: str | Path, columns: Mapping[str, str | int] | None = None,
             delimiter: str | None = None, header: bool = True, time_unit: str = "s",
             default_action: str = "view", time_offset_s: float = 0) -> Iterator[LogItem]:
    if time_unit not in TIME_UNITS:
        raise DataFormatError(f"time_unit must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    if delimiter is None:
        delimiter = "\t" if Path(path).suffix.lower() in (".tsv", ".tab", ".inter") else ","
    scale = TIME_UNITS[time_unit]
    prefix = event_id_prefix(path)
    lines = open_lines(path)
    names = None
    if header:
        first = next(lines, None)
        if first is None:
            return
        names = [n.strip() for n in _split(first[1].decode("utf-8-sig", "replace"), delimiter)]
    idx = _resolve(columns or {}, names)
    need = max(idx.values()) + 1
    for no, line in lines:
        try:
            parts = _split(decode(line), delimiter)
            if len(parts) < need:
                raise SchemaError(f"expected at least {need} fields, got {len(parts)}")
            get = {f: parts[i].strip() for f, i in idx.items()}
            try:
                ts = float(get["timestamp"])
            except ValueError:
                raise SchemaError(f"timestamp {get['timestamp'][:40]!r} is not a number",
                                  "timestamp_ms") from None
            d: dict = {
                "event_id": get.get("event_id") or f"{prefix}:{no}",
                "user_id": get["user_id"],
                "item_id": get["item_id"],
                "action": get.get("action") or default_action,
                "timestamp_ms": _to_ms(ts * scale + time_offset_s * 1000.0),
                "session_id": get.get("session_id") or None,
                "category_id": get.get("category_id") or None,
            }
            if get.get("price"):
                try:
                    d["price"] = float(get["price"])
                except ValueError:
                    raise SchemaError(f"price {get['price'][:40]!r} is not a number",
                                      "price") from None
            yield make_event(d)
        except SchemaError as e:
            yield Rejected(no, str(e), line)
