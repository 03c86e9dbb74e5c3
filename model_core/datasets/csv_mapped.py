"""Generic CSV/TSV logs with a column mapping.

``columns`` maps event fields to column names (with a header) or 0-based column positions
(``header=False``): ``{"user_id": "uid", "item_id": "sku", "timestamp": "ts", ...}``.
Fields: ``user_id``, ``item_id``, ``timestamp`` (required; a ``session_id`` column stands in
for a missing ``user_id``); ``action``, ``session_id``, ``category_id``, ``price``,
``event_id`` (optional). With a header and no mapping for a field, a column named like the
field is used. Times and actions are read as :mod:`model_core.datasets.fields` describes
(``time_unit`` auto/s/ms/us/ns, ``time_format``, ``timezone``, ``time_offset_s``,
``actions``); rows without an action column get ``default_action``.

``delimiter`` is one character or a name (``tab``, ``comma``, ``semicolon``, ``pipe``,
``space``; ``\\t`` also means tab); by default a tab for ``.tsv``/``.tab`` files, else a comma.
Every row must have as many fields as the header (without a header: as the first row), so a
record cut off at the end of a file is rejected with that reason even when the lost field is
one the mapping does not use. Quoted fields are supported within one line (a quoted line
break is not).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from model_core.datasets._base import (
    LogItem,
    Rejected,
    decode,
    event_id_prefix,
    line_event_id,
    make_event,
    open_lines,
)
from model_core.datasets.fields import (
    FIELDS,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    ActionMap,
    TimeParser,
    event_dict,
)
from model_core.exceptions import DataFormatError
from schemas import SchemaError

DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|",
                   "space": " "}


def _resolve(columns: Mapping[str, str | int], names: list[str] | None) -> dict[str, int]:
    unknown = sorted(set(columns) - set(FIELDS))
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
    if "user_id" not in out and "session_id" in out:
        out["user_id"] = out["session_id"]
    missing = [f for f in REQUIRED_FIELDS if f not in out]
    if missing:
        raise DataFormatError(f"no column for required field(s) {', '.join(missing)}; "
                              "give them in columns={...}")
    return out


def delimiter_char(delimiter: str | None, path: str | Path) -> str:
    """The one-character delimiter meant by ``delimiter`` (see the module docstring)."""
    if delimiter is None or delimiter == "":
        return "\t" if Path(path).suffix.lower() in (".tsv", ".tab", ".inter") else ","
    d = DELIMITER_NAMES.get(delimiter.lower(), delimiter) if len(delimiter) > 1 else delimiter
    if len(d) != 1:
        raise DataFormatError(f"delimiter must be one character or one of "
                              f"{', '.join(DELIMITER_NAMES)}; got {delimiter!r}")
    return d


def _split(text: str, delimiter: str) -> list[str]:
    return next(csv.reader([text], delimiter=delimiter), [])


def iter_csv(path: str | Path, columns: Mapping[str, str | int] | None = None,
             delimiter: str | None = None, header: bool = True, time_unit: str = "auto",
             time_format: str | None = None, timezone: str = "UTC",
             actions: Mapping[str, str | None] | None = None, default_action: str = "view",
             time_offset_s: float = 0) -> Iterator[LogItem]:
    delimiter = delimiter_char(delimiter, path)
    if columns is not None and not isinstance(columns, Mapping):
        raise DataFormatError('columns must be a JSON object, e.g. {"user_id": "uid"}')
    time = TimeParser(time_unit, time_format, timezone, time_offset_s)
    amap = ActionMap(actions)
    prefix = event_id_prefix(path)
    lines = open_lines(path)
    names = None
    if header:
        first = next(lines, None)
        if first is None:
            return
        names = [n.strip() for n in _split(first[1].decode("utf-8-sig", "replace"), delimiter)]
    idx = _resolve(columns or {}, names)
    n_fields = len(names) if names is not None else None
    need = max(idx.values()) + 1
    for no, line in lines:
        try:
            parts = _split(decode(line), delimiter)
            if n_fields is None:  # no header: the first row says how many fields a row has
                n_fields = max(len(parts), need)
            if len(parts) != n_fields:
                hint = " (record cut off?)" if len(parts) < n_fields else ""
                what = "the header" if names is not None else "the first row"
                raise SchemaError(f"expected {n_fields} fields as in {what}, "
                                  f"got {len(parts)}{hint}")
            values: dict[str, Any] = {f: parts[i].strip() for f, i in idx.items()}
            d = event_dict(values, line_event_id(prefix, no, line), time, amap, default_action)
            if d is None:
                yield Rejected(no, f"action {values.get('action', '')[:40]!r} dropped by the "
                                   "action mapping", line, dropped=True)
                continue
            yield make_event(d)
        except SchemaError as e:
            yield Rejected(no, str(e), line)
