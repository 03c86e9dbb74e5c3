"""What every log reader yields: :class:`schemas.Event` or :class:`Rejected`.

Readers stream their file line by line (binary, so a rejected line keeps its exact bytes),
number lines from 1, skip blank lines without counting them, and never raise on a bad row:
the row comes out as :class:`Rejected` with a one-line reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_core.exceptions import DataFormatError
from schemas import Event, SchemaError

#: Most rejected lines kept (with their bytes) in a :class:`LogReadResult`; all are counted.
MAX_KEPT_ERRORS = 100


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line (or one event of a nested line) that did not become an event.

    ``dropped`` marks a row left out on purpose by an action mapping (``actions={"x": null}``):
    counted apart from bad rows, which it is not.
    """

    line_no: int  # 1-based line number in the file
    reason: str
    raw: bytes  # the line as read, without its line ending
    dropped: bool = False


@dataclass(slots=True)
class LogReadResult:
    events: list[Event]
    rejected: int = 0  # number of rejected lines (all of them)
    errors: list[Rejected] = field(default_factory=list)  # the first MAX_KEPT_ERRORS of them
    dropped: int = 0  # rows left out by an action mapping (not errors)
    warnings: list[str] = field(default_factory=list)  # DataWarnings raised while reading

    @property
    def n_lines(self) -> int:
        return len(self.events) + self.rejected + self.dropped


LogItem = Event | Rejected
Reader = Callable[..., Iterator[LogItem]]


def open_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_no, line)`` for every non-blank line, line endings stripped."""
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"{p}: no such file")
    with p.open("rb") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield no, line


def decode(line: bytes) -> str:
    """UTF-8 text of a line (a BOM at the start is dropped); raises :class:`SchemaError`."""
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SchemaError(f"line is not valid UTF-8 ({e.reason} at byte {e.start})") from None


def make_event(d: dict[str, Any]) -> Event:
    """Validate through :meth:`Event.from_dict` (the one validation path)."""
    return Event.from_dict(d)


def event_id_prefix(path: str | Path) -> str:
    return Path(path).stem


def line_event_id(prefix: str, line_no: int, line: bytes) -> str:
    """``<file stem>:<line_no>:<48-bit blake2b of the line, hex>``: the id of an event whose
    log has none.

    The stem and line number alone repeat in every export of a file with the same name
    (``part-00000.csv``): the stream took a second, different export for a re-send and
    dropped all of it as duplicates. With the line's content in the id, another file's line
    gets another id, while a true re-send of the same file gives the same ids (and the stream
    recognises it as redelivery).
    """
    return f"{prefix}:{line_no}:{hashlib.blake2b(line, digest_size=6).hexdigest()}"


def seconds_to_ms(text: str, field_name: str = "timestamp") -> int:
    """Parse unix seconds (int or float text) to integer milliseconds."""
    try:
        v = float(text)
    except ValueError:
        raise SchemaError(f"{field_name} {text[:40]!r} is not a number", field_name) from None
    if v != v or v in (float("inf"), float("-inf")):
        raise SchemaError(f"{field_name} must be finite", field_name)
    return int(round(v * 1000.0))
