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

Before the paired tables: one line per model with its quality at the largest K (HR, NDCG,
coverage, novelty, long-tail share, ILD where items have categories) and one with its cost
(training and evaluation time, evaluation events/s, peak memory: each result's ``cost``).
With ``--protocol prequential`` each comparison also gets the sliding-window test
(:func:`model_core.significance.paired_windows`: the metrics per window of consecutive
scored events, a paired bootstrap over the windows, and how many windows each model won);
JSON: ``paired_windows`` beside ``paired`` (per metric at the largest K; with more than two
models its p-values are Holm-adjusted as their own family, ``p_holm``).
"""

from __future__ import annotations

import sys

from stream_app.commands.evaluate import (
    WIDTH,
    add_data_options,
    compact_table,
    fmt4,
    model_label,
    pick_cases,
    prepare,
    print_json_line,
    provenance_of,
    show_table,
    trained_and_evaluated,
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
    from model_core.significance import holm

    specs = [args.model_a, *args.model_b]
    args.model_b = specs[1]  # the default protocol follows the first two models
    prep = prepare(args)
    pick = pick_cases(prep, args)
    results, labels = [], []
    for spec in specs:
        model, res = trained_and_evaluated(spec, prep, args, pick)
        results.append(res)
        labels.append(model_label(spec, model))
        del model
    a = results[0]
    cmps = [paired_comparison(a, b, n_boot=args.bootstrap, seed=args.seed) for b in results[1:]]
    family = [(i, name) for i, cmp in enumerate(cmps) for name in cmp]
    adjusted = holm([cmps[i][name]["p_value"] for i, name in family]) if family else []
    for (i, name), q in zip(family, adjusted, strict=True):
        cmps[i][name]["p_holm"] = q
    windowed = ([window_test(a, b, args) for b in results[1:]]
                if prep.protocol == "prequential" else None)
    if windowed and len(windowed) > 1:
        adjust_window_family(windowed)
    console = Console(file=sys.stdout, width=WIDTH)
    print_models(console, labels, results)
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
                   _p(d["p_value"], args.bootstrap)]
            if len(cmps) > 1:
                row.append(_p(d["p_holm"], args.bootstrap, len(family)))
            t.add_row(*row)
        console.print(t)
    for label, w in zip(labels[1:], windowed or (), strict=False):
        print_window_test(console, labels[0], label, w, args.bootstrap,
                          sum(map(len, windowed)) if len(cmps) > 1 else 0)
    if args.json:
        if len(cmps) == 1:
            n_common = next(iter(cmps[0].values()))["n"] if cmps[0] else 0
            print_json_line({
                "protocol": prep.protocol, "model_a": specs[0], "model_b": specs[1],
                "n_test_cases": n_common, "a": a.to_dict(), "b": results[1].to_dict(),
                "paired": cmps[0], "provenance": provenance_of(args, prep),
                **({"paired_windows": windowed[0]} if windowed else {}),
            })
        else:
            print_json_line({
                "protocol": prep.protocol, "models": specs, "reference": specs[0],
                "results": [r.to_dict() for r in results],
                "comparisons": [{"model": s, "paired": c,
                                 **({"paired_windows": windowed[i]} if windowed else {})}
                                for i, (s, c) in enumerate(zip(specs[1:], cmps, strict=True))],
                "p_adjustment": "holm", "provenance": provenance_of(args, prep),
            })
    return 0


def window_test(a, b, args) -> dict:
    """The sliding-window test of ``a - b`` per metric at the largest K, over the scored
    events both prequential runs kept (:func:`model_core.significance.paired_windows`)."""
    import numpy as np

    from model_core.evaluate import _clean
    from model_core.significance import paired_windows

    _, ia, ib = np.intersect1d(a.case_index, b.case_index, return_indices=True)
    k = a.ks[-1]
    out = {}
    for name in (f"hr@{k}", f"ndcg@{k}", f"mrr@{k}"):
        if name in a.per_case and name in b.per_case:
            out[name] = paired_windows(a.per_case[name][ia], b.per_case[name][ib],
                                       n_boot=args.bootstrap, seed=args.seed)
    return _clean(out)


def adjust_window_family(windowed: list[dict]) -> None:
    """Holm over every comparison x metric of the windowed tests (``p_holm``)."""
    from model_core.significance import holm

    family = [(w, name) for w in windowed for name in w]
    adjusted = holm([w[name]["p_value"] if w[name]["p_value"] is not None else 1.0
                     for w, name in family]) if family else []
    for (w, name), q in zip(family, adjusted, strict=True):
        w[name]["p_holm"] = q


def print_models(console, labels: list[str], results: list) -> None:
    """Each model's quality at the largest K and its cost, one line each."""
    k = results[0].ks[-1]
    q = compact_table(f"quality @{k}", ["model", "HR", "NDCG", "coverage", "novelty", "long tail",
                                 "ILD"])
    for label, r in zip(labels, results, strict=True):
        m = r.metrics
        q.add_row(label, fmt4(m.get(f"hr@{k}")), fmt4(m.get(f"ndcg@{k}")), fmt4(r.coverage),
                  _num(m.get(f"novelty@{k}"), ".2f"), _num(m.get(f"aplt@{k}"), ".3f"),
                  _num(m.get(f"ild@{k}"), ".3f"))
    show_table(console, q)
    c = compact_table("cost (peak RSS: the process during each phase)",
               ["model", "train s", "eval s", "events/s", "train MiB", "eval MiB"])
    for label, r in zip(labels, results, strict=True):
        cost = r.cost or {}
        c.add_row(label, _num(cost.get("train_s"), ".2f"), _num(cost.get("eval_s"), ".2f"),
                  _num(cost.get("eval_events_per_s"), ",.0f"),
                  _num(cost.get("train_peak_rss_mib"), ",.0f"),
                  _num(cost.get("eval_peak_rss_mib"), ",.0f"))
    show_table(console, c)


def _num(v, spec: str) -> str:
    return "-" if v is None or v != v else f"{v:{spec}}"


def print_window_test(console, label_a: str, label_b: str, w: dict, n_boot: int,
                      holm_family: int) -> None:
    """The windowed test of one comparison; ``holm_family``: how many tests the ``Holm p``
    column was adjusted over (every comparison x metric), 0 for no such column."""
    if not w:
        return
    n = next(iter(w.values()))["windows"]
    cols = ["metric", "A - B", "95% CI", "p", "A won", "B won"] + (["Holm p"] if holm_family
                                                                    else [])
    t = compact_table(f"A = {label_a} vs B = {label_b}: sliding-window test, {n} windows", cols)
    for name, d in w.items():
        row = [name, _num(d["mean_diff"], "+.4f"),
               f"{_num(d['ci_low'], '+.4f')}..{_num(d['ci_high'], '+.4f')}",
               _p(d["p_value"], n_boot), str(d["windows_a_better"]),
               str(d["windows_b_better"])]
        if holm_family:
            row.append(_p(d.get("p_holm"), n_boot, holm_family))
        t.add_row(*row)
    show_table(console, t)


def _p(p, n_boot: int, family: int = 1) -> str:
    """A p-value for a table cell; an adjusted one names its family size (the bound of an
    adjusted 0 grows with it: :func:`model_core.significance.p_value_text`)."""
    from model_core.significance import p_value_text

    if p is None:
        return "n/a"
    return p_value_text(p, n_boot, family).removeprefix("p ").removeprefix("= ")
