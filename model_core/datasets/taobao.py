"""Alibaba Tianchi "UserBehavior" CSV: ``user_id,item_id,category_id,behavior,timestamp``.

No header; timestamp in unix seconds; behavior ``pv`` / ``cart`` / ``fav`` / ``buy`` mapped by
:func:`schemas.normalize_action`. A row with another number of fields (such as a record cut
off mid-line) is rejected, never guessed at. Outlying but valid timestamps are kept.
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

N_FIELDS = 5
FIELDS = "user_id,item_id,category_id,behavior,timestamp"


def iter_taobao(path: str | Path) -> Iterator[LogItem]:
    prefix = event_id_prefix(path)
    for no, line in open_lines(path):
        try:
            parts = decode(line).split(",")
            if len(parts) != N_FIELDS:
                hint = " (record cut off?)" if len(parts) < N_FIELDS else ""
                raise SchemaError(
                    f"expected {N_FIELDS} comma-separated fields ({FIELDS}), "
                    f"got {len(parts)}{hint}"
                )
            user, item, cat, behavior, ts = (p.strip() for p in parts)
            if not ts.isdigit():
                raise SchemaError(f"timestamp {ts[:40]!r} is not whole unix seconds", "timestamp")
            yield make_event({
                "event_id": line_event_id(prefix, no, line),
                "user_id": user,
                "item_id": item,
                "category_id": cat or None,
                "action": behavior,
                "timestamp_ms": int(ts) * 1000,
            })
        except SchemaError as e:
            yield Rejected(no, str(e), line)
