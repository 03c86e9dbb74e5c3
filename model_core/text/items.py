"""Item metadata: one text description per item id, read from CSV/TSV, JSONL or RecBole ``.item``.

``read_item_metadata(path, id_column, text_columns)`` returns :class:`ItemMetadata`: item ids
(strings, as the interaction logs spell them) aligned with one description each, made by
joining the chosen text columns. Bad lines (wrong field count, invalid JSON, missing id,
no text) are counted by reason and the first few kept as examples — never raised.

Formats (``fmt="auto"`` picks by suffix, then by the first line):

- ``csv`` / ``tsv``: a header line names the columns; quoted fields as the csv module reads them.
- ``jsonl``: one JSON object per line; list values are joined with ", ".
- ``recbole``: RecBole atomic files (``.item``): tab-separated, header names carry a type
  suffix (``item_id:token``, ``movie_title:token_seq``, ``rating:float``). Columns may be
  named with or without the suffix.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from model_core.text.exceptions import ItemMetadataError

__all__ = ["FORMATS", "ItemMetadata", "detect_format", "iter_item_records", "parse_item_record",
           "read_item_metadata", "split_columns"]

FORMATS = ("auto", "csv", "tsv", "jsonl", "recbole")
DEFAULT_JOIN = "; "
MAX_EXAMPLES = 10
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".jsonl": "jsonl",
                   ".ndjson": "jsonl", ".json": "jsonl", ".item": "recbole"}


@dataclass(slots=True)
class ItemMetadata:
    """Item ids with one text description each (first occurrence of an id wins)."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    n_lines: int = 0  # data lines seen (header excluded)
    bad: Counter = field(default_factory=Counter)  # reason -> count of skipped lines
    examples: list[str] = field(default_factory=list)  # first few "line N: reason"
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())

    def as_dict(self) -> dict[str, str]:
        return dict(zip(self.ids, self.texts, strict=True))

    def _skip(self, line_no: int, reason: str, detail: str = "") -> None:
        self.bad[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {line_no}: {reason}{': ' + detail if detail else ''}")

    def report(self) -> str:
        """One-paragraph summary for logs: items read, lines skipped by reason, examples."""
        head = f"{self.source or 'item metadata'}: {len(self.ids)} items from {self.n_lines} lines"
        if not self.bad:
            return head + ", no bad lines"
        reasons = ", ".join(f"{n} {r}" for r, n in self.bad.most_common())
        return f"{head}; skipped {self.n_bad} ({reasons}); e.g. " + " | ".join(self.examples[:3])


def split_columns(spec: str | Sequence[str] | None) -> list[str]:
    """``"title,genres"`` or ``["title", "genres"]`` -> ``["title", "genres"]``."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [c.strip() for c in spec.split(",") if c.strip()]
    return [str(c).strip() for c in spec if str(c).strip()]


def detect_format(path: str | Path, first_line: str | None = None) -> str:
    fmt = _SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is not None:
        if fmt == "tsv" and first_line is not None and _has_recbole_header(first_line.split("\t")):
            return "recbole"
        return fmt
    if first_line is None:
        return "csv"
    stripped = first_line.lstrip()
    if stripped.startswith("{"):
        return "jsonl"
    if "\t" in first_line:
        return "recbole" if _has_recbole_header(first_line.split("\t")) else "tsv"
    return "csv"


def _has_recbole_header(names: Iterable[str]) -> bool:
    names = [n.strip() for n in names]
    return bool(names) and all(":" in n for n in names)


def _base_name(name: str) -> str:
    """RecBole ``movie_title:token_seq`` -> ``movie_title``."""
    return name.strip().split(":", 1)[0]


def _resolve(names: list[str], wanted: str, source: str) -> int:
    """Column index of ``wanted`` (exact name, or name without a RecBole type suffix)."""
    if wanted in names:
        return names.index(wanted)
    bases = [_base_name(n) for n in names]
    if _base_name(wanted) in bases:
        return bases.index(_base_name(wanted))
    raise ItemMetadataError(f"{source}: no column {wanted!r}; columns are {', '.join(names)}")


def _text_of(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(s for s in (_text_of(v) for v in value) if s)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _record_fields(record: dict, id_column: str, cols: list[str], join: str) -> tuple[str, str]:
    base = {_base_name(k): v for k, v in record.items()}
    item_id = _text_of(record.get(id_column, base.get(_base_name(id_column))))
    cols = cols or [k for k in record if _base_name(k) != _base_name(id_column)]
    parts = [_text_of(record.get(c, base.get(_base_name(c)))) for c in cols]
    return item_id, join.join(p for p in parts if p)


def parse_item_record(record, id_column: str = "item_id",
                      text_columns: Sequence[str] | str | None = None,
                      join: str = DEFAULT_JOIN) -> tuple[str, str] | None:
    """One metadata record (a dict, or JSON bytes/str of one) -> ``(item_id, text)``.

    ``text_columns`` default: every field except the id. Returns ``None`` when the record has
    no id or no text; raises ``ValueError`` when it is not a JSON object. Used for the
    stream's ``items`` topic as well as JSONL files.
    """
    if isinstance(record, (bytes, bytearray, memoryview, str)):
        try:
            record = orjson.loads(bytes(record) if not isinstance(record, str) else record)
        except orjson.JSONDecodeError as e:
            raise ValueError(f"an item record must be a JSON object: {e}") from None
    if not isinstance(record, dict):
        raise ValueError("an item record must be a JSON object")
    item_id, text = _record_fields(record, id_column, split_columns(text_columns), join)
    return (item_id, text) if item_id and text else None


def iter_item_records(path: str | Path, fmt: str = "auto") -> Iterator[tuple[int, list[str] | dict | None]]:
    """Raw records of a metadata file: ``(line_no, fields_or_dict)``; header first for
    delimited formats (line 1), ``None`` for a JSON line that does not parse."""
    path = Path(path)
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        if fmt == "jsonl":
            for no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    rec = None
                yield no, rec if isinstance(rec, dict) else None
            return
        if fmt == "recbole":
            # RecBole atomic files are plain tab-separated: no quoting at all.
            for no, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield no, line.split("\t")
            return
        reader = csv.reader(fh, delimiter="\t" if fmt == "tsv" else ",")
        for row in reader:
            if any(c.strip() for c in row):
                yield reader.line_num, row


def read_item_metadata(path: str | Path, id_column: str = "item_id",
                       text_columns: Sequence[str] | str | None = None, fmt: str = "auto",
                       join: str = DEFAULT_JOIN) -> ItemMetadata:
    """Read item descriptions from ``path``.

    ``id_column``: the item id column (``item_id`` matches RecBole's ``item_id:token``).
    ``text_columns``: columns joined, in order, into one description (``join`` between
    non-empty values); default: every column except the id (for RecBole: every ``token`` /
    ``token_seq`` column, i.e. not floats). Raises :class:`ItemMetadataError` only when the
    whole file is unusable (missing, empty, no such column).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ItemMetadataError(f"{source}: no such item metadata file")
    if fmt not in FORMATS:
        raise ItemMetadataError(f"unknown item metadata format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "auto":
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
        if not first.strip():
            raise ItemMetadataError(f"{source}: empty file")
        fmt = detect_format(path, first)
    out = ItemMetadata(source=source)
    seen: set[str] = set()
    wanted = split_columns(text_columns)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

    def add(no: int, item_id: str, text: str) -> None:
        if not item_id:
            out._skip(no, "missing id")
        elif not text:
            out._skip(no, "no text", item_id)
        elif item_id in seen:
            out._skip(no, "duplicate id", item_id)
        else:
            seen.add(item_id)
            out.ids.append(item_id)
            out.texts.append(text)

    records = iter_item_records(path, fmt)
    if fmt == "jsonl":
        for no, rec in records:
            out.n_lines += 1
            if rec is None:
                out._skip(no, "not a JSON object")
                continue
            add(no, *_record_fields(rec, id_column, wanted, join))
        if out.n_lines == 0:
            raise ItemMetadataError(f"{source}: no records")
        return out

    header = next(records, None)
    if header is None:
        raise ItemMetadataError(f"{source}: empty file")
    names = [n.strip().lstrip("\ufeff") for n in header[1]]
    id_idx = _resolve(names, id_column, source)
    if wanted:
        text_idx = [_resolve(names, c, source) for c in wanted]
    else:
        text_idx = [i for i, n in enumerate(names)
                    if i != id_idx and not (fmt == "recbole" and n.endswith((":float", ":float_seq")))]
    if not text_idx:
        raise ItemMetadataError(f"{source}: no text columns besides the id column {names[id_idx]!r}")
    for no, row in records:
        out.n_lines += 1
        if len(row) != len(names):
            out._skip(no, "wrong field count", f"{len(row)} fields, header has {len(names)}")
            continue
        text = join.join(v for v in (row[i].strip() for i in text_idx) if v)
        add(no, row[id_idx].strip(), text)
    return out
