"""``seqstream evaluate``: offline evaluation of a checkpoint or a freshly trained model.

    seqstream evaluate --data UserBehavior.csv --format taobao --model gru4rec --protocol temporal
    seqstream evaluate --data train.txt --format yoochoose --test test.txt --protocol session \
        --model runs/gru4rec --ks 5,10,20 --json
    seqstream evaluate --data log.jsonl --model gru4rec --protocol prequential --learn every=250

``--model`` is a checkpoint directory, or a model name (popular, markov, itemknn, sknn,
vsknn, stan, vstan, gru4rec, sasrec) that is first trained as ``seqstream train`` does (:func:`model_core.fit.fit`).
With ``--json`` the last line of the output is one JSON object: ``metrics``, ``ci``,
``protocol``, ``model``, ``n_test_cases``, ``cost`` (:func:`model_core.cost.cost_record`:
training and evaluation time, peak memory, events/s), ``provenance`` and more.

Printed (80 columns): HR/NDCG/MRR at every K with 95 % intervals; beyond-accuracy figures at
the largest K (novelty, ARP, long-tail share, exposure Gini, coverage and, where the log's
items have categories, intra-list diversity); HR/NDCG per segment (history length, target
popularity, target action) with intervals; for the prequential protocol HR per window of
consecutive events; the cost.

``--learn SCHEDULE`` (prequential only) replays the stream twice, frozen and learning online
after every N events (:func:`model_core.learn.compare_learning`); its JSON holds ``frozen``,
``online``, ``paired_windows``, ``per_window`` and ``learner``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stream_app.commands._common import (
    add_hparam_options,
    add_reader_options,
    check_checkpoint_split,
    default_protocol,
    given_hparams,
    ignored_with_checkpoint,
    loo_valid_users,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_int,
    read_events,
    time_budget_s,
)

PROTOCOLS = ("loo", "temporal", "session", "prequential")


def add_data_options(p) -> None:
    p.add_argument("--data", required=True, help="behaviour log file")
    add_reader_options(p)
    p.add_argument("--protocol", choices=PROTOCOLS, default=None,
                   help="default: the checkpoint's own protocol, else temporal (as train)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="evaluate a checkpoint even when its training split overlaps this "
                        "test part (a loud warning instead of a refusal)")
    p.add_argument("--test", default=None,
                   help="separate test log (session protocol), same format as --data")
    p.add_argument("--quantile", type=open_fraction, default=0.8,
                   help="time cut: share of events (by time) before the test part")
    p.add_argument("--valid-users", type=positive_int, default=None, metavar="N",
                   help="loo: only N random users hold out a validation item; the others' "
                        "second-last items are train (use the value the model was trained with)")
    p.add_argument("--split-seed", type=int, default=0, help="loo --valid-users: which users")
    p.add_argument("--unknown-targets", choices=("skip", "miss"), default="miss",
                   help="test cases whose target the model cannot rank (never in its training "
                        "part): counted as misses (default: every case counts), or skipped; "
                        "how many is printed either way")
    p.add_argument("--ks", default="1,5,10,20", help="cut-offs, comma-separated")
    p.add_argument("--ties", default="conservative",
                   choices=("conservative", "optimistic", "average"))
    p.add_argument("--exclude-history", action="store_true",
                   help="never rank a case's history items; a case whose target repeats one "
                        "of them is then a miss (counted and printed)")
    p.add_argument("--sampled", default=None, metavar="MODE:N",
                   help="also report metrics against N sampled negatives (uniform:100, popularity:100)")
    p.add_argument("--bootstrap", type=non_negative_int, default=1000,
                   help="bootstrap resamples for CIs")
    p.add_argument("--max-cases", type=positive_int, default=None,
                   help="evaluate a seeded random subset of this many test cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", default=None,
                   help="training config for a model NAME, as JSON (epochs, dim, lr, ...); "
                        "the hyper-parameter flags below win over it")
    p.add_argument("--max-minutes", type=positive_float, default=None,
                   help="training time limit for a model NAME (fit and refit together)")
    p.add_argument("--save", default=None, help="save a model trained here to this directory")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    add_hparam_options(p, "hyper-parameters of a model NAME trained here")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="offline evaluation (loo, temporal, session, prequential)")
    add_data_options(p)
    p.add_argument("--model", required=True, help="checkpoint directory or model name")
    # const = model_core.learn.schedule.DEFAULT_SCHEDULE (a test checks; no torch import here)
    p.add_argument("--learn", nargs="?", const="every=250", default=None, metavar="SCHEDULE",
                   help="prequential: also learn online (default schedule every=250; e.g. "
                        "every=500,steps=2,lr=0.001,replay=4096,max_items=0); reports frozen "
                        "and online side by side")
    p.add_argument("--retrain-every", default="1d", metavar="PERIOD",
                   help="--learn with a model NAME: also retrain it from scratch every PERIOD "
                        "of event time (1d, 6h, 30m; 0 = not) as a third run")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="--learn: write the per-window figures as a PNG")
    t = p.add_argument_group("item text for --learn (a text or fused checkpoint; needs "
                             "seqstream[text])")
    t.add_argument("--items", default=None, metavar="FILE",
                   help="item metadata (CSV/TSV, JSONL or RecBole .item): a new item with a "
                        "description starts from its text vector, as the learner does with "
                        "the items topic")
    t.add_argument("--item-id-column", default="item_id")
    t.add_argument("--item-text-columns", default=None,
                   help="columns joined into the description, comma-separated (default: all)")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- shared steps
def parse_ks(text: str) -> tuple[int, ...]:
    from model_core.exceptions import ModelCoreError

    try:
        ks = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise ModelCoreError(f"--ks must be comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ModelCoreError(f"--ks must be positive, got {text!r}")
    return ks


def parse_sampled(text: str | None) -> tuple[str, int] | None:
    from model_core.evaluate import SAMPLING_MODES
    from model_core.exceptions import ModelCoreError

    if not text:
        return None
    mode, _, n = text.partition(":")
    if mode not in SAMPLING_MODES or not n.isdigit() or int(n) < 1:
        raise ModelCoreError(f"--sampled must be MODE:N with MODE in {', '.join(SAMPLING_MODES)}, "
                             f"got {text!r}")
    return mode, int(n)


@dataclass
class Prepared:
    protocol: str
    split: Any  # model_core.splits.Split (None for prequential)
    train_events: list
    test_events: list  # prequential: the events streamed after the cut
    info: dict
    #: item_id -> category_id of every item the logs give one (the first one seen)
    categories: dict = field(default_factory=dict)


def prepare(args) -> Prepared:
    from model_core.splits import make_split, split_temporal

    if args.protocol is None:
        specs = [getattr(args, k) for k in ("model", "model_a", "model_b") if hasattr(args, k)]
        args.protocol = default_protocol(*specs)

    events = read_events(args, args.data)
    test_events = read_events(args, args.test) if args.test else None
    cats = item_categories(events, test_events or ())
    if args.protocol == "prequential":
        if test_events is not None:
            return Prepared("prequential", None, events, sorted(test_events,
                                                                key=lambda e: e.timestamp_ms),
                            {"test_file": args.test}, cats)
        sp = split_temporal(events, quantile=args.quantile)
        cut = sp.info["cut_ts"]
        rest = sorted((e for e in events if cut is not None and e.timestamp_ms >= cut),
                      key=lambda e: e.timestamp_ms)
        return Prepared("prequential", None, sp.train_events, rest, {"cut_ts": cut}, cats)
    if test_events is not None and args.protocol != "session":
        from model_core.exceptions import ModelCoreError

        raise ModelCoreError("--test is used by the session and prequential protocols only")
    loo = args.protocol == "loo"
    vu = getattr(args, "valid_users", None)
    if not loo and vu is not None:
        from model_core.exceptions import ModelCoreError

        raise ModelCoreError("--valid-users applies to --protocol loo")
    if vu is None:
        vu = loo_valid_users(args.protocol, events)
    split = make_split(events, args.protocol, test_events=test_events, quantile=args.quantile,
                       # the split keeps every test case; the evaluator counts the ones the
                       # model cannot rank (as misses, or skipped with --unknown-targets skip)
                       valid_users=vu, keep_unknown_targets=True,
                       seed=getattr(args, "split_seed", 0))
    return Prepared(args.protocol, split, split.train_events, [], dict(split.info), cats)


def item_categories(*logs) -> dict[str, str]:
    """``{item_id: category_id}`` over the logs' events that carry a category (the readers
    of Taobao, the synthetic log, JSONL and mapped CSV with a category column do; YooChoose
    as session-rec prepares it, RecBole ``.inter`` and sequence text files do not). An item
    seen with several categories keeps its first."""
    out: dict[str, str] = {}
    for log in logs:
        for e in log:
            if e.category_id is not None and e.item_id not in out:
                out[e.item_id] = e.category_id
    return out


def obtain_model(spec: str, prep: Prepared, args, quiet: bool):
    """Load a checkpoint directory, or train model ``spec`` (:mod:`model_core.fit`: fitted
    before the split's validation cases, refitted on its train part; the prequential
    protocol trains once on its training period)."""
    from model_core.exceptions import ModelCoreError
    from model_core.models import MODELS

    if Path(spec).is_dir():
        from model_core.checkpoint import load_model

        warning = ignored_with_checkpoint(args, spec)
        if warning:
            print(warning, file=sys.stderr)
        model = load_model(spec, device=args.device)
        check_checkpoint_split(model, prep.protocol, prep.info, args)
        return model
    if spec not in MODELS:
        raise ModelCoreError(f"--model {spec!r} is neither a checkpoint directory nor a model "
                             f"name ({', '.join(MODELS)})")
    from model_core.fit import FitConfig, fit, fit_events
    from model_core.terminal import wrapped

    try:
        config: dict[str, Any] = json.loads(args.config) if args.config else {}
    except json.JSONDecodeError as e:
        raise ModelCoreError(f"--config is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ModelCoreError("--config must be a JSON object, e.g. '{\"epochs\": 5}'")
    specs = [getattr(args, k) for k in ("model", "model_a", "model_b") if hasattr(args, k)]
    config = given_hparams(args, spec, config,
                           others=tuple(s for s in specs if s in MODELS and s != spec))
    config.setdefault("device", args.device)
    # validation ranks as this test will (model_core.defaults.valid_exclude_history)
    config.setdefault("valid_exclude_history", bool(getattr(args, "exclude_history", False)))
    budget = time_budget_s(args)
    if budget is not None:
        config["max_seconds"] = budget
    fc = FitConfig(spec, config, seed=args.seed, auto=True, progress=not quiet)

    def log(msg: str) -> None:  # what the defaults chose is said even with --json
        if not quiet or msg.startswith("defaults:"):
            print(wrapped(msg), file=sys.stderr)

    if prep.split is None:
        log(f"training {spec} on {len(prep.train_events)} events")
        model = fit_events(prep.train_events, fc, log=log).model
    else:
        model = fit(prep.split, fc, log=log).model
    if args.save:
        from model_core.checkpoint import save_model

        save_model(model, args.save)
    return model


def train_stats(model, train_events) -> tuple:
    """(item_counts in the model's vocabulary, majority training action)."""
    import numpy as np

    from schemas import N_ACTIONS, action_index

    counts = np.zeros(len(model.vocab), dtype=np.float64)
    idx = model.vocab.indices(e.item_id for e in train_events)
    np.add.at(counts, idx, 1.0)
    counts[0] = 0.0
    acts = np.bincount([action_index(e.action) for e in train_events], minlength=N_ACTIONS)
    return counts, (int(acts.argmax()) if acts.sum() else None)


def run_evaluation(model, prep: Prepared, args, cases_pick=None):
    from model_core.evaluate import evaluate, evaluate_prequential, item_category_table

    ks = parse_ks(args.ks)
    counts, majority = train_stats(model, prep.train_events)
    cats = item_category_table(model, prep.categories)
    if prep.protocol == "prequential":
        return evaluate_prequential(model, prep.test_events, warm_events=prep.train_events,
                                    ks=ks, exclude_history=args.exclude_history,
                                    max_len=int(getattr(model, "max_len", 50) or 50),
                                    n_boot=args.bootstrap, seed=args.seed,
                                    unknown_targets=getattr(args, "unknown_targets", "miss"),
                                    item_counts=counts, item_categories=cats)
    cases = prep.split.test if cases_pick is None else prep.split.test.subset(cases_pick)
    res = evaluate(model, cases, ks=ks, ties=args.ties, exclude_history=args.exclude_history,
                   sampled=parse_sampled(args.sampled), n_boot=args.bootstrap, seed=args.seed,
                   item_counts=counts, majority_action=majority, protocol=prep.protocol,
                   unknown_targets=getattr(args, "unknown_targets", "miss"),
                   item_categories=cats)
    if cases_pick is not None:
        res.case_index = cases_pick[res.case_index]
    return res


def trained_and_evaluated(spec: str, prep: Prepared, args, cases_pick=None):
    """(model, result): :func:`obtain_model` then :func:`run_evaluation`, each measured
    (:func:`model_core.cost.measure_phase`) into ``result.cost``."""
    from model_core.cost import cost_record, measure_phase

    with measure_phase() as train:
        model = obtain_model(spec, prep, args, args.json)
    with measure_phase() as ev:
        res = run_evaluation(model, prep, args, cases_pick)
    n = res.extra.get("events", res.n_cases) if prep.protocol == "prequential" else res.n_cases
    res.cost = cost_record(train, ev, n, trained_here=not Path(spec).is_dir())
    return model, res


def pick_cases(prep: Prepared, args):
    import numpy as np

    if prep.split is None or not args.max_cases or len(prep.split.test) <= args.max_cases:
        return None
    rng = np.random.default_rng(args.seed)
    return np.sort(rng.choice(len(prep.split.test), args.max_cases, replace=False))


def model_label(spec: str, model) -> str:
    v = getattr(model, "version", None)
    return f"{spec} ({v})" if v and v != "untrained" else spec


# --------------------------------------------------------------------------- output
def fmt4(v) -> str:
    return "-" if v is None or v != v else f"{v:.4f}"


WIDTH = 80  # every printed line fits


def _ci_cell(mean, ci) -> str:
    lo, hi = ci if ci is not None else (None, None)
    return f"{fmt4(mean)} [{fmt4(lo)}, {fmt4(hi)}]"


def compact_table(title: str, columns: list[str]):
    """A compact table (first column left, the others right); its ``title`` is printed as a
    line of its own by :func:`show_table` (a table title would wrap at the table's width)."""
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    t.heading = title
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    return t


def show_table(console, t) -> None:
    """Print ``t`` (from :func:`compact_table`) under its heading. In a narrow terminal the
    figures keep their width (a header or the first column's label is cut with an ellipsis
    instead): at 80 columns a long checkpoint path as a model's label had cut HR 0.6764 to
    "0.67…"."""
    if t.heading:
        console.print(t.heading)
    need = [max([len(str(c)) for c in col.cells] + [len(str(col.header))])
            for col in t.columns[1:]]
    # each column: one space of padding on its right and a one-space divider before the next
    room = console.width - sum(w + 2 for w in need) - 1
    if t.columns:
        t.columns[0].max_width = max(8, room)  # the label gives way (ellipsis), not figures
    console.print(t)


def print_result(res, label: str, info: dict) -> None:
    from rich.console import Console

    console = Console(file=sys.stdout, width=WIDTH)
    title = (f"{label} — {res.protocol}, {res.n_cases} test cases"
             + (f" ({res.n_skipped_unknown} skipped: target unknown to the model)"
                if res.n_skipped_unknown else
                f" ({res.n_unknown_as_miss} with a target unknown to the model: counted "
                "as misses)")
             + f", ties {res.ties}"
             + (f", history excluded ({res.n_target_in_history} targets in their history: "
                "misses)" if res.exclude_history else ""))
    console.print(title)
    t = compact_table("", ["K", "HR [95% CI]", "NDCG [95% CI]", "MRR [95% CI]"])
    for k in res.ks:
        t.add_row(f"@{k}", *[_ci_cell(res.metrics[f"{m}@{k}"], res.ci.get(f"{m}@{k}"))
                             for m in ("hr", "ndcg", "mrr")])
    show_table(console, t)
    if res.sampled:
        print_sampled(console, res)
    print_beyond(console, res)
    rep = res.extra.get("repeat")
    if rep:
        console.print(f"HR@{rep['k']}: repeat targets {fmt4(rep['hr_repeat'])}, new "
                      f"{fmt4(rep['hr_new'])} ({fmt4(rep['repeat_case_share'])} of cases "
                      "are repeats)")
    print_segments(console, res.extra.get("segments"))
    print_windows(console, res.extra.get("windows"), res.ks[-1])
    if res.action is not None:
        a = res.action
        console.print(f"next action: accuracy {fmt4(a['accuracy'])}, macro-F1 {fmt4(a['macro_f1'])}")
    if res.action_baseline is not None:
        b = res.action_baseline
        console.print(f"majority-class baseline ({b['class']}): accuracy {fmt4(b['accuracy'])}, "
                      f"macro-F1 {fmt4(b['macro_f1'])}")
    if res.cost:
        console.print(cost_text(res.cost))
    if info:
        console.print("split: " + ", ".join(f"{k}={v}" for k, v in info.items()))


def print_sampled(console, res) -> None:
    sp = res.sampled
    cols = ["K", "HR", "NDCG"] + (["HR corrected", "NDCG corrected"]
                                  if "corrected" in sp else [])
    t = compact_table(f"sampled {sp['mode']}:{sp['n']} negatives (beside full ranking)", cols)
    for k in res.ks:
        row = [f"@{k}", fmt4(sp["metrics"][f"hr@{k}"]), fmt4(sp["metrics"][f"ndcg@{k}"])]
        if "corrected" in sp:
            row += [fmt4(sp["corrected"][f"hr@{k}"]), fmt4(sp["corrected"][f"ndcg@{k}"])]
        t.add_row(*row)
    show_table(console, t)


def print_beyond(console, res) -> None:
    """The list metrics at the largest K, two lines."""
    k = res.ks[-1]
    m = res.metrics

    def part(name: str, key: str, spec: str) -> str | None:
        v = m.get(f"{key}@{k}")
        return f"{name} {v:{spec}}" if v is not None and v == v else None

    first = [part("novelty", "novelty", ".2f"), part("ARP", "arp", ".1f"),
             part("long tail", "aplt", ".3f")]
    second = [part("exposure Gini", "gini", ".3f"), f"coverage {res.coverage:.4f}",
              part("ILD", "ild", ".3f") or "ILD - (no item categories)"]
    first = [x for x in first if x]
    if first:
        console.print(f"beyond accuracy @{k}: " + ", ".join(first))
    console.print(("  " if first else f"beyond accuracy @{k}: ") + ", ".join(second))


_SEGMENT_ORDER = {"history": ("0", "1", "2-4", "5-9", "10-19", "20+"),
                  "popularity": ("head", "mid", "tail", "unseen")}


def print_segments(console, seg: dict | None) -> None:
    """HR and NDCG at the largest K per segment, with their intervals."""
    if not seg:
        return
    from schemas.actions import ACTIONS

    k = seg["k"]
    t = compact_table(f"per segment @{k} (95% CI)", ["segment", "cases", f"HR@{k}", f"NDCG@{k}"])
    order = {**_SEGMENT_ORDER, "action": tuple(ACTIONS)}
    for name in ("history", "popularity", "action"):
        groups = seg.get(name)
        if not groups:
            continue
        rank = {lab: i for i, lab in enumerate(order[name])}
        for lab in sorted(groups, key=lambda x: (rank.get(x, len(rank)), x)):
            g = groups[lab]
            cells = [_ci_cell(g[f"{m}@{k}"]["mean"],
                              (g[f"{m}@{k}"]["ci_low"], g[f"{m}@{k}"]["ci_high"]))
                     for m in ("hr", "ndcg")]
            t.add_row(f"{name} {lab}", str(g["n"]), *cells)
    show_table(console, t)


def print_windows(console, windows: dict | None, k: int) -> None:
    """Prequential: HR@K per window of consecutive scored events, ten to a line."""
    if not windows or f"hr@{k}" not in windows:
        return
    vals = windows[f"hr@{k}"]
    console.print(f"HR@{k} per window ({windows['n']} windows of "
                  f"~{windows['scored_per_window']:.0f} scored events, in stream order):")
    for i in range(0, len(vals), 10):
        console.print("  " + " ".join(fmt4(v) for v in vals[i:i + 10]))


def cost_text(cost: dict) -> str:
    """One or two lines: training (or loading) and evaluation time, peak memory, events/s."""
    def sec(v) -> str:
        return "-" if v is None else f"{v:.2f} s"

    def mib(v) -> str:
        return "-" if v is None else f"{v:,.0f} MiB"

    if cost.get("trained_here"):
        first = (f"cost: training {sec(cost['train_s'])} (CPU {sec(cost['train_cpu_s'])}, "
                 f"peak RSS {mib(cost['train_peak_rss_mib'])})")
    else:
        first = (f"cost: loading the checkpoint {sec(cost.get('load_s'))} (not trained here; "
                 f"peak RSS {mib(cost.get('load_peak_rss_mib'))})")
    rate = cost.get("eval_events_per_s")
    return (first + f"\n  evaluation {sec(cost['eval_s'])} (CPU {sec(cost['eval_cpu_s'])}, "
            f"peak RSS {mib(cost['eval_peak_rss_mib'])}), "
            + ("-" if rate is None else f"{rate:,.0f}") + " events/s")


def print_json_line(obj: dict) -> None:
    sys.stdout.flush()
    print(json.dumps(obj, separators=(",", ":")), flush=True)


def _item_texts(args):
    """``--items FILE``: the descriptions the learner starts new items from (or None)."""
    if not getattr(args, "items", None):
        return None
    from model_core.learn.texts import ItemTexts
    from model_core.text.encoder import load_text_encoder
    from model_core.text.items import read_item_metadata

    meta = read_item_metadata(args.items, args.item_id_column, args.item_text_columns)
    texts = ItemTexts(load_text_encoder(device=args.device))
    texts.add_many(zip(meta.ids, meta.texts, strict=True))
    return texts


def run_learning(args) -> int:
    """``--learn``: frozen vs online learning over the prequential stream."""
    from model_core.exceptions import ModelCoreError
    from model_core.learn import LearnSchedule, check_learnable, compare_learning
    from model_core.learn.measure import parse_period
    from model_core.models import MODELS

    schedule = LearnSchedule.parse(args.learn)
    if args.model in MODELS:  # before training: a model the learner cannot update
        check_learnable(args.model)
    prep = prepare(args)
    if prep.protocol != "prequential":
        raise ModelCoreError("--learn needs --protocol prequential")
    period = parse_period(args.retrain_every) if args.model in MODELS else 0
    model = obtain_model(args.model, prep, args, args.json)

    def retrain(events):  # the model trained again as above, on everything seen so far
        again = argparse.Namespace(**{**vars(args), "save": None})
        return obtain_model(args.model, replace(prep, train_events=events), again, True)

    rep = compare_learning(model, prep.test_events, prep.train_events, schedule,
                           ks=parse_ks(args.ks), n_boot=args.bootstrap, seed=args.seed,
                           max_len=int(getattr(model, "max_len", 50) or 50),
                           exclude_history=args.exclude_history, retrain=retrain,
                           retrain_every_ms=period, texts=_item_texts(args))
    k = rep["ks"][-1]
    print(f"{args.model}: prequential over {rep['n_events']} events ({rep['n_scored']} scored), "
          f"learning {args.learn}")
    from model_core.significance import p_value_text

    heads = (f"HR@{k}", f"NDCG@{k}", f"MRR@{k}", "new-share", "new-hits", "CPU s")
    print(f"  {'run':7}" + "".join(f" {h:>9}" for h in heads))
    for run_name in ("frozen", "retrain", "online"):
        r = rep.get(run_name)
        if r is not None:
            print(f"  {run_name:7} {fmt4(r[f'hr@{k}']):>9} {fmt4(r[f'ndcg@{k}']):>9} "
                  f"{fmt4(r[f'mrr@{k}']):>9} {r['new_item_share']:9.3f} "
                  f"{r['new_item_hits']:9d} {r['cpu_seconds']:9.1f}")
    for key, label in (("paired_windows", "online - frozen"),
                       ("paired_windows_retrain", "retrain - frozen"),
                       ("paired_windows_online_vs_retrain", "online - retrain")):
        pw = rep.get(key, {}).get(f"hr@{k}")
        if pw is not None:
            print(f"  {label} HR@{k}: {pw['mean_diff']:+.4f} [{fmt4(pw['ci_low'])}, "
                  f"{fmt4(pw['ci_high'])}], {p_value_text(pw['p_value'], args.bootstrap)}\n"
                  f"          over {pw['windows']} windows ({pw['windows_a_better']} better)")
    lr = rep["learner"]
    print(f"  learner: {lr['updates']} updates, {lr['events_per_s']} events/s, "
          f"{lr['items_added']} new items; version {rep['model_version_end']}")
    if "retrain" in rep and rep["retrain"]["retrains"] == 0:
        # a newcomer's 1,000-event stream of one day showed a retrain row equal to frozen
        print(f"  retrain: none — the stream spans less than {args.retrain_every} of event\n"
              "    time, so its row is the frozen model (--retrain-every shorter, or 0)")
    elif "retrain" in rep:
        print(f"  retrain: {rep['retrain']['retrains']} retrains every {args.retrain_every}, "
              f"{rep['retrain']['train_cpu_seconds']:.1f} CPU s training")
    if args.plot:
        from model_core.learn.plot import plot_windows

        print(f"  plot: {plot_windows(rep, args.plot)}")
    if args.json:
        print_json_line({"protocol": "prequential", "learn": args.learn, "split": prep.info,
                         **rep, "provenance": provenance_of(args, prep)})
    return 0


def run(args) -> int:
    if getattr(args, "learn", None):
        return run_learning(args)
    prep = prepare(args)
    pick = pick_cases(prep, args)
    model, res = trained_and_evaluated(args.model, prep, args, pick)
    label = model_label(args.model, model)
    print_result(res, label, prep.info)
    if args.json:
        out = res.to_dict()
        out["model"] = args.model
        out["model_version"] = getattr(model, "version", None)
        out["split"] = prep.info
        out["provenance"] = provenance_of(args, prep)
        print_json_line(out)
    return 0


def provenance_of(args, prep: Prepared) -> dict:
    """Commit, data hashes, split, seed and the command's full configuration."""
    from model_core.provenance import provenance

    config = {k: v for k, v in sorted(vars(args).items()) if k != "func" and not callable(v)}
    return provenance([args.data, args.test], {"protocol": prep.protocol, **prep.info},
                      getattr(args, "seed", None), config)
