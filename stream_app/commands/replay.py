"""``seqstream replay FILE --format F``: produce a recorded log into the events topic."""

from __future__ import annotations

import sys

from stream_app.commands._common import (
    add_kafka_options,
    add_reader_options,
    check_kafka,
    positive_float,
    positive_int,
    reader_options,
    settings_from_args,
)


def register(sub) -> None:
    p = sub.add_parser("replay", help="replay a log file into the events topic (event-time order)")
    p.add_argument("file")
    p.add_argument("--speed", type=positive_float, default=None,
                   help="N x real time by event-time gaps (default: full speed)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="send at most this many events")
    p.add_argument("--no-progress", action="store_true")
    add_reader_options(p)
    add_kafka_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.kafka.replay import replay_file

    fmt, opts = reader_options(args, args.file)
    settings = settings_from_args(args)

    def before_send(n: int, seconds: float | None) -> None:
        check_kafka(settings)  # after the file is read: a bad file needs no broker to say so
        if seconds is not None:
            print(f"replaying {n:,} events at {args.speed:g}x real time: about "
                  f"{duration(seconds)} (their event times span {duration(seconds * args.speed)})",
                  flush=True)

    rep = replay_file(settings, args.file, fmt, speed=args.speed, limit=args.limit,
                      progress=not args.no_progress, before_send=before_send, **opts)
    print(f"sent {rep.sent} events, rejected {rep.rejected} lines "
          f"(sent to {settings.topic('dead-letters')}) in {rep.seconds:.1f} s "
          f"({rep.events_per_s:,.0f} events/s)")
    for reason in rep.rejected_reasons or []:
        print(f"  rejected {reason}")
    if rep.resent_of:
        e = rep.resent_of
        print(f"note: this file's content (sha256 {rep.sha256[:12]}) was replayed to "
              f"{e['topic']} before ({e['at']}, {e['sent']} events from {e['path']}): its events "
              "have the same ids, so the worker counts them as duplicates "
              "(seqstream_duplicates_total), not as new events")
    if rep.sent == 0:
        # nothing reached the stream: a wrong --format or mapping, not a successful replay
        print(f"seqstream replay: error: {args.file}: no valid events as format {fmt!r}",
              file=sys.stderr)
        return 1
    return 0


def duration(seconds: float) -> str:
    """``45 s``, ``12 min 5 s``, ``3 h 20 min``, ``2 d 4 h``: a duration as a person reads it."""
    s = int(round(seconds))
    if s < 60:
        return f"{max(seconds, 0):.1f} s" if seconds < 10 else f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"
