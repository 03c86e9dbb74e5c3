"""``seqstream learner``: the model learns from the event stream and the workers follow.

    seqstream learner                      run beside the workers (SEQSTREAM_* settings)
    seqstream learner versions [--json]    the versions kept in the watched directory
    seqstream learner rollback [--to V]    point LATEST back (default: the version before)

The learner reads the events topic in its own consumer group, updates the model on
``SEQSTREAM_LEARN_SCHEDULE`` and publishes each version into ``SEQSTREAM_MODEL_WATCH_DIR``,
which the workers watch (the hot swap): see :mod:`stream_app.learner`.
"""

from __future__ import annotations

import sys

import orjson

from stream_app.commands._common import (
    add_log_options,
    add_stream_options,
    check_kafka,
    settings_from_args,
)


def register(sub) -> None:
    p = sub.add_parser("learner", help="learn from the event stream and publish model versions",
                       allow_abbrev=False)  # rollback --to is not --topic-prefix
    add_stream_options(p)
    add_log_options(p)
    p.add_argument("--watch-dir", dest="model_watch_dir",
                   help="directory the workers watch (default SEQSTREAM_MODEL_WATCH_DIR)")
    p.add_argument("--learn", dest="learn_schedule",
                   help="schedule, e.g. every=250,steps=2 (default SEQSTREAM_LEARN_SCHEDULE;"
                        " the fields: model_core/learn/schedule.py)")
    p.add_argument("--warm", dest="learn_warm_path",
                   help="the training log, read as train reads it: the learner's start-up "
                        "history")
    p.add_argument("--keep", dest="learn_keep", type=int, help="versions kept (default 5)")
    p.set_defaults(func=run, action=None)
    acts = p.add_subparsers(dest="action", metavar="[ACTION]",
                            help="none: run the learner beside the workers")
    v = acts.add_parser("versions", help="list the versions kept")
    v.add_argument("--watch-dir", dest="model_watch_dir")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=versions)
    r = acts.add_parser("rollback", help="serve an earlier kept version (LATEST points back)")
    r.add_argument("--watch-dir", dest="model_watch_dir")
    r.add_argument("--to", default=None, help="a kept version (default: the one before)")
    r.set_defaults(func=rollback)


def _settings(args):
    extra = {k: getattr(args, k, None) for k in ("model_watch_dir", "learn_schedule",
                                                "learn_warm_path", "learn_keep")}
    return settings_from_args(args, **extra)


def _store(args):
    from schemas.exceptions import SeqstreamError
    from stream_app.learner.versions import VersionStore

    s = _settings(args)
    if not s.model_watch_dir:
        raise SeqstreamError("give --watch-dir or set SEQSTREAM_MODEL_WATCH_DIR")
    return VersionStore(s.model_watch_dir, s.learn_keep)


def run(args) -> int:
    from stream_app.learner.service import check_settings, run_learner
    from stream_app.observe.logs import configure_logging

    settings = _settings(args)
    check_settings(settings)
    configure_logging(settings.log_level, settings.log_format)
    check_kafka(settings)
    run_learner(settings)
    return 0


def versions(args) -> int:
    store = _store(args)
    latest = store.latest()
    rows = []
    for name in store.versions():
        meta = store.meta(name).get("learner") or {}
        rows.append({"version": name, "latest": name == latest,
                     "update": meta.get("update"), "events": meta.get("events"),
                     "new_items": len(meta.get("new_items") or [])})
    if args.json:
        sys.stdout.write(orjson.dumps({"latest": latest, "versions": rows}).decode() + "\n")
        return 0
    for r in rows:
        mark = "*" if r["latest"] else " "
        ev = "-" if r["events"] is None else f"{r['events']:,}"
        print(f"{mark} {r['version'][:48]:48} events {ev:>10}  new {r['new_items']:>5}")
    if not rows:
        print(f"no versions in {store.dir}")
    return 0


def rollback(args) -> int:
    store = _store(args)
    before = store.latest()
    now = store.rollback(args.to)
    print(f"LATEST: {before} -> {now}")
    print("workers load it at their next poll; a running learner learns on from it, and its\n"
          "next version replaces it in the workers (stop the learner to keep this one)")
    return 0
