"""``seqstream bench``: throughput and latency of the stream, side by side
(:mod:`stream_app.ops.bench`)."""

from __future__ import annotations

import json


def register(sub) -> None:
    from stream_app.ops.bench.variants import ALL_VARIANTS

    p = sub.add_parser(
        "bench", help="streaming benchmark on an embedded broker: raw Kafka, Faust, seqstream, "
                      "models (events/s, latency, RSS, state bytes, ratios)")
    p.add_argument("--events", type=int, default=None, help="events (default 100000; --quick 5000)")
    p.add_argument("--items", type=int, default=None, help="catalogue size (default 50000; --quick 2000)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (the model runs)")
    p.add_argument("--variants", default=",".join(ALL_VARIANTS),
                   help="comma-separated subset of: " + ", ".join(ALL_VARIANTS))
    p.add_argument("--batch-size", type=int, default=None, help="micro-batch size (seqstream, "
                   "Faust ceiling, model runs; default 2000, --quick 250)")
    p.add_argument("--batch-wait-ms", type=int, default=50, help="micro-batch wait (seqstream, "
                   "Faust ceiling)")
    p.add_argument("--paced-s", type=float, default=None, help="length of each half-load phase")
    p.add_argument("--paced-rate", type=float, default=None, metavar="EV_PER_S",
                   help="pace the latency phase at this rate instead of half of each variant's "
                        "own (the latency_p99_ms_at_half_load key then holds this rate's p99)")
    p.add_argument("--work-dir", default=None, help="logs, checkpoints (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="small smoke-test size (CI)")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument("--serving", action="store_true",
                   help="the serving endpoints instead: a bare aiohttp handler, then "
                        "recommendations and rank requests against a worker per model while "
                        "the stream runs at half its maximum (stream_app.ops.bench_serving)")
    p.add_argument("--learner", action="store_true",
                   help="the online learner instead: does it keep up with the stream? One "
                        "worker and one learner without lockstep per --schedule, the demo's "
                        "--learn log replayed at full speed (stream_app.ops.bench_learner)")
    p.add_argument("--model", default="gru4rec", help="--learner: the model learned "
                   "(default gru4rec)")
    p.add_argument("--schedule", action="append", default=None, metavar="SCHEDULE",
                   help="--learner: a learn schedule to measure (repeat for several; default "
                        "the default schedule and the 8-step one)")
    p.set_defaults(func=run)


def run_learner(args) -> int:
    import sys

    from model_core.learn import LearnSchedule
    from stream_app.ops.bench_learner import (
        DEFAULT_SCHEDULES,
        LearnerBenchConfig,
        format_learner_table,
        run_learner_bench,
    )

    schedules = tuple(args.schedule or DEFAULT_SCHEDULES)
    for sch in schedules:
        LearnSchedule.parse(sch)  # a wrong schedule stops here, before any broker starts
    cfg = LearnerBenchConfig(model=args.model, events=args.events or 20_000,
                             schedules=schedules, work_dir=args.work_dir)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    summary = run_learner_bench(cfg, log)
    log(format_learner_table(summary))
    if args.json:
        print(json.dumps(summary, default=str))
    return 0


def run(args) -> int:
    import shutil
    import signal
    import sys

    if args.serving:
        from stream_app.ops.bench_serving import run as run_serving

        return run_serving(args)
    if args.learner:
        return run_learner(args)
    from schemas.exceptions import SeqstreamError
    from stream_app.ops.bench.runner import Bench, BenchConfig
    from stream_app.ops.bench.table import format_table
    from stream_app.ops.bench.variants import ALL_VARIANTS

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        raise SeqstreamError(f"unknown variant(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(ALL_VARIANTS)}")
    if args.paced_rate is not None and not args.paced_rate > 0:
        raise SeqstreamError(f"--paced-rate must be a positive rate, got {args.paced_rate}")
    kw = dict(events=args.events, items=args.items, device=args.device, variants=variants,
              batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms, paced_s=args.paced_s,
              paced_rate=args.paced_rate,
              work_dir=args.work_dir)
    if args.quick:
        cfg = BenchConfig.quick_config(**kw)
    else:
        cfg = BenchConfig(**{k: v for k, v in kw.items() if v is not None})
    if cfg.events < 100 or cfg.items < 50:
        raise SeqstreamError("--events must be >= 100 and --items >= 50")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    def on_term(signum, frame):  # stop the broker and the variant's child on SIGTERM too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(cfg, log=log)
    summary = bench.run()
    log(format_table(summary))
    if args.work_dir:
        log(f"finished in {summary['seconds']:.0f} s; logs and checkpoints in {bench.work}")
    else:  # a temp dir of ours: keep it only when something failed
        failed = [n for n, r in summary["runs"].items() if r["note"].startswith("failed")]
        if failed:
            log(f"finished in {summary['seconds']:.0f} s; {', '.join(failed)} failed: logs "
                f"in {bench.work}")
        else:
            shutil.rmtree(bench.work, ignore_errors=True)
            log(f"finished in {summary['seconds']:.0f} s")
    if args.json:
        print(json.dumps(summary))
    return 0
