"""``seqstream synth``: write a realistic synthetic behaviour log (JSONL)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic behaviour log as JSONL")
    p.add_argument("--out", "-o", required=True)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--users", type=int, default=None)
    p.add_argument("--items", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from model_core.datasets.synth import generate, write_jsonl

    events = generate(args.events, n_users=args.users, n_items=args.items, seed=args.seed)
    write_jsonl(events, args.out)
    users = len({e.user_id for e in events})
    items = len({e.item_id for e in events})
    print(f"wrote {len(events)} events ({users} users, {items} items) to {args.out}")
    return 0
