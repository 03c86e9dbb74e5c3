"""Training speed against catalogue size: one recipe, several catalogue sizes, side by side.

    python -m model_core.bench_train                       # 3,000 / 40,000 / 400,000 items
    python -m model_core.bench_train --items 3000,40000 --seconds 20 --json

Each size trains the same recipe on the same kind of synthetic log for ``--seconds`` of
training steps (``train_model``'s ``max_seconds``; one torch thread by default) and reports
training events per second (target events, as ``train_model`` counts them) and each size's
rate as a fraction of the smallest catalogue's. Only the catalogue changes between sizes:
the same number of sessions of the same lengths, items drawn from a Zipf-like popularity
over the whole catalogue (the vocabulary holds every catalogue item, seen or not, as a
model trained on a large shop's item list would).

The recipe (:data:`RECIPES`) ``gru4rec`` is GRU4Rec's session-parallel training as this
project runs it on YooChoose (``BENCHMARKS.md``, "Offline models"): 100 units, Adagrad with
momentum, sampled softmax over the batch's targets plus 2,048 negatives drawn by
popularity^0.5 with logQ correction, 32 sessions per step, with the item embedding's
gradients as the trainer chooses by default (dense up to 4,000 items, sparse above).
``gru4rec-dense`` / ``gru4rec-sparse`` force dense (``--dense-emb``) or sparse ones,
``gru4rec-uniform`` draws the negatives uniformly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from model_core.vocab import ItemVocab

__all__ = ["RECIPES", "measure", "synthetic_sessions"]

_GRU4REC = {
    "dim": 100, "dropout": 0.4, "embed_dropout": 0.1, "loss": "sampled", "in_batch": True,
    "negatives": 2048, "sample_alpha": 0.5, "logq": True, "bias": True,
    "optimizer": "adagrad", "lr": 0.2, "momentum": 0.2, "lr_schedule": "cosine",
    "grad_clip": 0.0, "batch_order": "parallel", "batch_size": 32,
}
RECIPES: dict[str, dict] = {
    "gru4rec": _GRU4REC,
    "gru4rec-dense": {**_GRU4REC, "sparse_emb": False},
    "gru4rec-sparse": {**_GRU4REC, "sparse_emb": True},
    "gru4rec-uniform": {**_GRU4REC, "sample_alpha": 0.0, "logq": False},
}
DEFAULT_SIZES = (3_000, 40_000, 400_000)


def synthetic_sessions(n_items: int, n_sessions: int = 15_000, mean_len: float = 4.0,
                       seed: int = 0) -> list[np.ndarray]:
    """``n_sessions`` item-index sequences (1..n_items) of geometric lengths >= 2 (mean about
    ``mean_len``), items drawn with probability proportional to ``1 / (rank + 10)``; the
    lengths do not depend on ``n_items`` (same seed, same lengths)."""
    rng = np.random.default_rng(seed)
    lengths = 2 + rng.geometric(1.0 / max(1.0, mean_len - 1.0), n_sessions) - 1
    w = 1.0 / (np.arange(n_items) + 10.0)
    cdf = np.cumsum(w / w.sum())
    items = np.searchsorted(cdf, np.random.default_rng(seed + 1).random(int(lengths.sum())),
                            side="right")
    items = np.minimum(items, n_items - 1) + 1
    out, s = [], 0
    for n in lengths.tolist():
        out.append(items[s:s + n].astype(np.int32))
        s += n
    return out


def measure(n_items: int, recipe: str = "gru4rec", seconds: float = 20.0, threads: int = 1,
            seed: int = 0) -> dict:
    """Train ``recipe`` for ``seconds`` on a synthetic log over ``n_items`` items."""
    from model_core.train import train_model

    seqs = synthetic_sessions(n_items, seed=seed)
    vocab = ItemVocab(str(i) for i in range(1, n_items + 1))
    cfg = {**RECIPES[recipe], "epochs": 1000, "max_seconds": seconds, "threads": threads,
           "device": "cpu", "windows": False}
    t0 = time.perf_counter()
    _, hist = train_model("gru4rec", seqs, None, config=cfg, progress=False, seed=seed,
                          vocab=vocab)
    return {"items": n_items, "recipe": recipe, "train_events": hist.train_events,
            "train_seconds": round(hist.train_seconds, 2),
            "cpu_seconds": round(hist.train_cpu_seconds, 2),
            "events_per_s": round(hist.events_per_s, 1),
            "wall_seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_core.bench_train",
                                description="training events/s against catalogue size")
    p.add_argument("--items", default=",".join(str(n) for n in DEFAULT_SIZES),
                   help="catalogue sizes, comma-separated")
    p.add_argument("--recipe", default="gru4rec", choices=sorted(RECIPES))
    p.add_argument("--seconds", type=float, default=20.0, help="training seconds per size")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = p.parse_args(argv)
    try:
        sizes = [int(x) for x in args.items.split(",") if x.strip()]
    except ValueError:
        p.error(f"--items must be comma-separated integers, got {args.items!r}")
    if not sizes or min(sizes) < 2:
        p.error("--items needs catalogue sizes of at least 2 items")
    rows = []
    for n in sizes:
        r = measure(n, args.recipe, args.seconds, args.threads, args.seed)
        rows.append(r)
        print(f"{n:>9,} items: {r['events_per_s']:>9,.0f} events/s "
              f"({r['train_events']:,} events in {r['train_seconds']:.1f} s, "
              f"{r['cpu_seconds']:.1f} CPU-s)", file=sys.stderr, flush=True)
    base = rows[0]["events_per_s"]
    print(f"recipe {args.recipe}, {args.threads} thread(s), {args.seconds:g} s per size")
    print(f"{'items':>9}  {'events/s':>9}  {'vs ' + format(sizes[0], ','):>10}")
    for r in rows:
        r["ratio"] = round(r["events_per_s"] / base, 3) if base else None
        print(f"{r['items']:>9,}  {r['events_per_s']:>9,.0f}  {r['ratio']:>10.3f}")
    if args.json:
        print(json.dumps({"recipe": args.recipe, "threads": args.threads,
                          "seconds": args.seconds, "sizes": rows}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
