"""JSON lines: Event objects (the events topic's wire format), or any records with a mapping.

Without options each line is one :class:`schemas.Event` object, validated as on the wire.

With ``columns`` (or any time/action option) each line is a record whose fields are found by
path: ``{"user_id": "visitor", "item_id": "product.sku", "timestamp": "ts"}``; a dot walks
into nested objects. Fields not in the mapping are looked up under their own name (and
``timestamp`` also under ``timestamp_ms``), as in the ``csv`` reader.

Nested logs (one session per line, its events in a list) name the list with ``[]``:
``{"session_id": "session_id", "item_id": "events[].item", "timestamp": "events[].ts"}``.
Paths with ``[]`` are read from each element of that list (all must name the same list);
paths without are read once from the record and shared by its events. One line gives one
event per element; a bad element is rejected on its own (reason ``event K: ...``, the whole
line kept as its bytes), its siblings still count. Event ids default to
``<file stem>:<line>`` (``:<K>`` appended in nested logs).

Times and actions: ``time_unit``, ``time_format``, ``timezone``, ``actions`` and
``default_action`` as in :mod:`model_core.datasets.fields`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from model_core.datasets._base import (
    LogItem,
    Rejected,
    event_id_prefix,
    line_event_id,
    make_event,
    open_lines,
)
from model_core.datasets.fields import FIELDS, ActionMap, TimeParser, event_dict
from model_core.exceptions import DataFormatError
from schemas import SchemaError, parse_event

_MISSING = object()


def iter_jsonl(path: str | Path, columns: Mapping[str, str] | None = None,
               time_unit: str | None = None, time_format: str | None = None,
               timezone: str | None = None, actions: Mapping[str, str | None] | None = None,
               default_action: str | None = None) -> Iterator[LogItem]:
    mapped = any(v is not None for v in (columns, time_unit, time_format, timezone, actions,
                                         default_action))
    if not mapped:
        for no, line in open_lines(path):
            try:
                yield parse_event(line)
            except SchemaError as e:
                yield Rejected(no, str(e), line)
        return
    yield from _iter_mapped(path, RecordMapping(columns or {}), TimeParser(
        time_unit or "auto", time_format, timezone or "UTC"), ActionMap(actions),
        default_action or "view")


class RecordMapping:
    """Event field -> path in a record; ``list_path`` is the events list of a nested log."""

    def __init__(self, columns: Mapping[str, str]):
        if not isinstance(columns, Mapping):
            raise DataFormatError('columns must be a JSON object, e.g. {"user_id": "uid"}')
        unknown = sorted(set(columns) - set(FIELDS))
        if unknown:
            raise DataFormatError(f"unknown field(s) in columns: {', '.join(unknown)}; "
                                  f"fields are {', '.join(FIELDS)}")
        self.top: dict[str, tuple[str, ...]] = {}
        self.inner: dict[str, tuple[str, ...]] = {}
        lists = set()
        for f, path in columns.items():
            if not isinstance(path, str) or not path.strip():
                raise DataFormatError(f"columns: the path for {f} must be a non-empty string")
            head, sep, tail = path.partition("[]")
            if sep:
                if "[]" in tail or not tail.startswith(".") or not head:
                    raise DataFormatError(f"columns: path {path!r} for {f}: use LIST[].FIELD "
                                          "with one [] (e.g. events[].item)")
                lists.add(head)
                self.inner[f] = tuple(tail[1:].split("."))
            else:
                self.top[f] = tuple(path.split("."))
        if len(lists) > 1:
            raise DataFormatError(f"columns: all [] paths must name one list, got "
                                  f"{', '.join(sorted(lists))}")
        self.list_path = tuple(next(iter(lists)).split(".")) if lists else None
        # unmapped fields under their own names (top level for flat logs, in the element else)
        defaults = self.inner if self.list_path else self.top
        for f in FIELDS:
            if f not in self.top and f not in self.inner:
                defaults[f] = (f,)
        if "timestamp" not in columns:
            defaults["timestamp"] = ("timestamp", "|", "timestamp_ms")

    def values(self, record: Any, element: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f, path in self.top.items():
            v = _get(record, path)
            if v is not _MISSING:
                out[f] = v
        if element is not None:
            for f, path in self.inner.items():
                v = _get(element, path)
                if v is not _MISSING:
                    out[f] = v
        return out


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    if "|" in path:  # alternatives: the first present
        i = path.index("|")
        v = _get(obj, path[:i])
        return v if v is not _MISSING else _get(obj, path[i + 1:])
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _iter_mapped(path: str | Path, mapping: RecordMapping, time: TimeParser, amap: ActionMap,
                 default_action: str) -> Iterator[LogItem]:
    prefix = event_id_prefix(path)
    for no, line in open_lines(path):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            yield Rejected(no, f"not valid JSON: {e}", line)
            continue
        if not isinstance(record, dict):
            yield Rejected(no, f"record must be a JSON object, got {type(record).__name__}", line)
            continue
        eid = line_event_id(prefix, no, line)
        if mapping.list_path is None:
            yield _one(mapping.values(record), eid, no, line, time, amap, default_action, "")
            continue
        elements = _get(record, mapping.list_path)
        if elements is _MISSING or not isinstance(elements, list):
            what = "missing" if elements is _MISSING else f"a {type(elements).__name__}"
            yield Rejected(no, f"{'.'.join(mapping.list_path)} is {what}, not a list of events",
                           line)
            continue
        if not elements:
            yield Rejected(no, f"{'.'.join(mapping.list_path)} is an empty list", line)
            continue
        for k, el in enumerate(elements):
            if not isinstance(el, dict):
                yield Rejected(no, f"event {k}: must be a JSON object, got {type(el).__name__}",
                               line)
                continue
            yield _one(mapping.values(record, el), f"{eid}:{k}", no, line, time, amap,
                       default_action, f"event {k}: ")


def _one(values: dict, default_id: str, no: int, line: bytes, time: TimeParser,
         amap: ActionMap, default_action: str, where: str) -> LogItem:
    try:
        d = event_dict(values, default_id, time, amap, default_action)
        if d is None:
            return Rejected(no, f"{where}action {str(values.get('action'))[:40]!r} dropped by "
                                "the action mapping", line, dropped=True)
        return make_event(d)
    except SchemaError as e:
        return Rejected(no, f"{where}{e}", line)
