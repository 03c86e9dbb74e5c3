"""``seqstream replay FILE --format F``: produce a recorded log into the events topic."""

from __future__ import annotations

import json

from stream_app.commands._common import add_kafka_options, settings_from_args


def register(sub) -> None:
    p = sub.add_parser("replay", help="replay a log file into the events topic (event-time order)")
    p.add_argument("file")
    p.add_argument("--format", "-f", dest="fmt", default=None,
                   help="taobao | yoochoose | jsonl | csv | seqtxt | recbole (guessed if omitted)")
    p.add_argument("--speed", type=float, default=None,
                   help="N x real time by event-time gaps (default: full speed)")
    p.add_argument("--limit", type=int, default=None, help="send at most this many events")
    p.add_argument("--columns", default=None,
                   help='csv column mapping as JSON, e.g. \'{"user_id":"uid","item_id":"iid"}\'')
    p.add_argument("--no-progress", action="store_true")
    add_kafka_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from model_core.datasets import guess_format
    from model_core.exceptions import DataFormatError
    from stream_app.replay import replay_file

    fmt = args.fmt or guess_format(args.file)
    if fmt is None:
        raise DataFormatError(f"cannot guess the format of {args.file}; pass --format")
    opts = {"columns": json.loads(args.columns)} if args.columns else {}
    settings = settings_from_args(args)
    rep = replay_file(settings, args.file, fmt, speed=args.speed, limit=args.limit,
                      progress=not args.no_progress, **opts)
    print(f"sent {rep.sent} events, rejected {rep.rejected} lines "
          f"(sent to {settings.topic('dead-letters')}) in {rep.seconds:.1f} s "
          f"({rep.events_per_s:,.0f} events/s)")
    for reason in rep.rejected_reasons or []:
        print(f"  rejected {reason}")
    return 0
