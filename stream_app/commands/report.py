"""``seqstream report --out DIR``: PNG plots and an HTML page of the metrics topic."""

from __future__ import annotations

from stream_app.commands._common import add_kafka_options, settings_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="write PNG plots + index.html of the metrics windows and alerts")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--from-jsonl", dest="from_jsonl", default=None,
                   help="read windows from a saved JSONL of the metrics topic instead of Kafka")
    p.add_argument("--alerts-jsonl", dest="alerts_jsonl", default=None,
                   help="read alerts from this JSONL (default: the alerts topic, unless "
                        "--from-jsonl is given)")
    p.add_argument("--save-jsonl", dest="save_jsonl", default=None,
                   help="also save the windows read from Kafka to this JSONL")
    p.add_argument("--kind", default="tumbling", choices=("tumbling", "hopping"))
    p.add_argument("--title", default="seqstream online evaluation")
    p.add_argument("--idle-s", type=float, default=2.0,
                   help="stop reading a topic after this long without a message")
    add_kafka_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from schemas.exceptions import SeqstreamError
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
    index = write_report(windows, alerts, args.out, kind=args.kind, title=args.title)
    print(f"report: {index} ({len(windows)} windows, {len(alerts)} alerts"
          f"{f', {rejected} bad records skipped' if rejected else ''})")
    for r in reasons:
        print(f"  skipped {r}")
    return 0
