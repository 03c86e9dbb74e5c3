"""RecBole atomic ``.inter`` files: tab-separated, header names typed ``name:token`` /
``name:float`` (``user_id:token item_id:token rating:float timestamp:float``).

Needs ``user_id`` and ``item_id``; ``timestamp`` (unix seconds) when present, else a synthetic
monotone clock as in :mod:`~model_core.datasets.seqtxt`. Every row gets ``action``.

Event validation accepts event times from 2000-01-01 only; MovieLens 100K is from 1997-98.
``time_offset_s="auto"`` (default) therefore shifts the whole file by a whole number of weeks
(weekdays and gaps kept) when its first timestamp lies before 2000, so that it starts in
2005; pass ``time_offset_s=0`` to keep raw times (such rows are then rejected).
"""

from __future__ import annotations

import math
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
from model_core.datasets.seqtxt import BASE_MS
from model_core.exceptions import DataFormatError
from schemas import SchemaError
from schemas.event import MIN_TIMESTAMP_MS

WEEK_S = 7 * 86400
#: 2005-01-01T00:00:00Z: where "auto" moves the first timestamp of a pre-2000 file.
AUTO_TARGET_S = 1_104_537_600


def auto_offset_s(first_ts_s: float) -> int:
    if first_ts_s * 1000 >= MIN_TIMESTAMP_MS:
        return 0
    return math.ceil((AUTO_TARGET_S - first_ts_s) / WEEK_S) * WEEK_S


def iter_recbole(path: str | Path, action: str = "view",
                 time_offset_s: int | str = "auto") -> Iterator[LogItem]:
    if not (time_offset_s == "auto" or isinstance(time_offset_s, (int, float))):
        raise DataFormatError(f"time_offset_s must be 'auto' or seconds, got {time_offset_s!r}")
    prefix = event_id_prefix(path)
    lines = open_lines(path)
    first = next(lines, None)
    if first is None:
        return
    names = [n.strip().split(":", 1)[0] for n in first[1].decode("utf-8-sig", "replace").split("\t")]
    for need in ("user_id", "item_id"):
        if need not in names:
            raise DataFormatError(f"{path}: RecBole .inter header lacks {need!r}: {names[:8]}")
    i_u, i_i = names.index("user_id"), names.index("item_id")
    i_t = names.index("timestamp") if "timestamp" in names else None
    offset: float | None = None if time_offset_s == "auto" else float(time_offset_s)
    n_cols = len(names)
    for no, line in lines:
        try:
            parts = decode(line).split("\t")
            if len(parts) != n_cols:
                raise SchemaError(f"expected {n_cols} tab-separated fields as in the header, "
                                  f"got {len(parts)}")
            if i_t is None:
                ts_ms: int | float = BASE_MS + no
            else:
                try:
                    ts = float(parts[i_t])
                except ValueError:
                    raise SchemaError(f"timestamp {parts[i_t][:40]!r} is not a number",
                                      "timestamp_ms") from None
                if not math.isfinite(ts):
                    raise SchemaError("timestamp must be finite", "timestamp_ms")
                if offset is None:
                    offset = float(auto_offset_s(ts))
                ts_ms = int(round((ts + offset) * 1000))
            yield make_event({
                "event_id": line_event_id(prefix, no, line),
                "user_id": parts[i_u].strip(),
                "item_id": parts[i_i].strip(),
                "action": action,
                "timestamp_ms": ts_ms,
            })
        except SchemaError as e:
            yield Rejected(no, str(e), line)
