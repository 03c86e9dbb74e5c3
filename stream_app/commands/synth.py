"""``seqstream synth``: write a realistic synthetic behaviour log (JSONL)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic behaviour log as JSONL")
    p.add_argument("--out", "-o", required=True)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--users", type=int, default=None)
    p.add_argument("--items", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--change-at", type=float, default=None, metavar="FRACTION",
                   help="the transition structure changes at this fraction of the log (drift)")
    p.add_argument("--new-items", type=int, default=0, metavar="N",
                   help="N more items are born during the log (popular ones; default 0)")
    p.add_argument("--born-from", type=float, default=0.5, metavar="FRACTION",
                   help="new items are born from this fraction of the log on (default 0.5)")
    p.set_defaults(func=run)


def run(args) -> int:
    from model_core.datasets.synth import generate, write_jsonl
    from model_core.exceptions import ModelCoreError

    try:
        events = generate(args.events, n_users=args.users, n_items=args.items, seed=args.seed,
                          change_at=args.change_at, new_items=args.new_items,
                          born_from=args.born_from)
    except ValueError as e:
        raise ModelCoreError(str(e)) from None
    write_jsonl(events, args.out)
    users = len({e.user_id for e in events})
    items = len({e.item_id for e in events})
    print(f"wrote {len(events)} events ({users} users, {items} items) to {args.out}")
    return 0
