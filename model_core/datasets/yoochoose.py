"""session-rec prepared YooChoose clicks: tab-separated, header ``SessionId ItemId Time``.

``Time`` is unix seconds (float). Each session is its own user: ``user_id = session_id =
SessionId``; every row is a ``click``. Columns are found by header name, so their order may
differ; a file without the header is refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from model_core.datasets._base import (
    LogItem,
    Rejected,
    decode,
    event_id_prefix,
    line_event_id,
    make_event,
    open_lines,
    seconds_to_ms,
)
from model_core.exceptions import DataFormatError
from schemas import SchemaError

REQUIRED = ("SessionId", "ItemId", "Time")


def iter_yoochoose(path: str | Path, delimiter: str = "\t") -> Iterator[LogItem]:
    prefix = event_id_prefix(path)
    lines = open_lines(path)
    header = next(lines, None)
    if header is None:
        return
    names = [n.strip() for n in header[1].decode("utf-8-sig", "replace").split(delimiter)]
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise DataFormatError(
            f"{path}: yoochoose format needs a header with {', '.join(REQUIRED)} "
            f"(tab-separated); missing {', '.join(missing)} in {names[:6]}"
        )
    i_s, i_i, i_t = (names.index(n) for n in REQUIRED)
    n_cols = len(names)
    for no, line in lines:
        try:
            parts = decode(line).split(delimiter)
            if len(parts) != n_cols:
                raise SchemaError(f"expected {n_cols} fields as in the header, got {len(parts)}")
            session = parts[i_s].strip()
            yield make_event({
                "event_id": line_event_id(prefix, no, line),
                "user_id": session,
                "session_id": session,
                "item_id": parts[i_i].strip(),
                "action": "click",
                "timestamp_ms": seconds_to_ms(parts[i_t].strip(), "Time"),
            })
        except SchemaError as e:
            yield Rejected(no, str(e), line)
