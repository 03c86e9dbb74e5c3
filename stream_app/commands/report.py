"""``seqstream report``: an HTML page of the online metrics, or of offline evaluations.

    seqstream report --out DIR                      # the metrics topic: PNGs + index.html
    seqstream report A.json B.json --out report.html [--png figure.png]

With result files (the JSON line ``seqstream evaluate --json`` or ``compare --json`` prints,
or their whole output) it writes one self-contained page comparing the models across
metrics and segments (:mod:`model_core.report.page`); ``--png`` also writes the main figure
(accuracy against coverage and popularity, HR per target-popularity bucket).
"""

from __future__ import annotations

from stream_app.commands._common import add_kafka_options, settings_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="HTML report of the metrics windows, or of evaluate/compare results")
    p.add_argument("results", nargs="*", metavar="RESULT.json",
                   help="offline: evaluate/compare --json outputs to compare on one page")
    p.add_argument("--out", required=True,
                   help="output directory (online, created), or the HTML file (offline)")
    p.add_argument("--png", default=None, metavar="FILE",
                   help="offline: also write the main figure as a PNG (for a README)")
    p.add_argument("--from-jsonl", dest="from_jsonl", default=None,
                   help="read windows from a saved JSONL of the metrics topic instead of Kafka")
    p.add_argument("--alerts-jsonl", dest="alerts_jsonl", default=None,
                   help="read alerts from this JSONL (default: the alerts topic, unless "
                        "--from-jsonl is given)")
    p.add_argument("--save-jsonl", dest="save_jsonl", default=None,
                   help="also save the windows read from Kafka to this JSONL")
    p.add_argument("--kind", default="tumbling", choices=("tumbling", "hopping"))
    p.add_argument("--title", default=None,
                   help="page title (default: seqstream online evaluation / model comparison)")
    p.add_argument("--idle-s", type=float, default=2.0,
                   help="stop reading a topic after this long without a message")
    add_kafka_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from schemas.exceptions import SeqstreamError

    if args.results:
        return run_offline(args)
    if args.png:
        raise SeqstreamError("--png writes the figure of offline results: give RESULT.json "
                             "files (the online report writes its PNGs into --out)")
    from stream_app.observe.report import (
        latest_per_key,
        load_alerts_jsonl,
        load_windows_jsonl,
        read_report_inputs,
        save_windows_jsonl,
        write_report,
    )

    rejected = 0
    reasons: list[str] = []
    alerts = []
    if args.from_jsonl:
        try:
            loaded = load_windows_jsonl(args.from_jsonl)
        except OSError as e:
            raise SeqstreamError(f"cannot read {args.from_jsonl}: {e.strerror}") from None
        windows, rejected, reasons = loaded.records, loaded.rejected, loaded.reasons
    else:
        settings = settings_from_args(args)
        pairs, alerts, rejected = read_report_inputs(settings, idle_s=args.idle_s)
        if args.save_jsonl:
            save_windows_jsonl(pairs, args.save_jsonl)
        windows = latest_per_key(pairs)
    if args.alerts_jsonl:
        try:
            la = load_alerts_jsonl(args.alerts_jsonl)
        except OSError as e:
            raise SeqstreamError(f"cannot read {args.alerts_jsonl}: {e.strerror}") from None
        alerts, rejected, reasons = la.records, rejected + la.rejected, reasons + la.reasons
    if not any(w.window_kind == args.kind for w in windows):
        raise SeqstreamError(
            f"no {args.kind} windows to report ({len(windows)} windows read"
            f"{', ' + str(rejected) + ' bad records' if rejected else ''}); is a worker "
            "running, and has a window closed yet?")
    index = write_report(windows, alerts, args.out, kind=args.kind,
                         title=args.title or "seqstream online evaluation")
    print(f"report: {index} ({len(windows)} windows, {len(alerts)} alerts"
          f"{f', {rejected} bad records skipped' if rejected else ''})")
    for r in reasons:
        print(f"  skipped {r}")
    return 0


def run_offline(args) -> int:
    """The page of offline results; the online-only options are refused, not ignored."""
    import datetime as dt

    from model_core.report.page import write_report
    from schemas.exceptions import SeqstreamError

    online = [flag for flag, v in (("--from-jsonl", args.from_jsonl),
                                   ("--alerts-jsonl", args.alerts_jsonl),
                                   ("--save-jsonl", args.save_jsonl)) if v]
    if online:
        raise SeqstreamError(f"{', '.join(online)} read the metrics topic; with result files "
                             "give only --out, --png and --title")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = write_report(args.results, args.out, png=args.png,
                           title=args.title or "seqstream model comparison", generated=now)
    print(f"report: {summary.html_path}")
    for title, n in summary.settings:
        line = f"  {n} model{'s' if n != 1 else ''}: {title}"
        print(line if len(line) <= 80 else line[:77] + "...")
    if summary.png_path:
        print(f"figure: {summary.png_path}")
    return 0
