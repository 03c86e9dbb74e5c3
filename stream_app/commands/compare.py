"""``seqstream compare A B [C ...]``: evaluate models on the same test cases, paired tests.

    seqstream compare popular gru4rec --data UserBehavior.csv --format taobao --protocol temporal
    seqstream compare gru4rec markov sknn stan --data F --format F   # A against each other

Each model is a checkpoint directory or a model name (trained on the protocol's train part).
A (the first) is compared with each other model; per metric: both means, the mean difference
with its paired-bootstrap 95 % interval, the paired effect size (Cohen's d of the per-case
differences) and a two-sided p-value (:func:`model_core.metrics.paired_bootstrap`), over the
cases both could rank. With more than two models the p-values of every comparison and metric
form one family, adjusted by Holm's method (``p (Holm)``); a p-value of 0 from the bootstrap
is printed as the bound it is (``< 2/resamples``). ``--json``: one JSON object on the last
line (with two models the same keys as before: ``model_a``, ``model_b``, ``a``, ``b``,
``paired``; with more, ``models``, ``results`` and ``comparisons``).
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
    provenance_of,
    run_evaluation,
)


def register(sub) -> None:
    p = sub.add_parser("compare", help="evaluate models on the same cases (paired tests)")
    p.add_argument("model_a", help="checkpoint directory or model name (the reference)")
    p.add_argument("model_b", nargs="+", metavar="model_b",
                   help="checkpoint directories or model names compared with the first")
    add_data_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from model_core.evaluate import paired_comparison
    from model_core.significance import holm, p_value_text

    specs = [args.model_a, *args.model_b]
    args.model_b = specs[1]  # the default protocol follows the first two models
    prep = prepare(args)
    pick = pick_cases(prep, args)
    results, labels = [], []
    for spec in specs:
        model = obtain_model(spec, prep, args, args.json)
        results.append(run_evaluation(model, prep, args, pick))
        labels.append(model_label(spec, model))
    a = results[0]
    cmps = [paired_comparison(a, b, n_boot=args.bootstrap, seed=args.seed) for b in results[1:]]
    family = [(i, name) for i, cmp in enumerate(cmps) for name in cmp]
    adjusted = holm([cmps[i][name]["p_value"] for i, name in family]) if family else []
    for (i, name), q in zip(family, adjusted, strict=True):
        cmps[i][name]["p_holm"] = q
    console = Console(file=sys.stdout)  # the terminal's width (80 when not a terminal)
    for label, cmp in zip(labels[1:], cmps, strict=True):
        n_common = next(iter(cmp.values()))["n"] if cmp else 0
        t = Table(title=f"A = {labels[0]}  vs  B = {label} — {prep.protocol}, "
                        f"{n_common} common test cases", box=box.SIMPLE_HEAD, pad_edge=False)
        cols = ["metric", "A", "B", "A - B", "95% CI", "d", "p"]
        if len(cmps) > 1:
            cols.append("Holm p")
        for col in cols:
            t.add_column(col, justify="left" if col == "metric" else "right",
                         no_wrap=True, min_width=14 if col == "95% CI" else None)
        for name, d in cmp.items():
            row = [name, f"{d['a']:.3f}", f"{d['b']:.3f}", f"{d['mean_diff']:+.3f}",
                   f"{d['ci_low']:+.3f}..{d['ci_high']:+.3f}", f"{d['effect_size']:+.2f}",
                   p_value_text(d["p_value"], args.bootstrap).removeprefix("p ")
                   .removeprefix("= ")]
            if len(cmps) > 1:
                row.append(p_value_text(d["p_holm"], args.bootstrap).removeprefix("p ")
                           .removeprefix("= "))
            t.add_row(*row)
        console.print(t)
    if args.json:
        if len(cmps) == 1:
            n_common = next(iter(cmps[0].values()))["n"] if cmps[0] else 0
            print_json_line({
                "protocol": prep.protocol, "model_a": specs[0], "model_b": specs[1],
                "n_test_cases": n_common, "a": a.to_dict(), "b": results[1].to_dict(),
                "paired": cmps[0], "provenance": provenance_of(args, prep),
            })
        else:
            print_json_line({
                "protocol": prep.protocol, "models": specs, "reference": specs[0],
                "results": [r.to_dict() for r in results],
                "comparisons": [{"model": s, "paired": c} for s, c in zip(specs[1:], cmps,
                                                                          strict=True)],
                "p_adjustment": "holm", "provenance": provenance_of(args, prep),
            })
    return 0
