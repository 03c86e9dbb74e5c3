"""``seqstream explain-bench``: how faithful each explanation method is, and what it costs.

    seqstream explain-bench --data events.jsonl --models markov,sknn,gru4rec,sasrec --cases 2000
    seqstream explain-bench --data train.txt --format yoochoose --test test.txt \\
        --protocol session --methods native,loo --json

Each model is trained quickly on the split's train part (neural ones for ``--epochs``) or
loaded from a checkpoint directory given instead of a name; then
:func:`model_core.faithfulness.deletion_test` runs every requested method on the same test
cases: the share of cases where removing the top-attributed event lowers the top item's
score more than removing a random one, the mean score and rank drops (bootstrap 95% CIs),
and the wall milliseconds of an explanation beside those of scoring the row.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stream_app.commands._common import add_reader_options, positive_int, read_events

NEURAL_ONLY = ("grad_input", "integrated_gradients")
DEFAULT_MODELS = "popular,markov,itemknn,sknn,vsknn,stan,vstan,gru4rec,sasrec"


def register(sub) -> None:
    p = sub.add_parser("explain-bench",
                       help="faithfulness (deletion test) and cost of prediction explanations")
    p.add_argument("--data", required=True, help="behaviour log file")
    add_reader_options(p)
    p.add_argument("--test", default=None, help="separate test log (session protocol)")
    p.add_argument("--protocol", choices=("loo", "temporal", "session"), default=None,
                   help="default: session with --test, else temporal")
    p.add_argument("--quantile", type=float, default=0.8, help="temporal / session time cut")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help="model names or checkpoint directories, comma-separated")
    p.add_argument("--methods", default="native",
                   help="native (the family's own), loo, grad_input, integrated_gradients "
                        "(the last two: neural models only), comma-separated; each "
                        "applicable one runs per model")
    p.add_argument("--cases", type=positive_int, default=1000, help="test cases per model")
    p.add_argument("--max-len", type=positive_int, default=50,
                   help="events of a history kept (the stream's max_seq_len)")
    p.add_argument("--k", type=positive_int, default=10,
                   help="items explained per prediction for the cost figure")
    p.add_argument("--epochs", type=positive_int, default=3, help="neural training epochs")
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="training time limit per neural model")
    p.add_argument("--config", default=None,
                   help="extra training config for the neural models, as JSON")
    p.add_argument("--bootstrap", type=positive_int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object as the last line")
    p.set_defaults(func=run)


def _methods(model, wanted: list[str]) -> list[str]:
    from model_core.explain import default_method

    native = default_method(model)
    out = []
    for m in wanted:
        m = native if m == "native" else m
        if m in NEURAL_ONLY and not hasattr(model, "module"):
            continue
        if m not in out and not (m != native and native == "popular"):
            out.append(m)
    return out


def _train(spec: str, events, by: str, args):
    from model_core.fit import FitConfig, fit_events
    from model_core.models import NEURAL_MODELS

    cfg: dict = {"device": "cpu"}
    if spec in NEURAL_MODELS:
        cfg.update({"epochs": args.epochs, "max_seconds": args.max_seconds,
                    "max_len": args.max_len})
        if args.config:
            cfg.update(json.loads(args.config))
    return fit_events(events, FitConfig(spec, cfg, seed=args.seed), by=by).model


def run(args) -> int:
    from model_core.exceptions import ModelCoreError
    from model_core.faithfulness import deletion_test
    from model_core.fit import sequences_by
    from model_core.models import MODELS
    from model_core.splits import make_split

    protocol = args.protocol or ("session" if args.test else "temporal")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ("native", "loo", *NEURAL_ONLY)]
    if bad:
        raise ModelCoreError(f"--methods takes native, loo, {', '.join(NEURAL_ONLY)}; got "
                             f"{', '.join(bad)}")
    specs = [s.strip() for s in args.models.split(",") if s.strip()]
    for s in specs:
        if s not in MODELS and not Path(s).is_dir():
            raise ModelCoreError(f"--models: {s!r} is neither a model name "
                                 f"({', '.join(MODELS)}) nor a checkpoint directory")
    events = read_events(args, args.data)
    test_events = read_events(args, args.test) if args.test else None
    split = make_split(events, protocol, test_events=test_events, quantile=args.quantile)
    by = sequences_by(protocol)
    print(f"{protocol} split: {len(split.train_events)} train events, {len(split.test)} test "
          f"cases", file=sys.stderr)
    rows = []
    for spec in specs:
        if Path(spec).is_dir():
            from model_core.checkpoint import load_model

            model = load_model(spec, device="cpu")
        else:
            print(f"training {spec} ...", file=sys.stderr, flush=True)
            model = _train(spec, split.train_events, by, args)
        cases, _ = split.test.for_vocab(model.vocab)
        for method in _methods(model, methods):
            res = deletion_test(model, cases, method, n_cases=args.cases, seed=args.seed,
                                max_len=args.max_len, k_cost=args.k, n_boot=args.bootstrap)
            row = {"spec": spec, **res.to_dict()}
            rows.append(row)
            print(_line(row), file=sys.stderr, flush=True)
    print(_table(rows, args))
    if args.json:
        sys.stdout.flush()
        print(json.dumps({"data": args.data, "protocol": protocol, "cases": args.cases,
                          "max_len": args.max_len, "k": args.k, "seed": args.seed,
                          "results": rows}, separators=(",", ":")), flush=True)
    return 0


def _num(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def _ci(row, key, fmt="{:.3f}") -> str:
    lo, hi = row["ci"].get(key, (None, None))
    return f"{_num(row[key], fmt)} [{_num(lo, fmt)}, {_num(hi, fmt)}]"


def _line(row) -> str:
    return (f"{row['spec']:>8} {row['method']:<20} compared {row['n_compared']}/"
            f"{row['n_cases']}: top beats random {_ci(row, 'share_top_beats_random')}, "
            f"{row['ms_per_item']:.2f} ms/item")


def _table(rows, args) -> str:
    head = (f"{'model':<8} {'method':<20} {'cases':>5} {'unexpl':>6} "
            f"{'top>random [95% CI]':>22} {'tied':>5} {'drop top':>9} {'drop rnd':>9} "
            f"{'rank top':>9} {'rank rnd':>9} {'ms/item':>8} {'ms/pred':>8} {'ms/score':>8}")
    lines = [f"deletion test: {args.cases} cases per model, last {args.max_len} events, "
             f"cost of explaining the top {args.k} items per prediction (ms/pred)", head]
    for r in rows:
        lines.append(
            f"{r['model']:<8} {r['method']:<20} {r['n_compared']:>5} {r['n_unexplained']:>6} "
            f"{_ci(r, 'share_top_beats_random'):>22} {_num(r['share_tied'], '{:.3f}'):>5} "
            f"{_num(r['drop_top'], '{:.3f}'):>9} {_num(r['drop_random'], '{:.3f}'):>9} "
            f"{_num(r['rank_drop_top'], '{:.1f}'):>9} {_num(r['rank_drop_random'], '{:.1f}'):>9} "
            f"{r['ms_per_item']:>8.2f} {r['ms_per_prediction']:>8.2f} {r['ms_per_score']:>8.2f}")
    return "\n".join(lines)
