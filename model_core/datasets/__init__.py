"""Behaviour-log readers, one module per format, and a synthetic log generator.

    iter_log(path, fmt, **opts)  -> iterator of Event | Rejected, streamed from the file
    read_log(path, fmt, **opts)  -> LogReadResult(events, rejected, errors)

Formats (:data:`FORMATS`): ``taobao``, ``yoochoose``, ``jsonl``, ``csv``, ``seqtxt``,
``recbole``; the options of each are the keyword arguments of its ``iter_*`` function.
``csv`` and ``jsonl`` take a field mapping (``columns``) and read times and actions as
:mod:`model_core.datasets.fields` says (``time_unit``, ``time_format``, ``timezone``,
``actions``); :mod:`model_core.datasets.sniff` guesses a format and those options from a
file's head (``seqstream inspect``).
Event ids are ``"<file stem>:<line_no>:<hash of the line>"`` (deterministic: the same for a
re-sent file, different for another file of the same name, :func:`._base.line_event_id`;
nested JSON lines add ``:<k>`` per event of the line) except for plain ``jsonl`` (the
record's own id) and a mapped ``event_id`` field. Every event is validated by
:meth:`schemas.Event.from_dict`; a bad row becomes :class:`Rejected`, never an exception,
and a row an action mapping drops is a :class:`Rejected` with ``dropped=True``. A wrong
format name, unknown option or unusable header or mapping raises
:class:`~model_core.exceptions.DataFormatError` before any row is read.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model_core.datasets._base import MAX_KEPT_ERRORS, LogItem, LogReadResult, Reader, Rejected
from model_core.datasets.csv_mapped import iter_csv
from model_core.datasets.fields import DataWarning
from model_core.datasets.jsonl import iter_jsonl
from model_core.datasets.recbole import iter_recbole
from model_core.datasets.seqtxt import iter_seqtxt
from model_core.datasets.taobao import iter_taobao
from model_core.datasets.yoochoose import iter_yoochoose
from model_core.exceptions import DataFormatError

FORMATS: dict[str, Reader] = {
    "taobao": iter_taobao,
    "yoochoose": iter_yoochoose,
    "jsonl": iter_jsonl,
    "csv": iter_csv,
    "seqtxt": iter_seqtxt,
    "recbole": iter_recbole,
}


def _reader(fmt: str, opts: dict[str, Any]) -> Reader:
    reader = FORMATS.get(fmt)
    if reader is None:
        raise DataFormatError(f"unknown log format {fmt!r}; choose one of {', '.join(FORMATS)}")
    params = list(inspect.signature(reader).parameters)[1:]
    unknown = sorted(set(opts) - set(params))
    if unknown:
        raise DataFormatError(f"format {fmt!r} has no option(s) {', '.join(unknown)}; "
                              f"its options: {', '.join(params) or 'none'}")
    return reader


def iter_log(path: str | Path, fmt: str, **opts: Any) -> Iterator[LogItem]:
    """Stream ``path`` as events and rejected lines, in file order."""
    reader = _reader(fmt, opts)
    if not Path(path).is_file():
        raise DataFormatError(f"{path}: no such file")
    return reader(path, **opts)


def read_log(path: str | Path, fmt: str, max_errors: int = MAX_KEPT_ERRORS,
             **opts: Any) -> LogReadResult:
    """Read a whole log; rejected lines are counted, the first ``max_errors`` kept.

    Rows an action mapping drops are counted in ``dropped``; :class:`DataWarning` s raised
    while reading are kept as text in ``warnings`` (and not shown), for the caller to print.
    """
    result = LogReadResult(events=[])
    append = result.events.append
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        for item in iter_log(path, fmt, **opts):
            if isinstance(item, Rejected):
                if item.dropped:
                    result.dropped += 1
                    continue
                result.rejected += 1
                if len(result.errors) < max_errors:
                    result.errors.append(item)
            else:
                append(item)
    for w in caught:
        if issubclass(w.category, DataWarning):
            result.warnings.append(str(w.message))
        else:  # not ours: hand it on as it came
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def guess_format(path: str | Path) -> str | None:
    """A format name from the file name, or None when it is not obvious
    (:func:`model_core.datasets.sniff.guess_reading` looks at the content)."""
    name = Path(path).name.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".inter"):
        return "recbole"
    if name == "userbehavior.csv":
        return "taobao"
    if "yoochoose" in name or "rsc15" in name:
        return "yoochoose"
    if name.endswith((".csv", ".tsv")):
        return "csv"  # with a header; columns named like the Event fields unless mapped
    return None


def format_by_name(path: str | Path, given: str | None = None) -> str | None:
    """The format to read ``path`` with when ``given`` or the file's name settles it; None
    when only its head can tell (no format given and the name says CSV, JSON lines or
    nothing): then :func:`model_core.datasets.sniff.guess_reading` decides, as
    ``seqstream inspect`` does, which column is which and the time unit."""
    if given is not None:
        return given
    named = guess_format(path)
    return None if named in (None, "csv", "jsonl") else named


def reading_for(path: str | Path, fmt: str | None = None,
                given: dict[str, Any] | None = None) -> tuple[str, dict[str, Any], str]:
    """How ``train``, ``evaluate``, ``demo --data`` and ``learner --warm`` read ``path``:
    ``(format, reader options, how)``, one rule for all of them.

    With ``fmt``, or a file name that settles the format (:func:`format_by_name`), that
    format and the ``given`` options, ``how`` empty. Else ``seqstream inspect``'s guess
    (:func:`model_core.datasets.sniff.guess_reading`: which column is which, the time unit)
    with the ``given`` options put over it, and ``how`` the guess as shell-quoted flags when
    it adds anything to what the name says ("" for a ``.csv`` of Event columns, which needs
    no flag), for the caller's one line "read as `seqstream inspect` guesses: ...". Raises
    :class:`DataFormatError` for a file it cannot guess (missing, empty, unknown layout)."""
    import shlex

    from model_core.datasets.sniff import guess_reading

    given = dict(given or {})
    named = format_by_name(path, fmt)
    if named is not None:
        return named, given, ""
    reading = guess_reading(path, actions=given.get("actions"))
    reading.opts.update(given)
    if reading.fmt == guess_format(path) and not set(reading.opts) - set(given):
        return reading.fmt, reading.opts, ""
    how = " ".join(a if a.startswith("--") else shlex.quote(a) for a in reading.args())
    return reading.fmt, reading.opts, how


__all__ = [
    "FORMATS",
    "DataWarning",
    "MAX_KEPT_ERRORS",
    "LogItem",
    "LogReadResult",
    "Rejected",
    "format_by_name",
    "guess_format",
    "iter_log",
    "read_log",
    "reading_for",
]
