"""``seqstream worker``: run the stream (one Faust worker) until SIGINT/SIGTERM."""

from __future__ import annotations

from stream_app.commands._common import add_stream_options, settings_from_args


def register(sub) -> None:
    p = sub.add_parser("worker", help="run a stream worker (consumes events, publishes predictions)")
    add_stream_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.app import run_worker

    run_worker(settings_from_args(args))
    return 0
