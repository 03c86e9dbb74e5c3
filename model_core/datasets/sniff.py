"""Guess how to read a log from its first lines, and summarise the log read that way.

:func:`guess_reading` looks at the head of a file (up to :data:`SAMPLE_LINES` non-blank lines)
and returns a :class:`Reading`: a format, reader options, and the command-line flags that say
the same (``--format csv --columns '{...}' --time-unit ms ...``), so that what ``seqstream
inspect`` shows is exactly what ``train``, ``evaluate`` and ``replay`` will do. Guessing is by
content and by name, in this order:

1. a line starting with ``{``: JSON lines. An Event object as on the wire reads as plain
   ``jsonl``; a record holding a list of objects is a nested log (``events[].item`` paths);
   otherwise its keys are matched to Event fields by name.
2. delimited text: the delimiter is the one of tab, comma, semicolon and pipe that splits the
   head into the same number of fields on every line. Known layouts are recognised first:
   the Taobao UserBehavior rows (``taobao``), the session-rec header ``SessionId ItemId Time``
   (``yoochoose``) and RecBole's typed header (``recbole``); else a header of names is
   matched to Event fields (:data:`SYNONYMS`); a headerless file maps columns by what their
   values look like (a time, an action, ids).
3. two whitespace-separated ids per line: ``seqtxt``.

Times are sampled: numbers get their unit stated (``--time-unit ms``), text that ISO 8601
parsing reads needs nothing, other text gets a ``--time-format`` from :data:`TIME_FORMATS`.
Action values that are neither canonical nor aliases are proposed as dropped
(``--actions '{"remove_from_cart": null}'``) unless no value is known, in which case the
action column is left unmapped (every row is then a ``view``) with a note saying so.

:func:`summarise` reads the whole log with a :class:`Reading` and counts what came out.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from model_core.datasets.fields import FIELDS, ActionMap, TimeParser, unit_of
from model_core.exceptions import DataFormatError
from schemas import SchemaError, parse_event
from schemas.event import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

#: Lines of the head looked at.
SAMPLE_LINES = 200

#: Column / key names taken for each Event field (compared lower-case, without ``_`` ``-``
#: spaces), in order of preference.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "user_id": ("userid", "user", "uid", "visitorid", "visitor", "customerid", "customer",
                "clientid", "memberid", "shopperid", "buyerid", "reviewerid", "accountid"),
    "item_id": ("itemid", "item", "iid", "productid", "product", "sku", "articleid", "article",
                "movieid", "asin", "goodsid", "contentid", "offerid"),
    "timestamp": ("timestampms", "timestamp", "ts", "eventtime", "time", "datetime",
                  "eventtimestamp", "createdat", "date", "occurredat", "when", "t"),
    "action": ("action", "eventtype", "event", "behavior", "behaviour", "actiontype", "type",
               "interaction", "eventname", "kind", "btype"),
    "session_id": ("sessionid", "session", "usersession", "sid", "visitid"),
    "category_id": ("categoryid", "category", "catid", "cat", "categ"),
    "price": ("price", "amount", "cost", "unitprice"),
    "event_id": ("eventid",),  # not "id": a row number there would merge events
}

#: Date-time patterns tried when ISO 8601 parsing fails.
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S %Z", "%Y/%m/%d %H:%M:%S", "%d/%m/%Y %H:%M:%S",
                "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M",
                "%m/%d/%Y %H:%M", "%Y%m%d%H%M%S", "%Y-%m-%d", "%d/%m/%Y")

_DELIMS = ("\t", ",", ";", "|")
_DELIM_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}
_NUMERIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class Reading:
    """How to read a file: a format, its reader options, and the same as CLI flags."""

    fmt: str
    opts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was guessed and why, for a person

    def args(self) -> list[str]:
        """The flags that make ``train`` / ``evaluate`` / ``replay`` read the file this way."""
        out = ["--format", self.fmt]
        o = dict(self.opts)
        if "columns" in o:
            out += ["--columns", json.dumps(o.pop("columns"), separators=(",", ":"))]
        if "actions" in o:
            out += ["--actions", json.dumps(o.pop("actions"), separators=(",", ":"))]
        for key, flag in (("time_unit", "--time-unit"), ("time_format", "--time-format"),
                          ("timezone", "--timezone")):
            if key in o:
                out += [flag, str(o.pop(key))]
        for key, value in o.items():
            if key == "delimiter":
                value = _DELIM_NAMES.get(value, value)
            elif isinstance(value, bool):
                value = str(value).lower()
            out += ["--opt", f"{key}={value}"]
        return out


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.lower())


def _head(path: Path, n: int = SAMPLE_LINES) -> list[str]:
    out: list[str] = []
    with path.open("rb") as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            out.append(line.decode("utf-8-sig" if not out else "utf-8", "replace"))
            if len(out) >= n:
                break
    return out


def guess_reading(path: str | Path, actions: dict | None = None) -> Reading:
    """Guess format and options from the head of ``path``; raises :class:`DataFormatError`
    when the file is missing, empty, or like nothing this module knows. ``actions`` (an
    action mapping the user gives) counts its values as known when action columns are judged."""
    known = ActionMap(actions)
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"{p}: no such file")
    head = _head(p)
    if not head:
        raise DataFormatError(f"{p}: the file is empty")
    if head[0].lstrip().startswith("{"):
        return _guess_json(head, known)
    return _guess_delimited(p, head, known)


# --------------------------------------------------------------------------- JSON lines
def _records(head: list[str]) -> list[dict]:
    out = []
    for line in head:
        try:
            r = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(r, dict):
            out.append(r)
    return out


def _guess_json(head: list[str], known: ActionMap) -> Reading:
    good = 0
    for line in head[:20]:
        try:
            parse_event(line)
            good += 1
        except SchemaError:
            pass
    if good and good >= min(len(head), 20) // 2:
        return Reading("jsonl", notes=["records are Event objects as on the events topic"])
    records = _records(head)
    if not records:
        raise DataFormatError("the first lines start with '{' but are not JSON objects")
    first = records[0]
    list_key = next((k for k, v in first.items()
                     if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)), None)
    if list_key is None:
        columns = _match_names(_leaf_paths(first))
        values = {f: [_get_path(r, k) for r in records] for f, k in columns.items()}
        reading = Reading("jsonl", notes=["flat JSON records; keys matched to Event fields"])
        _finish(reading, columns, values, "key", known)
        reading.opts["columns"] = columns
        return reading
    elements = [el for r in records for el in (r.get(list_key) or []) if isinstance(el, dict)]
    inner_keys = list(dict.fromkeys(k for el in elements[:200] for k in el))
    inner = _match_names(inner_keys)
    top = {f: k for f, k in _match_names([k for k in first if k != list_key]).items()
           if f not in inner}
    columns = {**{f: k for f, k in top.items()},
               **{f: f"{list_key}[].{k}" for f, k in inner.items()}}
    values = {f: [r.get(k) for r in records] for f, k in top.items()}
    values.update({f: [el.get(k) for el in elements] for f, k in inner.items()})
    reading = Reading("jsonl", notes=[f"nested JSON: one record per line with its events in "
                                      f"the list {list_key!r}"])
    _finish(reading, columns, values, "path", known)
    reading.opts["columns"] = columns
    return reading


# --------------------------------------------------------------------------- delimited
def _guess_delimited(path: Path, head: list[str], known: ActionMap) -> Reading:
    rows_by = {}
    for d in _DELIMS:
        rows = [next(csv.reader([line], delimiter=d), []) for line in head]
        widths = Counter(len(r) for r in rows)
        width, n = widths.most_common(1)[0]
        if width >= 2 and n >= max(1, int(0.9 * len(rows))):
            rows_by[d] = (width, rows)
    if not rows_by:
        parts = [line.split() for line in head]
        if all(len(x) == 2 for x in parts):
            return Reading("seqtxt", notes=["two whitespace-separated ids per line: user item, "
                                            "in time order per user"])
        raise DataFormatError("cannot tell the delimiter: no tab, comma, semicolon or pipe "
                              "splits the first lines evenly; pass --format and --opt delimiter=")
    delim = max(rows_by, key=lambda d: rows_by[d][0])
    width, rows = rows_by[delim]
    first = [c.strip() for c in rows[0]]
    if delim == "\t" and {"SessionId", "ItemId", "Time"} <= set(first):
        return Reading("yoochoose", notes=["session-rec header SessionId ItemId Time"])
    if all(":" in c for c in first) and any(c.endswith((":token", ":float")) for c in first):
        return Reading("recbole", notes=["RecBole atomic header (name:type)"])
    if delim == "," and width == 5 and _taobao_like(rows):
        return Reading("taobao", notes=["Taobao UserBehavior rows: user,item,category,"
                                        "behavior,timestamp without a header"])
    has_header = _looks_like_header(first, rows[1:])
    reading = Reading("csv")
    if delim != ("\t" if path.suffix.lower() in (".tsv", ".tab") else ","):
        reading.opts["delimiter"] = delim
    body = [r for r in rows[1 if has_header else 0:] if len(r) == width]
    cols = list(zip(*[[c.strip() for c in r] for r in body], strict=True)) if body else []
    if has_header:
        columns = _match_names(first)
        values = {f: list(cols[first.index(c)]) for f, c in columns.items()} if cols else {}
        reading.notes.append(f"{_DELIM_NAMES[delim]}-separated with a header; columns matched "
                             "to Event fields by name")
        _finish(reading, columns, values, "column", known)
        reading.opts["columns"] = columns
    else:
        positions = _match_values(cols, known)
        values = {f: list(cols[i]) for f, i in positions.items()}
        reading.opts["header"] = False
        reading.notes.append(f"{_DELIM_NAMES[delim]}-separated without a header; columns "
                             "matched to Event fields by their values")
        _finish(reading, positions, values, "column", known)
        reading.opts["columns"] = positions
    return reading


def _taobao_like(rows: list[list[str]]) -> bool:
    known = {"pv", "cart", "fav", "buy"}
    ok = sum(1 for r in rows if len(r) == 5 and r[3].strip() in known and r[4].strip().isdigit())
    return ok >= 0.9 * len(rows)


def _looks_like_header(first: list[str], rest: list[list[str]]) -> bool:
    if any(_norm(c) in syn or _norm(c) == _norm(f)
           for c in first for f, syn in SYNONYMS.items()):
        return True
    # a header has no numbers where the rows below have them
    for i, c in enumerate(first):
        below = [r[i] for r in rest[:50] if i < len(r)]
        if below and all(_NUMERIC.match(b.strip()) for b in below) and not _NUMERIC.match(c):
            return True
    return False


def _leaf_paths(record: dict, prefix: str = "", depth: int = 0) -> list[str]:
    """Dotted paths of the non-object values in a record (objects up to 3 deep)."""
    out = []
    for k, v in record.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 3:
            out += _leaf_paths(v, path + ".", depth + 1)
        else:
            out.append(path)
    return out


def _get_path(record: dict, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _match_names(names: list[str]) -> dict[str, str]:
    """Event field -> name, by :data:`SYNONYMS` (the field's own name first); a dotted path
    matches by its whole text or by its last part (``product.sku`` is an item id)."""
    normed: dict[str, str] = {}
    for n in names:
        normed.setdefault(_norm(n), n)
    for n in names:
        normed.setdefault(_norm(n.rsplit(".", 1)[-1]), n)
    out: dict[str, str] = {}
    used: set[str] = set()
    for f in ("user_id", "item_id", "timestamp", "session_id", "action", "category_id",
              "price", "event_id"):
        for cand in (_norm(f),) + SYNONYMS[f]:
            n = normed.get(cand)
            if n is not None and n not in used:
                out[f] = n
                used.add(n)
                break
    return out


def _match_values(cols: list[tuple[str, ...]], known: ActionMap) -> dict[str, int]:
    """Event field -> column position, for a file without a header, from what values look like."""
    out: dict[str, int] = {}
    for i, col in enumerate(cols):
        if "timestamp" not in out and col and all(_time_ok(v) for v in col[:50]):
            out["timestamp"] = i
        elif "action" not in out and col and _share_actions(col, known) >= 0.5:
            out["action"] = i
    ids = [i for i in range(len(cols)) if i not in out.values()]
    for f, i in zip(("user_id", "item_id", "category_id"), ids, strict=False):
        out[f] = i
    return out


def _time_ok(v: str) -> bool:
    """A value that reads as a time an Event accepts (2000..2100)."""
    try:
        return MIN_TIMESTAMP_MS <= TimeParser("auto")(v) <= MAX_TIMESTAMP_MS
    except SchemaError:
        return False


def _is_action(v: str, known: ActionMap) -> bool:
    """An action value that reads (canonical, an alias, or in the user's mapping)."""
    try:
        known(v, "view")
        return True
    except SchemaError:
        return False


def _share_actions(values, known: ActionMap) -> float:
    vals = [str(v) for v in values if v not in (None, "")]
    return sum(_is_action(v, known) for v in vals) / len(vals) if vals else 0.0


# --------------------------------------------------------------------------- times, actions
def _finish(reading: Reading, columns: dict, values: dict[str, list], what: str,
            known: ActionMap) -> None:
    missing = [f for f in ("item_id", "timestamp") if f not in columns]
    if "user_id" not in columns and "session_id" not in columns:
        missing.insert(0, "user_id")
    if missing:
        raise DataFormatError(f"no {what} found for {', '.join(missing)}; name it with "
                              f"--columns '{{\"{missing[0]}\": \"...\"}}'")
    if "user_id" not in columns:
        reading.notes.append("no user column: each session is its own user")
    _guess_time(reading, [v for v in values.get("timestamp", []) if v not in (None, "")])
    if "action" in columns:
        _guess_actions(reading, columns, values.get("action", []), known)
    else:
        reading.notes.append("no action column: every event is a view")


def _guess_time(reading: Reading, sample: list) -> None:
    if not sample:
        return
    nums = [v for v in sample if isinstance(v, (int, float)) and not isinstance(v, bool)
            or isinstance(v, str) and _NUMERIC.match(v.strip())]
    if len(nums) == len(sample):
        units = Counter(unit_of(float(v)) for v in nums)
        unit = units.most_common(1)[0][0]
        reading.opts["time_unit"] = unit
        reading.notes.append(f"times are epoch numbers in {unit} (by size: "
                             f"{nums[0]} is {_iso(float(nums[0]), unit)})")
        return
    texts = [str(v).strip() for v in sample]
    try:
        parser = TimeParser("auto")
        for t in texts[:50]:
            parser(t)
        reading.notes.append(f"times are date-times that ISO 8601 reads (e.g. {texts[0]!r}); "
                             "without an offset they are UTC (--timezone to change)")
        return
    except SchemaError:
        pass
    for fmt in TIME_FORMATS:
        try:
            parser = TimeParser("auto", fmt)
            for t in texts[:50]:
                parser(t)
        except SchemaError:
            continue
        reading.opts["time_format"] = fmt
        reading.notes.append(f"times are date-times in the pattern {fmt!r} (e.g. {texts[0]!r}); "
                             "without a zone they are UTC (--timezone to change)")
        return
    reading.notes.append(f"times like {texts[0]!r} are in no pattern tried: pass --time-format")


def _iso(v: float, unit: str) -> str:
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    try:
        return datetime.fromtimestamp(v * scale, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def _guess_actions(reading: Reading, columns: dict, sample: list, known: ActionMap) -> None:
    counts = Counter(str(v).strip() for v in sample if v not in (None, ""))
    unknown = [v for v in counts if not _is_action(v, known)]
    if not counts:
        return
    if len(unknown) == len(counts):
        del columns["action"]
        reading.notes.append(f"action values {sorted(counts)[:8]} are no known action: the "
                             "column is left out and every event is a view; map them with "
                             "--actions '{\"VALUE\": \"view|click|cart|fav|purchase\"}'")
        return
    if unknown:
        reading.opts["actions"] = {v: None for v in sorted(unknown)}
        reading.notes.append(f"unknown action values dropped: {', '.join(sorted(unknown))} "
                             "(map one to an action in --actions to keep it)")


# --------------------------------------------------------------------------- summary
@dataclass
class Summary:
    """What reading a whole log gave."""

    events: int = 0
    rejected: int = 0
    dropped: int = 0
    first_reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    users: int = 0
    items: int = 0
    sessions: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    first_events: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["time_range"] = [_utc(self.first_ts_ms), _utc(self.last_ts_ms)]
        return d


def _utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z")


def summarise(path: str | Path, reading: Reading, n_first: int = 5,
              n_reasons: int = 5) -> Summary:
    """Read all of ``path`` as ``reading`` says and count events, bad lines and values."""
    from model_core.datasets import read_log

    res = read_log(path, reading.fmt, max_errors=n_reasons, **reading.opts)
    s = Summary(events=len(res.events), rejected=res.rejected, dropped=res.dropped,
                warnings=list(res.warnings))
    s.first_reasons = [f"line {r.line_no}: {r.reason}" for r in res.errors]
    s.first_events = [e.to_dict() for e in res.events[:n_first]]
    users, items, sessions = set(), set(), set()
    actions: Counter = Counter()
    lo = hi = None
    for e in res.events:
        users.add(e.user_id)
        items.add(e.item_id)
        if e.session_id is not None:
            sessions.add(e.session_id)
        actions[e.action] += 1
        t = e.timestamp_ms
        lo = t if lo is None or t < lo else lo
        hi = t if hi is None or t > hi else hi
    s.users, s.items, s.sessions = len(users), len(items), len(sessions)
    s.actions = dict(actions.most_common())
    s.first_ts_ms, s.last_ts_ms = lo, hi
    return s


__all__ = ["FIELDS", "Reading", "Summary", "guess_reading", "summarise"]
