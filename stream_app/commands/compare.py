"""``seqstream compare A B``: evaluate two models on the same test cases, paired test per metric.

    seqstream compare popular gru4rec --data UserBehavior.csv --format taobao --protocol temporal

Each of A and B is a checkpoint directory or a model name (trained on the protocol's train
part). Per metric: both means, the mean difference A - B with its paired-bootstrap 95 %
interval and a two-sided p-value (:func:`model_core.metrics.paired_bootstrap`), over the cases
both models could rank. ``--json``: one JSON object on the last line.
"""

from __future__ import annotations

import sys

from stream_app.commands.evaluate import (
    add_data_options,
    model_label,
    obtain_model,
    pick_cases,
    prepare,
    print_json_line,
    run_evaluation,
)


def register(sub) -> None:
    p = sub.add_parser("compare", help="evaluate two models on the same cases (paired test)")
    p.add_argument("model_a", help="checkpoint directory or model name")
    p.add_argument("model_b", help="checkpoint directory or model name")
    add_data_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from model_core.evaluate import paired_comparison

    prep = prepare(args)
    pick = pick_cases(prep, args)
    results, labels = [], []
    for spec in (args.model_a, args.model_b):
        model = obtain_model(spec, prep, args, args.json)
        results.append(run_evaluation(model, prep, args, pick))
        labels.append(model_label(spec, model))
    a, b = results
    cmp = paired_comparison(a, b, n_boot=args.bootstrap, seed=args.seed)
    n_common = next(iter(cmp.values()))["n"] if cmp else 0
    console = Console(file=sys.stdout, width=120)
    t = Table(title=f"A = {labels[0]}  vs  B = {labels[1]} — {prep.protocol}, "
                    f"{n_common} common test cases")
    for col in ("metric", "A", "B", "A - B", "95% CI", "p"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for name, d in cmp.items():
        t.add_row(name, f"{d['a']:.4f}", f"{d['b']:.4f}", f"{d['mean_diff']:+.4f}",
                  f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]", f"{d['p_value']:.3f}")
    console.print(t)
    if args.json:
        print_json_line({
            "protocol": prep.protocol, "model_a": args.model_a, "model_b": args.model_b,
            "n_test_cases": n_common, "a": a.to_dict(), "b": b.to_dict(), "paired": cmp,
        })
    return 0
