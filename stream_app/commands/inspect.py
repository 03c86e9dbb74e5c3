"""``seqstream inspect FILE``: how seqstream would read a log, and what it would get.

    seqstream inspect events.csv                    # guess everything
    seqstream inspect events.csv --time-format '%d/%m/%Y %H:%M'   # correct a guess
    seqstream inspect events.csv --json             # one object; its "args" are the flags

Prints the guessed format and field mapping (with why), the first parsed events, the number
of good, bad and dropped lines with the first reasons, users, items, sessions, actions, the
time range, and the exact flags to give ``train``, ``evaluate``, ``compare`` and ``replay``.
Reader options given here override the guess (so a corrected reading can be checked before
use), and the printed flags then include them. Exits 1 when no line reads as an event.
"""

from __future__ import annotations

import json
import shlex
import sys

from model_core.terminal import width, wrapped
from stream_app.commands._common import (
    add_reader_options,
    guessed_reading,
    positive_int,
    reader_options,
)


def register(sub) -> None:
    p = sub.add_parser("inspect", help="guess how to read a log; show what it holds and the "
                                       "flags for train/evaluate/replay")
    p.add_argument("file")
    p.add_argument("--show", type=positive_int, default=5, metavar="N",
                   help="parsed events to show (default 5)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object; its 'args' go after train/evaluate/replay")
    add_reader_options(p)
    p.set_defaults(func=run)


def reading_from_args(args):
    """The guess for ``args.file``, with every reader option the user gave put over it."""
    from model_core.datasets.sniff import Reading

    if args.fmt is not None:
        fmt, opts = reader_options(args, args.file)
        return Reading(fmt, opts, notes=["format and options as given"])
    return guessed_reading(args, args.file)


def run(args) -> int:
    from model_core.datasets.sniff import summarise

    reading = reading_from_args(args)
    summary = summarise(args.file, reading, n_first=args.show)
    flags = reading.args()
    if args.json:
        out = {"file": args.file, "format": reading.fmt, "options": reading.opts,
               "notes": reading.notes, "args": flags, **summary.to_dict()}
        print(json.dumps(out, separators=(",", ":"), default=str))
        return 0 if summary.events else 1
    _print(args.file, reading, summary, flags)
    return 0 if summary.events else 1


def _command(words: list[str], indent: str = "") -> str:
    """``words`` as one shell command, continued with `` \\`` where a line would pass the
    terminal's width (a word longer than a line keeps its own line): still copy-pastable."""
    cols, lines, line = width(), [], indent
    for word in map(shlex.quote, words):
        if line.strip() and len(line) + 1 + len(word) + 2 > cols:
            lines.append(line + " \\")
            line = indent + "    " + word
        else:
            line = f"{line} {word}" if line.strip() else line + word
    return "\n".join([*lines, line]) + "\n"


def _event_line(e: dict) -> str:
    """One event as a short line: user, item, action, time, then the other fields set."""
    from datetime import datetime, timezone

    when = datetime.fromtimestamp(e["timestamp_ms"] / 1000, timezone.utc)
    head = (f"  {e['user_id']:<10.20} {e['item_id']:<10.20} {e['action']:<8} "
            f"{when.strftime('%Y-%m-%d %H:%M:%S')}")
    rest = " ".join(f"{k}={v}" for k, v in e.items()
                    if k not in ("event_id", "user_id", "item_id", "action", "timestamp_ms")
                    and v is not None)
    line = f"{head} {rest}".rstrip()
    return (line if len(line) <= width() else line[:width() - 1] + "…") + "\n"


def _print(path: str, reading, s, flags: list[str]) -> None:
    w = sys.stdout.write
    w(f"{path}: format {reading.fmt}\n")
    for note in reading.notes:
        w(wrapped(note, "  - ") + "\n")
    cols = reading.opts.get("columns")
    if cols:
        w("mapping:\n")
        for f, c in cols.items():
            w(f"  {f:<12} <- {c}\n")
    rows = s.events + s.rejected + s.dropped
    w(f"rows: {rows:,} read, {s.events:,} events, {s.rejected:,} rejected"
      + (f", {s.dropped:,} dropped by the action mapping" if s.dropped else "") + "\n")
    for r in s.first_reasons:
        w(wrapped(f"rejected {r}", "  ") + "\n")
    for warning in s.warnings:
        w(wrapped(f"warning: {warning}", "  ") + "\n")
    if s.events:
        t = s.to_dict()["time_range"]
        w(f"users {s.users:,}, items {s.items:,}, sessions {s.sessions:,}\n"
          f"time {t[0]} .. {t[1]}\n")
        w("actions: " + ", ".join(f"{a} {n:,}" for a, n in s.actions.items()) + "\n")
        w("first events (--json shows them whole):\n")
        for e in s.first_events:
            w(_event_line(e))
    else:
        w("no line reads as an event with these options\n")
    w("flags for train / evaluate / compare / replay:\n")
    w(_command(flags, indent="  "))
    w("e.g.\n" + _command(["seqstream", "train", "--data", path, *flags, "--model", "markov",
                           "--out", "ckpt/"]))
