"""JSON Schema (draft 2020-12) of each record that crosses Kafka, made from its dataclass.

:func:`json_schema` reads the record class itself: its fields (names, defaults, type hints)
give the properties, the required list and the JSON types, and the comment after a field
(``name: type  # what it is``) or the ``#:`` comment above it becomes the description. The
:class:`~schemas.event.Event` limits come from the constants its validation uses
(``MAX_ID_CHARS``, ``MIN_TIMESTAMP_MS`` .. ``MAX_TIMESTAMP_MS``, ``MAX_PRICE``, ``ACTIONS``),
so the schema and :meth:`Event.from_dict` cannot drift apart. ``seqstream schema`` prints it.

On input an event's action may also be an alias (``pv``, ``buy``, ...; any case): the schema
lists the canonical names, which is what a conforming producer sends and what is published.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any

from schemas.actions import _ALIASES, ACTIONS
from schemas.alert import Alert
from schemas.dead_letter import DeadLetter
from schemas.erasure import EraseRequest, ErasureAudit
from schemas.event import MAX_ID_CHARS, MAX_PRICE, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, Event
from schemas.metrics import MetricsWindow
from schemas.prediction import Prediction

#: The records, by name.
RECORDS: dict[str, type] = {c.__name__: c for c in (Event, Prediction, MetricsWindow,
                                                     DeadLetter, Alert, EraseRequest,
                                                     ErasureAudit)}

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}
_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(?P<after>.*))?$")


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        parts = [_type_schema(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append({"type": "null"})
        return parts[0] if len(parts) == 1 else {"anyOf": parts}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return {"type": "array", **({"items": _type_schema(item)} if item is not Any else {})}
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        return {"type": "object", **({"additionalProperties": _type_schema(args[1])}
                                     if len(args) == 2 else {})}
    return {}


def _descriptions(cls: type) -> dict[str, str]:
    """Field -> the comment after it, or the ``#:`` lines above it, in the class source."""
    out: dict[str, str] = {}
    above: list[str] = []
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return out
    for line in lines:
        s = line.strip()
        if s.startswith("#:"):
            above.append(s[2:].strip())
            continue
        if s.startswith("#") and above:
            above.append(s[1:].strip())
            continue
        m = _FIELD_LINE.match(line)
        if m and not s.startswith(("def ", "return", "@")):
            text = " ".join(above + ([m["after"]] if m["after"] else []))
            if text:
                out[m.group(1)] = text
        above = []
    return out


def _event_limits(props: dict[str, dict]) -> None:
    for name in ("event_id", "user_id", "item_id", "session_id", "category_id"):
        ids = [{"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
               {"type": "integer"}]
        if name in ("session_id", "category_id"):
            ids.append({"type": "null"})
        props[name] = {**{k: v for k, v in props[name].items() if k == "description"},
                       "anyOf": ids}
    props["action"]["enum"] = list(ACTIONS)
    aliases = sorted(a for a in _ALIASES if a not in ACTIONS)
    props["action"]["description"] = ("canonical action; on input also an alias, any case: "
                                      + ", ".join(aliases))
    props["timestamp_ms"].update(minimum=MIN_TIMESTAMP_MS, maximum=MAX_TIMESTAMP_MS,
                                 description="event time, epoch milliseconds, "
                                             "2000-01-01..2100-01-01 UTC")
    props["price"] = {"anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_PRICE},
                                {"type": "null"}]}


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of record class ``cls`` (one of :data:`RECORDS`)."""
    hints = typing.get_type_hints(cls)
    notes = _descriptions(cls)
    props: dict[str, dict] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        p = _type_schema(hints[f.name])
        if f.name in notes:
            p["description"] = notes[f.name]
        props[f.name] = p
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    if cls is Event:
        _event_limits(props)
    doc = (inspect.getdoc(cls) or "").split("\n\n")[0]
    if doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature, not a text
        doc = (inspect.getdoc(inspect.getmodule(cls)) or "").split("\n\n")[0]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"seqstream/{cls.__name__}",
        "title": cls.__name__,
        "description": doc,
        "type": "object",
        "properties": props,
        "required": required,
    }


__all__ = ["RECORDS", "json_schema"]
