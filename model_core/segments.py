"""Per-segment figures of an evaluation: does the model work for short histories, for tail
items, for purchases, or only on average?

Segments of the test cases, each reported with the mean of every per-case metric and its
bootstrap interval (:func:`model_core.metrics.bootstrap_ci`, clustered like the overall
figures when clusters are given):

- ``history``: the user's history length before the target, in buckets ``1``, ``2-4``,
  ``5-9``, ``10-19``, ``20+`` (0 = a cold case);
- ``popularity``: the target item's training count, in thirds of the catalogue by popularity
  rank (``head`` = the most popular third of the items, ``mid``, ``tail``; an item never seen
  in training is ``unseen``);
- ``action``: the target event's action (view, click, cart, fav, purchase).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from model_core.metrics import bootstrap_ci

HISTORY_BUCKETS = ((0, 0, "0"), (1, 1, "1"), (2, 4, "2-4"), (5, 9, "5-9"), (10, 19, "10-19"),
                   (20, None, "20+"))


def history_bucket(lengths: np.ndarray) -> np.ndarray:
    """The bucket label of each history length."""
    n = np.asarray(lengths, dtype=np.int64)
    out = np.empty(n.shape, dtype=object)
    for lo, hi, label in HISTORY_BUCKETS:
        mask = (n >= lo) & (n <= hi) if hi is not None else (n >= lo)
        out[mask] = label
    return out


def popularity_bucket(targets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``head`` / ``mid`` / ``tail`` / ``unseen`` of each target item (index into ``counts``,
    training counts by item index, index 0 unused)."""
    c = np.asarray(counts, dtype=np.float64)
    seen = np.flatnonzero(c[1:] > 0) + 1
    order = seen[np.lexsort((seen, -c[seen]))]  # count desc, index asc
    third = int(np.ceil(len(order) / 3)) if len(order) else 0
    label = np.full(c.size, "unseen", dtype=object)
    label[order[:third]] = "head"
    label[order[third:2 * third]] = "mid"
    label[order[2 * third:]] = "tail"
    t = np.asarray(targets, dtype=np.int64)
    out = np.full(t.shape, "unseen", dtype=object)
    inside = (t > 0) & (t < c.size)
    out[inside] = label[t[inside]]
    return out


def segment_report(per_case: Mapping[str, np.ndarray], labels: Mapping[str, Sequence],
                   n_boot: int = 200, seed: int = 0,
                   clusters: np.ndarray | None = None) -> dict[str, dict[str, dict]]:
    """``{segmentation: {label: {"n": cases, metric: {"mean", "ci_low", "ci_high"}}}}`` for
    every segmentation in ``labels`` (one label per case) and every metric in ``per_case``."""
    n_cases = {len(v) for v in per_case.values()}
    if len(n_cases) > 1:
        raise ValueError("every per-case metric needs the same number of cases")
    out: dict[str, dict[str, dict]] = {}
    for seg, seg_labels in labels.items():
        lab = np.asarray(seg_labels, dtype=object)
        if n_cases and lab.shape[0] != next(iter(n_cases)):
            raise ValueError(f"segmentation {seg!r}: one label per case is needed")
        groups: dict[str, dict] = {}
        for value in sorted({str(x) for x in lab}):
            mask = lab.astype(str) == value
            row: dict = {"n": int(mask.sum())}
            for name, values in per_case.items():
                v = np.asarray(values, dtype=np.float64)[mask]
                lo, hi = (bootstrap_ci(v, n_boot=n_boot, seed=seed,
                                       clusters=None if clusters is None else clusters[mask])
                          if n_boot > 0 else (float("nan"), float("nan")))
                row[name] = {"mean": float(v.mean()), "ci_low": lo, "ci_high": hi}
            groups[value] = row
        out[seg] = groups
    return out
