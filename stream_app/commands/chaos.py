"""``seqstream chaos``: crash the worker while it streams, then audit every output.

``seqstream chaos --events 100000 --kills 3 --json`` (embedded broker, synthetic events);
``--soak 1000000`` runs one worker with no kills and samples its RSS;
``--restart-bench`` times restart-to-ready for the memory and RocksDB stores.
The last line of ``--json`` output is the JSON summary.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("chaos", help="SIGKILL the worker at random moments and audit outputs "
                                     "and state (embedded broker)")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--scenario", default="kill",
                   choices=("kill", "pause", "rebalance", "crash-in-batch", "broker-restart"),
                   help="kill: SIGKILL and restart a worker; pause: SIGSTOP a worker past the "
                        "session timeout, then SIGCONT; rebalance: workers join and leave "
                        "under load; crash-in-batch: the model raises on some batches; "
                        "broker-restart: the broker stops, every worker must exit 69 naming "
                        "it, and it comes back empty (memory storage) with the workers: the "
                        "events after the last restart are audited")
    p.add_argument("--workers", type=int, default=None,
                   help="workers running at the start (default 1; 2 for pause and rebalance)")
    p.add_argument("--kills", "--faults", dest="kills", type=int, default=3,
                   help="faults injected during the run")
    p.add_argument("--rate", type=float, default=None,
                   help="replay pace in events/s (default: as fast as possible for kill, "
                        "3000 for the others, so events flow through each fault)")
    p.add_argument("--pause-s", type=float, default=None,
                   help="pause scenario: seconds stopped (default 2.5 x the session timeout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", default="memory://", help="memory:// or rocksdb://")
    p.add_argument("--min-gap-s", type=float, default=1.0,
                   help="kills happen at random shares (5-95%%) of the events predicted, "
                        "and at least a random MIN..MAX gap after the worker became ready")
    p.add_argument("--max-gap-s", type=float, default=6.0)
    p.add_argument("--soak", type=int, default=None, metavar="N",
                   help="soak instead: N events, no kills, RSS sampled once a second")
    p.add_argument("--users", type=int, default=None,
                   help="users in the synthetic log (soak default: 5000, a fixed population)")
    p.add_argument("--items", type=int, default=None)
    p.add_argument("--restart-bench", action="store_true",
                   help="time restart-to-ready after SIGKILL and clean stop, memory and rocksdb")
    p.add_argument("--restart-stores", default="memory://,rocksdb://",
                   help="stores timed by --restart-bench (comma-separated)")
    p.add_argument("--workdir", default=None, help="keep logs here (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print the JSON summary last")
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.commands._common import figure
    from stream_app.ops.chaos import measure_restart, run_chaos

    if args.restart_bench:
        out = [measure_restart(args.events, store=s.strip())
               for s in args.restart_stores.split(",") if s.strip()]
        print(json.dumps(out))
        return 0
    if args.soak:
        rep = run_chaos(args.soak, kills=0, seed=args.seed, store=args.store, soak=True,
                        n_users=args.users or 5000, n_items=args.items or 5000,
                        workdir=args.workdir)
    else:
        workers = args.workers or (2 if args.scenario in ("pause", "rebalance") else 1)
        rate = args.rate if args.rate is not None else (
            None if args.scenario == "kill" else 3000.0)
        rep = run_chaos(args.events, kills=args.kills, seed=args.seed, store=args.store,
                        min_gap_s=args.min_gap_s, max_gap_s=args.max_gap_s,
                        scenario=args.scenario, workers=workers, rate=rate,
                        pause_s=args.pause_s,
                        n_users=args.users, n_items=args.items, workdir=args.workdir)
    d = rep.to_dict()
    if not args.json:
        for k, v in d.items():
            if k != "examples" and not (k == "rss_mb" and v is None):
                print(f"{k:24s} {figure(v) if isinstance(v, (int, float)) else v}")
    print(json.dumps(d) if args.json else ("OK" if rep.ok else "FAILED"))
    return 0 if rep.ok else 1
