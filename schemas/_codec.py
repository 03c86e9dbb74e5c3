"""Shared JSON codec for the dataclass records (orjson on the wire)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import orjson

from schemas.exceptions import SchemaError

T = TypeVar("T")


def to_json(record: Any) -> bytes:
    return orjson.dumps(dataclasses.asdict(record), option=orjson.OPT_SERIALIZE_NUMPY)


def from_json(cls: type[T], raw: bytes | str) -> T:
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise SchemaError(f"{cls.__name__}: not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise SchemaError(f"{cls.__name__}: expected a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in d.items() if k in names})
    except TypeError as e:
        raise SchemaError(f"{cls.__name__}: {e}") from None
