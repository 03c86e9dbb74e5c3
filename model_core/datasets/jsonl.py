"""One :class:`schemas.Event` JSON object per line (the wire format of the events topic)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from model_core.datasets._base import LogItem, Rejected, open_lines
from schemas import SchemaError, parse_event


def iter_jsonl(path: str | Path) -> Iterator[LogItem]:
    for no, line in open_lines(path):
        try:
            yield parse_event(line)
        except SchemaError as e:
            yield Rejected(no, str(e), line)
