"""``seqstream train``: read a log, split it, train a model, save a checkpoint directory.

    seqstream train --data ../shared/data/bert4rec_beauty/beauty.txt --format seqtxt \\
        --protocol loo --model sasrec --out runs/sasrec-beauty

The split (``--protocol``) gives the training events and the validation cases used for early
stopping on NDCG@10; the test part is never looked at here (``seqstream evaluate`` does).
Training is :func:`model_core.fit.fit` (fit before the validation cases, then with
``temporal`` and ``session`` a refit on all training events for the best number of epochs;
``--no-refit`` keeps the validated model; ``--max-seconds`` / ``--max-minutes`` bound both);
this command only reads the log, parses options and writes the checkpoint.

The model flags are made from the models' declarations (:mod:`model_core.hparams`); what a
user leaves unset is chosen from the shape of the data (:mod:`model_core.defaults`), printed
before training (``defaults: ...``) and recorded with every value that ran in ``meta.json``
(``hparams``).
"""

from __future__ import annotations

import time

from stream_app.commands._common import (
    add_hparam_options,
    add_training_data_options,
    given_hparams,
    hparams_record,
    positive_float,
    positive_int,
    read_training_split,
    time_budget_s,
)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model and save a checkpoint directory")
    add_training_data_options(p, "checkpoint directory to write")
    p.add_argument("--valid-history", default=None, choices=("exclude", "include"),
                   help="validation ranking: exclude the case's history items, or keep them "
                        "(as seqstream evaluate without --exclude-history); default: "
                        "include where validation targets repeat earlier items (session "
                        "protocol, logs with repeats), exclude otherwise")
    p.add_argument("--valid-max-cases", type=positive_int, default=None,
                   help="validate on a fixed random subset of this many cases")
    p.add_argument("--max-seconds", type=positive_float, default=None,
                   help="training time limit, fit and refit together")
    p.add_argument("--max-minutes", type=positive_float, default=None,
                   help="the same in minutes (the data-shape defaults fit their epochs to it)")
    p.add_argument("--no-refit", action="store_true")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="continue from this checkpoint's weights (same model, data and config)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    t = p.add_argument_group("item text (gru4rec/sasrec; needs seqstream[text])")
    t.add_argument("--items", default=None, help="item metadata: CSV/TSV, JSONL or RecBole .item")
    t.add_argument("--item-id-column", default="item_id")
    t.add_argument("--item-text-columns", default=None,
                   help="columns joined into the description, comma-separated (default: all)")
    t.add_argument("--text-mode", default="id", choices=("id", "text", "fused"),
                   help="item vectors: ID embedding, projected text vector, or their sum")
    add_hparam_options(p)
    p.set_defaults(func=run)


def _config(args) -> dict:
    """The run options (not hyper-parameters) and every hyper-parameter given as a flag."""
    cfg = given_hparams(args, args.model)
    cfg.update({"device": args.device, "threads": args.threads})
    for k in ("valid_max_cases", "init_from"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    budget = time_budget_s(args)
    if budget is not None:
        cfg["max_seconds"] = budget
    if args.valid_history:  # default by protocol: model_core.fit.FitConfig
        cfg["valid_exclude_history"] = args.valid_history == "exclude"
    return cfg


def run(args) -> int:
    from model_core.checkpoint import save_model
    from model_core.exceptions import DataFormatError
    from model_core.fit import FitConfig, fit

    t0 = time.perf_counter()
    _, split, data_record = read_training_split(args)
    cfg = _config(args)
    text = None
    if args.text_mode != "id":
        from model_core.text.training import TextSetup

        if not args.items:
            raise DataFormatError(f"--text-mode {args.text_mode} needs --items FILE")
        text = TextSetup.create(args.items, args.item_id_column, args.item_text_columns,
                                args.text_mode, cache_dir=args.out, device=args.device,
                                progress=not args.quiet)
        cfg.update(text.model_config())

    res = fit(split, FitConfig(args.model, cfg, refit=not args.no_refit, seed=args.seed,
                               progress=not args.quiet, text=text, auto=True))
    model, valid_metrics, history = res.model, res.valid_metrics, res.history
    meta = {
        "data": data_record,
        "split": {"protocol": args.protocol, "info": split.info, "refit": res.refit,
                  "sequences_by": res.sequences_by, "refit_skipped": res.refit_skipped},
        "valid_metrics": valid_metrics,
        "hparams": hparams_record(res.choice, history, model.config_full),
        "training": history,
        "seed": args.seed,
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }
    if text is not None:
        meta["text"] = text.finish(model)
    out = save_model(model, args.out, meta)
    m = valid_metrics or {}
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in ("ndcg@10", "hr@10") if k in m)
    from model_core.terminal import wrapped

    print(wrapped(f"saved {model.name} ({model.version}) to {out}"
                  + (f"; best validation {shown} at epoch {history[0]['best_epoch']}"
                     if shown else "")))
    return 0
