"""``seqstream demo``: the whole pipeline on an embedded broker, start to finish."""

from __future__ import annotations

import sys

import orjson


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on an embedded broker")
    p.add_argument("--events", type=int, default=20000, help="size of the log (default 20000)")
    p.add_argument("--data", default=None, help="a log file instead of a synthetic one")
    p.add_argument("--format", dest="fmt", default=None)
    p.add_argument("--model", default=None,
                   help="gru4rec | sasrec | markov | popular | itemknn (default gru4rec; "
                        "with --learn, markov)")
    p.add_argument("--train-fraction", type=float, default=0.5)
    p.add_argument("--speed", type=float, default=None, help="replay at N x real time")
    p.add_argument("--window-s", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", dest="out_dir", default=None, help="output folder (default: temp)")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON last")
    g = p.add_argument_group("online learning")
    # const = model_core.learn.schedule.DEFAULT_SCHEDULE (a test checks; no torch import here)
    g.add_argument("--learn", nargs="?", const="every=250", default=None, metavar="SCHEDULE",
                   help="run a learner beside the worker, in lockstep (default schedule "
                        "every=250); compares online, offline and frozen at @20")
    g.add_argument("--change-at", type=float, default=0.6,
                   help="--learn's log: transitions change at this fraction (default 0.6)")
    g.add_argument("--new-items", type=int, default=200,
                   help="--learn's log: items born during the log (default 200)")
    g.add_argument("--born-from", type=float, default=0.5,
                   help="--learn's log: items are born from this fraction (default 0.5)")
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.ops.demo import DemoOptions, run_demo

    quiet = args.json and not sys.stdout.isatty()
    if args.learn is not None:
        from model_core.exceptions import ModelCoreError
        from model_core.learn import LearnSchedule, check_learnable
        from schemas.exceptions import SeqstreamError

        try:
            LearnSchedule.parse(args.learn)
            check_learnable(args.model or "markov")
        except ModelCoreError as e:
            raise SeqstreamError(str(e)) from None
    model = args.model or ("markov" if args.learn else "gru4rec")
    opts = DemoOptions(events=args.events, data=args.data, fmt=args.fmt, model=model,
                       train_fraction=args.train_fraction, speed=args.speed, seed=args.seed,
                       window_s=args.window_s, out_dir=args.out_dir, live=not quiet,
                       report=not args.no_report, learn=args.learn,
                       change_at=args.change_at, new_items=args.new_items,
                       born_from=args.born_from)
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
    k = 20 if "frozen" in s else 10
    cols = (f"hr@{k}", f"ndcg@{k}", f"mrr@{k}")
    m = Table(title=f"HR@{k} / NDCG@{k} / MRR@{k} on the replayed events")
    for c in ("", *cols):
        m.add_column(c, justify="right")
    if k == 20:
        m.add_column("new-item hits", justify="right")
    for name in ("online", "prequential_offline", "frozen" if k == 20 else "baseline_popular"):
        row = s[name]
        m.add_row(name, *(f"{row[c]:.4f}" if row.get(c) is not None else "-" for c in cols),
                  *((figure(row.get("new_item_hits")),) if k == 20 else ()))
    Console().print(m)
    if s.get("beyond"):
        _print_beyond(s["beyond"])
    if k == 20:
        _print_learning(s)


def _print_learning(s: dict) -> None:
    """What the rows of the learning table are, the paired test, whether online equals
    offline and whether the learner kept up (each line within 80 columns)."""
    from stream_app.commands._common import figure

    print("  online: the worker's predictions, each made by the learner's version of the\n"
          "    moment; prequential_offline: the same learner code replayed offline;\n"
          "    frozen: that replay without learning (the trained model throughout);\n"
          "    new-item hits: hits on items born after training, which frozen cannot name")
    from model_core.significance import p_value_text

    pw = s.get("paired_windows_hr@20") or {}
    if pw.get("mean_diff") is not None:
        # no resample crossed zero: the test resolves p only down to 2 / resamples
        p_text = p_value_text(pw.get("p_value"), pw["n_boot"])
        print(f"HR@20 online - frozen: {pw['mean_diff']:+.4f} [{pw['ci_low']:+.4f}, "
              f"{pw['ci_high']:+.4f}], {p_text}\n"
              f"  (paired over {pw.get('windows')} windows of the stream; online better in "
              f"{pw.get('windows_online_better')})")
    same = "yes" if s["online_equals_offline"] else "NO"
    print(f"online == offline: {same} (max |diff| {figure(s['online_offline_max_abs_diff'])},"
          f" {figure(s.get('scored_online'))} / {figure(s.get('scored_offline'))} scored, "
          f"{s['versions_published']} versions)")
    refused = s.get("versions_refused") or {}
    if s["learn_schedule"].get("gate"):
        print(f"gate: {figure(refused.get('online'))} versions refused by the learner, "
              f"{figure(refused.get('prequential_offline'))} in the offline replay")
    st = s.get("learner") or {}
    if st.get("events_per_busy_s"):
        print(f"learner: {figure(st.get('events_in'))} events, "
              f"{figure(st['events_per_busy_s'])}/s of its own work (stream "
              f"{figure(s.get('events_per_s'))}/s), {figure(st.get('skipped'))} skipped")


def _print_beyond(b: dict) -> None:
    """Novelty, ARP, long-tail share and ILD online beside offline (within 80 columns)."""
    from rich.console import Console
    from rich.table import Table

    k = b["k"]
    names = {"novelty": "novelty", "arp": "ARP", "aplt": "long tail", "ild": "ILD"}
    keys = [m for m in names if f"{m}@{k}" in b["online"] or f"{m}@{k}" in b[
        "prequential_offline"]]
    t = Table(title=f"Beyond accuracy @{k} on the replayed events")
    for c in ("", *(names[m] for m in keys)):
        t.add_column(c, justify="right")
    for name in ("online", "prequential_offline"):
        row = b[name]
        t.add_row(name, *(f"{row[f'{m}@{k}']:.4f}" if f"{m}@{k}" in row else "-"
                          for m in keys))
    Console(width=80).print(t)
    same = "yes" if b["equal"] else "NO"
    print(f"novelty / ARP / long tail online == offline: {same}")
    if b.get("ild_differs_by") is not None:
        print(f"ILD online - offline: {b['ild_differs_by']:.4f} (the worker learns categories "
              "from the stream)")
