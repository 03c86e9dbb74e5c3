"""``seqstream train``: read a log, split it, train a model, save a checkpoint directory.

    seqstream train --data ../shared/data/bert4rec_beauty/beauty.txt --format seqtxt \\
        --model sasrec --out runs/sasrec-beauty --loss sampled --negatives 2048

The split (``--protocol``) gives the training events and the validation cases used for early
stopping on NDCG@10; the test part is never looked at here (``seqstream evaluate`` does).
Training is :func:`model_core.fit.fit` (fit before the validation cases, then with
``temporal`` and ``session`` a refit on all training events for the best number of epochs;
``--no-refit`` keeps the validated model; ``--max-seconds`` bounds both); this command only
reads the log, parses options and writes the checkpoint.
"""

from __future__ import annotations

import time

from stream_app.commands._common import (
    add_reader_options,
    fraction,
    non_negative_float,
    positive_float,
    positive_int,
    read_checked,
    read_events,
    reader_options,
)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model and save a checkpoint directory")
    p.add_argument("--data", required=True, help="behaviour log file")
    add_reader_options(p)
    p.add_argument("--model", required=True, help="popular | markov | itemknn | sknn | vsknn | stan | vstan | gru4rec | sasrec")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--protocol", default="temporal", choices=("loo", "temporal", "session"),
                   help="split (default temporal, as evaluate); recorded in the checkpoint")
    p.add_argument("--test", default=None, help="session protocol: test sessions file")
    p.add_argument("--valid-users", type=positive_int, default=None, metavar="N",
                   help="loo: only N random users hold out their second-last item for "
                        "validation; every other user also trains on it (never on the test item)")
    p.add_argument("--split-seed", type=int, default=0, help="loo --valid-users: which users")
    p.add_argument("--max-len", type=positive_int, default=50)
    p.add_argument("--dim", type=positive_int, default=64)
    p.add_argument("--hidden", type=positive_int, default=None, help="gru4rec: recurrent units (default dim)")
    p.add_argument("--layers", type=positive_int, default=None)
    p.add_argument("--heads", type=positive_int, default=None, help="sasrec: attention heads")
    p.add_argument("--dropout", type=fraction, default=None)
    p.add_argument("--attn-dropout", type=fraction, default=None,
                   help="sasrec: dropout on attention weights (default 0)")
    p.add_argument("--block", default=None, choices=("prenorm", "sasrec"),
                   help="sasrec block shape: prenorm (default) or the SASRec paper's "
                        "(layer-normed query, post-attention layer norm)")
    p.add_argument("--ffn-mult", type=positive_int, default=None,
                   help="sasrec: feed-forward width = ffn_mult * dim (default 4; paper: 1)")
    p.add_argument("--activation", dest="act", default=None, choices=("gelu", "relu"),
                   help="sasrec: feed-forward activation (default gelu; paper: relu)")
    p.add_argument("--loss-dtype", default=None, choices=("float32", "bfloat16"),
                   help="sasrec: score matrix and softmax of the ce/sampled loss in bfloat16 "
                        "(faster on AMX CPUs and GPUs; default float32)")
    p.add_argument("--embed-dropout", type=fraction, default=None,
                   help="gru4rec: dropout on the input item embeddings (default 0)")
    p.add_argument("--cell", default=None, choices=("gru", "lstm"), help="gru4rec cell")
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0)
    p.add_argument("--loss", default="auto", choices=("auto", "ce", "sampled", "gbce"),
                   help="auto: full cross-entropy up to 20,000 items, else sampled")
    p.add_argument("--negatives", type=positive_int, default=2048, help="sampled / gbce negatives per batch")
    p.add_argument("--sample-alpha", type=non_negative_float, default=0.0,
                   help="negatives drawn by popularity**alpha (0 = uniform)")
    p.add_argument("--in-batch", action="store_true", help="sampled: add in-batch negatives")
    p.add_argument("--gbce-t", type=fraction, default=0.75)
    p.add_argument("--features", default="",
                   help="side features, comma-separated: action,category,gap")
    p.add_argument("--combine", default="sum", choices=("sum", "concat"))
    p.add_argument("--no-action-head", action="store_true",
                   help="do not train the next-action head even when the log has actions")
    g = p.add_argument_group("optimiser and batches")
    g.add_argument("--optimizer", default="adam", choices=("adam", "adagrad"),
                   help="adagrad: Adagrad with momentum (GRU4Rec's optimiser)")
    g.add_argument("--momentum", type=non_negative_float, default=0.0, help="adagrad momentum")
    g.add_argument("--grad-clip", type=non_negative_float, default=5.0, help="gradient norm clip (0 = none)")
    g.add_argument("--batch-order", default="length", choices=("length", "time", "parallel"),
                   help="length: similar lengths together, shuffled; time: sequences by start "
                        "time, blocks of batches in that order; parallel (gru4rec): "
                        "GRU4Rec's session-parallel mini-batches of --batch-size events")
    g.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine", "linear"),
                   help="learning rate: constant, or (after --warmup-epochs) cosine / linear "
                        "decay to lr * --min-lr-ratio at the end of --epochs (or of "
                        "--max-seconds, whichever comes first)")
    g.add_argument("--warmup-epochs", type=non_negative_float, default=0.0,
                   help="linear learning-rate warm-up from 0 over this many epochs")
    g.add_argument("--min-lr-ratio", type=fraction, default=0.0,
                   help="final learning rate of a decaying schedule, as a fraction of --lr")
    g.add_argument("--logq", action="store_true",
                   help="sampled: subtract log sampling probability (logQ correction)")
    g.add_argument("--dense-emb", action="store_true",
                   help="dense item-embedding gradients with sampled losses on any catalogue "
                        "(default: dense up to 4,000 items, sparse above, where a dense step "
                        "updating every item row is several times slower)")
    g.add_argument("--bias", action="store_true", help="gru4rec: output item bias")
    g.add_argument("--final-act", default=None, choices=("none", "tanh", "elu"),
                   help="gru4rec: activation of the output state")
    g.add_argument("--init", default=None, choices=("default", "uniform"),
                   help="gru4rec: uniform = GRU4Rec's +-sqrt(6/(fan_in+fan_out)) initialisation")
    p.add_argument("--valid-history", default=None, choices=("exclude", "include"),
                   help="validation ranking: exclude the case's history items, or keep them "
                        "(as seqstream evaluate without --exclude-history); default: include "
                        "for the session protocol, exclude otherwise")
    p.add_argument("--patience", type=positive_int, default=3)
    p.add_argument("--valid-max-cases", type=positive_int, default=None,
                   help="validate on a fixed random subset of this many cases")
    p.add_argument("--max-seconds", type=positive_float, default=None,
                   help="training time limit, fit and refit together")
    p.add_argument("--no-refit", action="store_true")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="continue from this checkpoint's weights (same model, data and config)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    t = p.add_argument_group("item text (gru4rec/sasrec; needs seqstream[text])")
    t.add_argument("--items", default=None, help="item metadata: CSV/TSV, JSONL or RecBole .item")
    t.add_argument("--item-id-column", default="item_id")
    t.add_argument("--item-text-columns", default=None,
                   help="columns joined into the description, comma-separated (default: all)")
    t.add_argument("--text-mode", default="id", choices=("id", "text", "fused"),
                   help="item vectors: ID embedding, projected text vector, or their sum")
    p.set_defaults(func=run)


def _config(args) -> dict:
    cfg = {
        "max_len": args.max_len, "dim": args.dim, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "patience": args.patience, "device": args.device, "threads": args.threads,
        "valid_max_cases": args.valid_max_cases, "max_seconds": args.max_seconds,
        "init_from": args.init_from,
        "loss": args.loss, "negatives": args.negatives, "sample_alpha": args.sample_alpha,
        "in_batch": args.in_batch, "gbce_t": args.gbce_t, "combine": args.combine,
        "features": [f.strip() for f in args.features.split(",") if f.strip()],
        "optimizer": args.optimizer, "momentum": args.momentum, "grad_clip": args.grad_clip,
        "batch_order": args.batch_order, "logq": args.logq,
        "lr_schedule": args.lr_schedule, "warmup_epochs": args.warmup_epochs,
        "min_lr_ratio": args.min_lr_ratio,
    }
    if args.valid_history:  # default by protocol: model_core.fit.FitConfig
        cfg["valid_exclude_history"] = args.valid_history == "exclude"
    if args.dense_emb:
        cfg["sparse_emb"] = False
    if args.model == "gru4rec":
        cfg["bias"] = args.bias
        for k in ("final_act", "init"):
            if getattr(args, k) is not None:
                cfg[k] = getattr(args, k)
    if args.no_action_head:
        cfg["action_head"] = False
    sas_only = ("heads", "attn_dropout", "block", "ffn_mult", "act", "loss_dtype")
    for k in ("hidden", "layers", "dropout", "cell", "embed_dropout") + sas_only:
        v = getattr(args, k)
        if v is not None:
            cfg[k] = v
    if args.model == "gru4rec":
        for k in sas_only:
            cfg.pop(k, None)
    if args.model == "sasrec":
        for k in ("hidden", "cell", "embed_dropout"):
            cfg.pop(k, None)
    if args.model not in ("gru4rec", "sasrec"):
        cfg = {k: v for k, v in cfg.items() if k in ("epochs", "device", "threads", "max_len",
                                                      "valid_max_cases", "valid_exclude_history")}
    elif args.init_from is None:
        cfg.pop("init_from")
    return cfg


def run(args) -> int:
    from model_core.checkpoint import save_model
    from model_core.exceptions import DataFormatError
    from model_core.fit import FitConfig, fit
    from model_core.models import MODELS
    from model_core.splits import make_split
    from model_core.train import data_hash

    if args.model not in MODELS:
        raise DataFormatError(f"unknown model {args.model!r}; choose one of {', '.join(MODELS)}")
    fmt, reader_opts = reader_options(args, args.data)
    t0 = time.perf_counter()
    log = read_checked(args, args.data)
    events = log.events
    test_events = read_events(args, args.test) if args.test else None
    if args.valid_users is not None and args.protocol != "loo":
        raise DataFormatError("--valid-users applies to --protocol loo only")
    split = make_split(events, args.protocol, test_events=test_events,
                       valid_users=args.valid_users, seed=args.split_seed)
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
                               progress=not args.quiet, text=text))
    model, valid_metrics, history = res.model, res.valid_metrics, res.history
    meta = {
        "data": {"path": str(args.data), "format": fmt, "sha256_16": data_hash([args.data]),
                 "events": len(events), "rejected_lines": log.rejected,
                 "dropped_lines": log.dropped, "reader_options": reader_opts,
                 "test_file": args.test},
        "split": {"protocol": args.protocol, "info": split.info, "refit": res.refit,
                  "sequences_by": res.sequences_by, "refit_skipped": res.refit_skipped},
        "valid_metrics": valid_metrics,
        "training": history,
        "seed": args.seed,
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }
    if text is not None:
        meta["text"] = text.finish(model)
    out = save_model(model, args.out, meta)
    m = valid_metrics or {}
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in ("ndcg@10", "hr@10") if k in m)
    print(f"saved {model.name} ({model.version}) to {out}"
          + (f"; best validation {shown} at epoch {history[0]['best_epoch']}" if shown else ""))
    return 0
