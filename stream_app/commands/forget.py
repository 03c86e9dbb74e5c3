"""``seqstream forget USER_ID...``: erase shoppers' data from the running workers.

One erase request per user goes to the events topic, keyed by the user id, so it reaches the
worker that owns the user's partition in order with the user's events (:mod:`schemas.erasure`).
That worker removes the user's state, writes a tombstone to the table's changelog (a restarted
worker's recovery does not bring it back) and records the erasure on the ``audit`` topic: when,
the SHA-256 of the state's key, who asked and why, never the id itself. The user's next event
starts a fresh sequence. Requests are signed with ``SEQSTREAM_CONTROL_KEY_FILE`` when it is set
(workers with a control key refuse unsigned ones: dead letters with the reason).

Not erased by this: predictions already published (their topic's retention applies), dead
letters (they keep the original bytes of bad records: ``SEQSTREAM``'s dead-letter topic has
its own retention), and the aggregate metrics windows (no user ids in them).
"""

from __future__ import annotations

from schemas.exceptions import SeqstreamError
from stream_app.commands._common import add_kafka_options, check_kafka, settings_from_args


def register(sub) -> None:
    p = sub.add_parser("forget", help="erase users' state from the running workers (audited)")
    p.add_argument("user_ids", nargs="*", metavar="USER_ID", help="user ids as producers send them")
    p.add_argument("--from-file", metavar="FILE", default=None,
                   help="more user ids, one per line (blank lines and #comments skipped)")
    p.add_argument("--by", required=True, metavar="WHO",
                   help="who asks (an operator, a ticket id): kept in the audit record")
    p.add_argument("--reason", default="", help="why (kept in the audit record)")
    add_kafka_options(p)
    p.set_defaults(func=run)


def _ids(args) -> list[str]:
    ids = [u for u in args.user_ids]
    if args.from_file:
        try:
            with open(args.from_file, encoding="utf-8") as f:
                ids += [s.strip() for s in f if s.strip() and not s.lstrip().startswith("#")]
        except OSError as e:
            raise SeqstreamError(f"--from-file {args.from_file}: {e.strerror}") from None
    bad = [u for u in ids if not u or u.startswith("\x00")]
    if bad:
        raise SeqstreamError(f"{len(bad)} user id(s) are empty or start with NUL: not user ids")
    if not ids:
        raise SeqstreamError("name the users to forget: seqstream forget USER_ID... --by WHO "
                             "(or --from-file FILE)")
    return list(dict.fromkeys(ids))  # each once, in the order given


def run(args) -> int:
    from stream_app.worker.model_swap import control_key
    from stream_app.worker.privacy import send_erase_requests

    ids = _ids(args)
    settings = settings_from_args(args)
    key = control_key(settings)  # unreadable or too short: one line, before any connection
    check_kafka(settings)
    n = send_erase_requests(settings, ids, args.by, args.reason)
    print(f"sent {n} erase request(s) to {settings.topic('events')} "
          f"({'signed' if key else 'unsigned: no SEQSTREAM_CONTROL_KEY_FILE'}); the owning "
          f"workers erase each user's state and record it on {settings.topic('audit')}")
    return 0
