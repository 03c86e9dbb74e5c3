"""Measure text item vectors: warm and cold-start ranking, encoding throughput, stream cost.

    python -m model_core.text.benchmark quality --data ml-100k.inter --format recbole \\
        --checkpoints runs/sasrec-id runs/sasrec-text runs/sasrec-fused
    python -m model_core.text.benchmark encode --items ml-100k.item \\
        --item-text-columns movie_title,class,release_year
    python -m model_core.text.benchmark stream --checkpoint runs/sasrec-fused --items ml-100k.item

``quality`` rebuilds the global temporal split the checkpoints were trained on (same
``--quantile``) and evaluates each model with full ranking (conservative ties, history
excluded) on (a) the **warm** test cases — target seen in training, the cases
``seqstream evaluate`` uses — and (b) the **cold-start** cases: every test-period event whose
target item never occurs in the training events (the split skips these). A model whose
vocabulary lacks a cold target (ID-only) scores a miss on it: it cannot recommend the item.
Figures come with 95 % bootstrap intervals and paired differences against the first
checkpoint, all from :mod:`model_core.evaluate` / :mod:`model_core.metrics`.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["cold_start_cases", "main"]


def cold_start_cases(split):
    """Test-period cases (history >= 1 event) whose target never occurs in ``split.train_events``."""
    from model_core.splits import TestCases

    cut = split.info.get("cut_ts")
    base = split.test.base
    known = np.zeros(len(split.vocab), dtype=bool)
    known[split.vocab.indices({e.item_id for e in split.train_events})] = True
    known[0] = False
    rows, pos = [], []
    big = np.iinfo(np.int64).max
    for r in range(len(base)):
        ts = base.timestamps_ms[r]
        cs = int(np.searchsorted(ts, big if cut is None else cut, side="left"))
        for p in range(max(cs, 1), len(ts)):
            if not known[base.items[r][p]]:
                rows.append(r)
                pos.append(p)
    return TestCases(base, split.vocab, np.asarray(rows, np.int64), np.asarray(pos, np.int64))


def _fmt(m: float, ci) -> str:
    return f"{m:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def _quality(args) -> int:
    from model_core.checkpoint import load_model
    from model_core.datasets import read_log
    from model_core.evaluate import evaluate
    from model_core.metrics import bootstrap_ci, paired_bootstrap
    from model_core.splits import split_temporal

    log = read_log(args.data, args.format)
    split = split_temporal(log.events, quantile=args.quantile)
    warm_all = split.test
    cold_all = cold_start_cases(split)
    print(f"{len(log.events)} events; temporal split at q={args.quantile}: "
          f"{len(split.train_events)} train events; {len(warm_all)} warm test cases, "
          f"{len(cold_all)} cold-start cases (target unseen in training, "
          f"{len(np.unique(cold_all.target_item))} distinct items)", file=sys.stderr)
    rows = []
    results: dict[str, dict] = {}
    specs = [(ck, False) for ck in args.checkpoints] + [(ck, True) for ck in args.knn_variant]
    for ck, knn in specs:
        model = load_model(ck, device=args.device)
        mode = getattr(getattr(getattr(model, "module", None), "item_emb", None), "mode", "-")
        label = f"{model.name}-{mode}"
        if knn:  # metadata-only items: ID part from their 10 text-nearest trained items
            from model_core.text.fusion import impute_id_rows

            train_ids = {e.item_id for e in split.train_events}
            new_idx = [i for i in range(1, len(model.vocab)) if model.vocab.item_id(i) not in train_ids]
            impute_id_rows(model, new_idx, k=10)
            label += "+knn-id"
        out = {}
        for kind, cases_all in (("warm", warm_all), ("cold", cold_all)):
            cases, dropped = cases_all.for_vocab(model.vocab)
            t0 = time.perf_counter()
            res = evaluate(model, cases, ks=(10,), exclude_history=True, n_boot=args.n_boot,
                           max_len=getattr(model, "max_len", None), seed=0, protocol="temporal")
            secs = time.perf_counter() - t0
            n_total = len(cases_all)
            # cases the model cannot rank (target outside its vocabulary) are misses
            known_pos = _known_positions(cases_all, model.vocab)
            if len(known_pos) != res.n_cases:
                raise RuntimeError(f"{label}: {res.n_cases} cases evaluated, {len(known_pos)} expected")
            per = {}
            for key in ("ndcg@10", "hr@10"):
                per[key] = np.zeros(n_total)
                per[key][known_pos] = res.per_case[key]
            metrics = {k: float(v.mean()) if n_total else float("nan") for k, v in per.items()}
            cis = {k: bootstrap_ci(v, args.n_boot, seed=0) for k, v in per.items()}
            out[kind] = {"per": per, "metrics": metrics, "ci": cis, "n": n_total,
                         "unrankable": dropped, "catalogue": model.vocab.n_items,
                         "seconds": secs, "res": res}
            rows.append((label, kind, n_total, dropped, model.vocab.n_items, metrics, cis))
        results[label] = out
    print("\n| model | cases | n | target not in vocab (= miss) | catalogue | NDCG@10 [95% CI] | HR@10 [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    for label, kind, n, dropped, cat, m, ci in rows:
        print(f"| {label} | {kind} | {n} | {dropped} | {cat} | {_fmt(m['ndcg@10'], ci['ndcg@10'])} "
              f"| {_fmt(m['hr@10'], ci['hr@10'])} |")
    labels = list(results)
    if len(labels) > 1:
        print("\nPaired differences (row minus the first checkpoint, same cases; bootstrap 95% CI, p):")
        print("| model | cases | ΔNDCG@10 [95% CI] | p | ΔHR@10 [95% CI] | p |")
        print("|---|---|---|---|---|---|")
        base = results[labels[0]]
        for label in labels[1:]:
            for kind in ("warm", "cold"):
                a, b = results[label][kind]["per"], base[kind]["per"]
                cells = []
                for key in ("ndcg@10", "hr@10"):
                    d = paired_bootstrap(a[key], b[key], args.n_boot, seed=0)
                    cells.append(f"{d['mean_diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | "
                                 f"{d['p_value']:.3f}")
                print(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    n_cat = max(r["cold"]["catalogue"] for r in results.values())
    print(f"\nRandom guess over {n_cat} items: HR@10 = {10 / n_cat:.4f}")
    return 0


def _cold_ranks(args) -> int:
    """Where the cold-start targets land: median rank, HR@50/100 (random: 50/n, 100/n)."""
    from model_core.checkpoint import load_model
    from model_core.datasets import read_log
    from model_core.evaluate import evaluate
    from model_core.splits import split_temporal
    from model_core.text.fusion import impute_id_rows

    log = read_log(args.data, args.format)
    split = split_temporal(log.events, quantile=args.quantile)
    cold = cold_start_cases(split)
    train_ids = {e.item_id for e in split.train_events}
    print("| model | cold cases ranked | median rank | HR@10 | HR@50 | HR@100 | catalogue |")
    print("|---|---|---|---|---|---|---|")
    specs = [(ck, False) for ck in args.checkpoints] + [(ck, True) for ck in args.knn_variant]
    for ck, knn in specs:
        model = load_model(ck, device=args.device)
        label = f"{model.name}-{model.module.item_emb.mode}" + ("+knn-id" if knn else "")
        if knn:
            impute_id_rows(model, [i for i in range(1, len(model.vocab))
                                   if model.vocab.item_id(i) not in train_ids], k=10)
        cases, dropped = cold.for_vocab(model.vocab)
        if not len(cases):
            print(f"| {label} | 0 (all {dropped} targets unknown) | - | 0 | 0 | 0 | {model.vocab.n_items} |")
            continue
        r = evaluate(model, cases, ks=(10, 50, 100), exclude_history=True, n_boot=10,
                     max_len=getattr(model, "max_len", None))
        m = r.metrics
        print(f"| {label} | {len(cases)} | {np.median(r.ranks):.0f} | {m['hr@10']:.4f} | "
              f"{m['hr@50']:.4f} | {m['hr@100']:.4f} | {model.vocab.n_items} |")
    n = max(load_model(ck, device="cpu").vocab.n_items for ck in args.checkpoints)
    print(f"| random guess | | {(n + 1) / 2:.0f} | {10 / n:.4f} | {50 / n:.4f} | {100 / n:.4f} | {n} |")
    return 0


def _known_positions(cases, vocab) -> np.ndarray:
    """Positions (in ``cases``) of the cases whose target ``vocab`` knows, in order."""
    ids = cases.vocab.item_ids(cases.target_item.tolist())
    return np.flatnonzero(vocab.indices(ids) != 0)


def _encode(args) -> int:
    import torch

    from model_core.text.encoder import MiniLMEncoder
    from model_core.text.items import read_item_metadata

    if args.threads:
        torch.set_num_threads(args.threads)
    meta = read_item_metadata(args.items, args.item_id_column, args.item_text_columns)
    t0 = time.perf_counter()
    enc = MiniLMEncoder(device=args.device)
    load_s = time.perf_counter() - t0
    lens = [len(enc.tokenizer.encode(t).ids) for t in meta.texts]
    print(f"{len(meta)} item texts, tokens per text: mean {np.mean(lens):.1f}, max {max(lens)}; "
          f"encoder load {load_s:.2f} s on {enc.device}, torch threads {torch.get_num_threads()}")
    enc.encode(meta.texts[:64], batch_size=64)  # warm-up
    texts = meta.texts[: args.limit] if args.limit else meta.texts
    print("| batch size | items | wall s | items/s (wall) | process CPU s | items per CPU-second |")
    print("|---|---|---|---|---|---|")
    for bs in args.batch_sizes:
        t0, c0 = time.perf_counter(), time.process_time()
        enc.encode(texts, batch_size=bs)
        s, c = time.perf_counter() - t0, time.process_time() - c0
        print(f"| {bs} | {len(texts)} | {s:.2f} | {len(texts) / s:,.0f} | {c:.2f} | {len(texts) / c:,.0f} |")
    return 0


def _stream(args) -> int:
    import copy

    import torch

    from model_core.checkpoint import load_model
    from model_core.predictor import SequenceBatch
    from model_core.text.encoder import load_text_encoder
    from model_core.text.item_encoder import ItemEncoder
    from model_core.text.items import read_item_metadata

    if args.threads:
        torch.set_num_threads(args.threads)
    meta = read_item_metadata(args.items, args.item_id_column, args.item_text_columns)
    model0 = load_model(args.checkpoint, device=args.device)
    enc = load_text_encoder(device=args.device)
    enc.encode(meta.texts[:64], batch_size=64)  # warm-up
    rng = np.random.default_rng(0)
    hist = [rng.integers(1, len(model0.vocab), 30).astype(np.int32) for _ in range(256)]
    batch = SequenceBatch(items=hist)
    for _ in range(2):
        model0.predict_topk(batch, 20)
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        model0.predict_topk(batch, 20)
    base_ms = (time.perf_counter() - t0) / reps * 1e3
    print(f"model scoring batch (256 users, top-20, {model0.vocab.n_items} items): {base_ms:.1f} ms wall")
    print("| new items in the batch | flush (encode + grow) ms | of which encode ms | ms per item "
          "| flush process CPU ms |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        model = copy.deepcopy(model0)
        ie = ItemEncoder(model, encoder=enc, id_field="item_id", text_fields="text")
        recs = [{"item_id": f"new-{n}-{i}", "text": meta.texts[i % len(meta)] + f" #{n}-{i}"}
                for i in range(n)]
        ie.submit(recs)
        t0, c0 = time.perf_counter(), time.process_time()
        res = ie.flush()
        ms, cpu_ms = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
        assert len(res.added) == n
        print(f"| {n} | {ms:.1f} | {res.encode_seconds * 1e3:.1f} | {ms / n:.2f} | {cpu_ms:.1f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_core.text.benchmark")
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--data", required=True)
    q.add_argument("--format", default="recbole")
    q.add_argument("--quantile", type=float, default=0.8)
    q.add_argument("--checkpoints", nargs="+", required=True)
    q.add_argument("--n-boot", type=int, default=1000)
    q.add_argument("--knn-variant", nargs="*", default=[],
                   help="fused checkpoints to evaluate again with kNN-imputed ID rows for "
                        "metadata-only items")
    q.add_argument("--device", default="cpu")
    c = sub.add_parser("cold-ranks")
    c.add_argument("--data", required=True)
    c.add_argument("--format", default="recbole")
    c.add_argument("--quantile", type=float, default=0.8)
    c.add_argument("--checkpoints", nargs="+", required=True)
    c.add_argument("--knn-variant", nargs="*", default=[])
    c.add_argument("--device", default="cpu")
    for name in ("encode", "stream"):
        s = sub.add_parser(name)
        s.add_argument("--items", required=True)
        s.add_argument("--item-id-column", default="item_id")
        s.add_argument("--item-text-columns", default="movie_title,class,release_year")
        s.add_argument("--device", default="cpu")
        s.add_argument("--threads", type=int, default=None)
    sub.choices["encode"].add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    sub.choices["encode"].add_argument("--limit", type=int, default=None, help="first N texts only")
    sub.choices["stream"].add_argument("--checkpoint", required=True)
    sub.choices["stream"].add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64, 256])
    args = p.parse_args(argv)
    return {"quality": _quality, "cold-ranks": _cold_ranks, "encode": _encode,
            "stream": _stream}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
