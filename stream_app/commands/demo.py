"""``seqstream demo``: the whole pipeline on an embedded broker, start to finish."""

from __future__ import annotations

import sys

import orjson


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on an embedded broker")
    p.add_argument("--events", type=int, default=20000, help="size of the log (default 20000)")
    p.add_argument("--data", default=None, help="a log file instead of a synthetic one")
    p.add_argument("--format", dest="fmt", default=None)
    p.add_argument("--model", default="gru4rec",
                   help="gru4rec | sasrec | markov | popular | itemknn (default gru4rec)")
    p.add_argument("--train-fraction", type=float, default=0.5)
    p.add_argument("--speed", type=float, default=None, help="replay at N x real time")
    p.add_argument("--window-s", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", dest="out_dir", default=None, help="output folder (default: temp)")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON last")
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.ops.demo import DemoOptions, run_demo

    quiet = args.json and not sys.stdout.isatty()
    opts = DemoOptions(events=args.events, data=args.data, fmt=args.fmt, model=args.model,
                       train_fraction=args.train_fraction, speed=args.speed, seed=args.seed,
                       window_s=args.window_s, out_dir=args.out_dir, live=not quiet,
                       report=not args.no_report)
    say = (lambda *_a, **_k: None) if quiet else print
    summary = run_demo(opts, say=say)
    if not quiet:
        _print_summary(summary)
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    complete = summary["predictions_out"] >= summary["events_in"]
    return 0 if complete else 1


def _print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from stream_app.commands._common import figure

    t = Table(title="seqstream demo summary")
    t.add_column("")
    t.add_column("value", justify="right")
    for k in ("source", "model", "model_version", "train_events", "train_seconds",
              "events_in", "predictions_out", "dead_letters", "windows", "alerts",
              "events_per_s", "latency_p99_ms", "wall_seconds"):
        t.add_row(k, figure(s.get(k)))
    Console().print(t)
    m = Table(title="HR@10 / NDCG@10 / MRR@10 on the replayed events")
    for c in ("", "hr@10", "ndcg@10", "mrr@10"):
        m.add_column(c, justify="right")
    for name in ("online", "prequential_offline", "baseline_popular"):
        row = s[name]
        m.add_row(name, *(f"{row[k]:.4f}" if row.get(k) is not None else "-"
                          for k in ("hr@10", "ndcg@10", "mrr@10")))
    Console().print(m)
