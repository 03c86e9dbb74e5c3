"""``seqstream tune``: search a model's declared hyper-parameter ranges on the validation part.

    seqstream tune --data train.txt --test test.txt --format yoochoose --protocol session \\
        --model gru4rec --out runs/tune-gru4rec --minutes 20

Optuna (TPE sampler, median pruning of weak trials on each epoch's validation NDCG@10) over
every declared range (:mod:`model_core.hparams`) not fixed by a flag given here; the first
trial is the configuration ``train`` would use. The search itself is
:func:`model_core.tune.tune` (no Kafka). Then the chosen configuration is trained as
``train`` trains, saved as a checkpoint in ``OUT/best`` (its ``meta.json`` holds every value
and the study's summary), and evaluated **once** on the test part. The study lives in
``OUT/study.sqlite3`` (``--storage``): running the same command again continues it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from stream_app.commands._common import (
    add_hparam_options,
    add_training_data_options,
    given_hparams,
    hparams_record,
    positive_float,
    positive_int,
    read_training_split,
)


def register(sub) -> None:
    p = sub.add_parser("tune", help="search hyper-parameters on the validation part (Optuna)")
    add_training_data_options(
        p, "output directory: study.sqlite3 (the study) and best/ (checkpoint)")
    p.add_argument("--minutes", type=positive_float, default=20.0,
                   help="time budget of the whole command (trials start during the first "
                        "75%%; then the chosen configuration is trained; default 20)")
    p.add_argument("--trials", type=positive_int, default=None,
                   help="at most this many new trials (default: as many as the time allows)")
    p.add_argument("--storage", default=None, metavar="FILE",
                   help="SQLite file of the study (default OUT/study.sqlite3); the same file "
                        "again continues the study")
    p.add_argument("--exclude-history", action="store_true",
                   help="test evaluation: never rank a case's history items (as evaluate)")
    add_hparam_options(p, "fixed hyper-parameters (given ones are not searched)")
    p.set_defaults(func=run)


def run(args) -> int:
    from model_core.checkpoint import save_model
    from model_core.evaluate import evaluate
    from model_core.tune import TuneConfig, trial_lines, tune

    t0 = time.perf_counter()
    _, split, data_record = read_training_split(args, keep_unknown_targets=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or str(out / "study.sqlite3")
    fixed = given_hparams(args, args.model)
    # validation ranks as the test evaluation will
    run_opts = {"device": args.device, "threads": args.threads,
                "valid_exclude_history": args.exclude_history}
    res = tune(split, TuneConfig(args.model, args.minutes, args.trials, fixed, run_opts,
                                 storage, seed=args.seed),
               log=lambda m: print(m, file=sys.stderr, flush=True))
    rows = sorted(res.rows, key=lambda r: -(r["value"] if r["value"] is not None else -1))
    print(f"{res.n_trials} trials ({res.n_new} new) of {args.model}, best first "
          f"(validation {len(split.valid) if split.valid is not None else 0} cases):")
    for line in trial_lines(rows, res.searched):
        print(line)
    dflt = (f"; defaults {res.defaults_valid:.4f}" if res.defaults_valid is not None else "")
    print(f"chosen: validation ndcg@10 {res.best_valid:.4f}{dflt}")
    model = res.model
    meta = {
        "data": data_record,
        "split": {"protocol": args.protocol, "info": split.info, "refit": res.fit.refit,
                  "sequences_by": res.fit.sequences_by, "refit_skipped": res.fit.refit_skipped},
        "valid_metrics": res.fit.valid_metrics,
        "hparams": {**hparams_record(_Choice(res), res.fit.history, model.config_full)},
        "tune": {"trials": res.n_trials, "new_trials": res.n_new, "storage": storage,
                 "best_valid_ndcg@10": res.best_valid, "defaults_valid_ndcg@10":
                 res.defaults_valid, "searched": res.searched},
        "training": res.fit.history,
        "seed": args.seed,
    }
    ck = save_model(model, out / "best", meta)
    # the one look at the test part: the chosen configuration only
    ev = evaluate(model, split.test, ks=(10, 20), exclude_history=args.exclude_history,
                  n_boot=200, seed=args.seed, protocol=args.protocol)
    m, ci = ev.metrics, ev.ci
    print(f"test ({ev.n_cases:,} cases; the chosen configuration only), 95% CI:")
    for k in ("hr@10", "ndcg@10", "hr@20", "mrr@20"):
        if k in m:
            print(f"  {k:<8} {m[k]:.4f} [{ci[k][0]:.4f}, {ci[k][1]:.4f}]")
    print(f"saved {model.name} to {ck} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


class _Choice:
    """The record :func:`hparams_record` takes, for the tuned values."""

    def __init__(self, res) -> None:
        self.values = dict(res.best_values)
        self.sources = {k: ("tuned" if k in res.searched else "fixed/default")
                        for k in res.best_values}
        self.recipe = "tune"
        self.reasons = [f"searched {', '.join(res.searched)} over {res.n_trials} trials"]
