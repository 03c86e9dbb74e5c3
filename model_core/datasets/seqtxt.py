"""``user item`` per line, each user's lines in time order, no timestamps (BERT4Rec data).

Timestamps are synthesized: ``timestamp_ms = base_ms + line_no`` — monotone over the file,
so every user's order is the file order. Every row is a ``view``.
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
)
from schemas import SchemaError

#: 2020-01-01T00:00:00Z in ms: the synthetic clock's origin.
BASE_MS = 1_577_836_800_000


def iter_seqtxt(path: str | Path, base_ms: int = BASE_MS, action: str = "view") -> Iterator[LogItem]:
    prefix = event_id_prefix(path)
    for no, line in open_lines(path):
        try:
            parts = decode(line).split()
            if len(parts) != 2:
                raise SchemaError(f"expected 2 whitespace-separated fields (user item), got {len(parts)}")
            yield make_event({
                "event_id": line_event_id(prefix, no, line),
                "user_id": parts[0],
                "item_id": parts[1],
                "action": action,
                "timestamp_ms": base_ms + no,
            })
        except SchemaError as e:
            yield Rejected(no, str(e), line)
