"""Beyond-accuracy metrics of top-K lists: novelty, popularity bias, diversity, exposure.

Pure functions of the recommended lists (``[cases, K]`` item indices, 0 = padding) and the
training popularity of each item (``counts[i]``: training interactions of item ``i``, index 0
unused), so the offline evaluation and anything else that holds the same lists compute the
same figures:

- :func:`novelty` — mean self-information ``-log2 p(i)`` of the recommended items, ``p(i)``
  the item's share of training interactions; an item never seen in training counts as seen
  once (so the figure stays finite). Higher: less obvious recommendations (Zhou et al., PNAS
  2010; Castells et al., "Novelty and diversity metrics", 2011).
- :func:`average_recommendation_popularity` (ARP) — mean training count of the recommended
  items, per list then over lists (Abdollahpouri et al., FLAIRS 2019).
- :func:`long_tail_share` (APLT) — share of recommended items outside the *short head*, the
  ``head_share`` most popular items of the catalogue (20 % by default; ties by item index).
  A never-seen item is in the tail.
- :func:`exposure_gini` — Gini coefficient of how often each catalogue item appears over all
  lists (0: every item shown equally often; near 1: a few items get all the exposure).
- :func:`intra_list_diversity` (ILD) — mean over lists of the share of item pairs with
  different categories; pairs with an item without a category are left out.
- :func:`repeat_split` — how much of the hit rate re-recommends an item already in the user's
  history (repeat consumption) against items new to the user.

Novelty, ARP, APLT and ILD are computed from additive sums (:func:`list_metric_sums`,
:func:`ild_sums`, turned into means by :func:`metrics_from_sums`), and exposure Gini from
per-item exposure counts (:func:`exposure_counts`, :func:`gini_of_exposure`): the offline
functions sum or count over all their lists at once, the online windows
(:mod:`stream_app.windows.aggregation`) add the sums and counts of each batch, so a window's
figure is the offline figure of the same lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _lists(top: np.ndarray, k: int) -> np.ndarray:
    top = np.asarray(top, dtype=np.int64)
    if top.ndim != 2:
        raise ValueError(f"top-K lists must be a [cases, K] array, got shape {top.shape}")
    return top[:, :k]


def _counts(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise ValueError("counts must hold one training count per item index (index 0 unused)")
    return c


def list_metric_sums(top: np.ndarray, counts: np.ndarray, ks: Sequence[int],
                     head: np.ndarray | None = None, head_share: float = 0.2) -> dict[str, float]:
    """The additive sums behind novelty, ARP and APLT at each K, so that figures over many
    batches (the online windows) equal the figures over all their lists at once:
    ``novelty@K`` (sum of ``-log2 p`` over recommended items) with ``items@K`` (their
    number), ``arp@K`` and ``aplt@K`` (sums over non-empty lists of the list's mean training
    count and tail share) with ``lists@K``. ``head``: the :func:`short_head` mask, when the
    caller keeps it (it depends on the counts only)."""
    c = _counts(counts)
    head = short_head(c, head_share) if head is None else head
    total = max(c[1:].sum(), 1.0)
    out: dict[str, float] = {}
    for k in ks:
        lists = _lists(top, k)
        valid = lists > 0
        safe = np.where(valid, lists, 0)
        n = valid.sum(axis=1)
        keep = n > 0
        info = np.where(valid, -np.log2(np.maximum(c[safe], 1.0) / total), 0.0)
        pop = np.where(valid, c[safe], 0.0).sum(axis=1)
        tail = (valid & ~head[safe]).sum(axis=1)
        out[f"novelty@{k}"] = float(info.sum())
        out[f"items@{k}"] = float(valid.sum())
        out[f"arp@{k}"] = float((pop[keep] / n[keep]).sum())
        out[f"aplt@{k}"] = float((tail[keep] / n[keep]).sum())
        out[f"lists@{k}"] = float(keep.sum())
    return out


def add_sums(total: dict[str, float], more: dict[str, float]) -> None:
    """``total += more``, key by key (sums of :func:`list_metric_sums`)."""
    for key, v in more.items():
        total[key] = total.get(key, 0.0) + v


def metrics_from_sums(sums: dict[str, float], ks: Sequence[int]) -> dict[str, float]:
    """``novelty@K``, ``arp@K``, ``aplt@K`` from :func:`list_metric_sums` and ``ild@K`` from
    :func:`ild_sums`, for the sums present (NaN without lists)."""
    nan = float("nan")
    out: dict[str, float] = {}
    for k in ks:
        if f"novelty@{k}" in sums:
            items, lists = sums.get(f"items@{k}", 0.0), sums.get(f"lists@{k}", 0.0)
            out[f"novelty@{k}"] = sums[f"novelty@{k}"] / items if items else nan
            out[f"arp@{k}"] = sums[f"arp@{k}"] / lists if lists else nan
            out[f"aplt@{k}"] = sums[f"aplt@{k}"] / lists if lists else nan
        if f"ild@{k}" in sums:
            n = sums.get(f"ild_lists@{k}", 0.0)
            out[f"ild@{k}"] = sums[f"ild@{k}"] / n if n else nan
    return out


def weights_from_sums(sums: dict[str, float], ks: Sequence[int]) -> dict[str, float]:
    """What each figure of :func:`metrics_from_sums` is a mean over (recommended items for
    novelty, lists for ARP / APLT, lists with two categorised items for ILD): the weights
    that make means of several windows' figures exact."""
    out: dict[str, float] = {}
    for k in ks:
        if f"novelty@{k}" in sums:
            lists = sums.get(f"lists@{k}", 0.0)
            out.update({f"novelty@{k}": sums.get(f"items@{k}", 0.0), f"arp@{k}": lists,
                        f"aplt@{k}": lists})
        if f"ild@{k}" in sums:
            out[f"ild@{k}"] = sums.get(f"ild_lists@{k}", 0.0)
    return out


def novelty(top: np.ndarray, counts: np.ndarray, k: int) -> float:
    """Mean ``-log2(count_i / total)`` over the recommended items (padding left out)."""
    return metrics_from_sums(list_metric_sums(top, counts, (k,)), (k,))[f"novelty@{k}"]


def average_recommendation_popularity(top: np.ndarray, counts: np.ndarray, k: int) -> float:
    """Mean over lists of the mean training count of a list's items."""
    return metrics_from_sums(list_metric_sums(top, counts, (k,)), (k,))[f"arp@{k}"]


def short_head(counts: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Boolean mask over item indices: the ``head_share`` most popular catalogue items."""
    c = _counts(counts)
    if not 0.0 < head_share < 1.0:
        raise ValueError("head_share must lie strictly between 0 and 1")
    n_items = c.size - 1
    n_head = int(round(head_share * n_items))
    order = np.lexsort((np.arange(1, c.size), -c[1:])) + 1  # count desc, then index asc
    mask = np.zeros(c.size, dtype=bool)
    mask[order[:n_head]] = True
    return mask


def long_tail_share(top: np.ndarray, counts: np.ndarray, k: int,
                    head_share: float = 0.2) -> float:
    """Mean over lists of the share of a list's items that lie outside the short head."""
    sums = list_metric_sums(top, counts, (k,), head_share=head_share)
    return metrics_from_sums(sums, (k,))[f"aplt@{k}"]


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative ``values`` (0 = all equal)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0 or x.sum() == 0:
        return float("nan") if n == 0 else 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * x.sum()))


def exposure_counts(top: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(item indices, ascending; how often each is in the top ``k`` of the lists): the
    exposure of the recommended items (padding left out)."""
    lists = _lists(top, k)
    return np.unique(lists[lists > 0], return_counts=True)


def gini_of_exposure(items: np.ndarray, counts: np.ndarray, n_items: int) -> float:
    """Gini of the exposure of the ``n_items`` catalogue items (items 1..n_items; the ones
    not in ``items`` were never recommended) from :func:`exposure_counts` or their sums."""
    items = np.asarray(items, dtype=np.int64)
    keep = (items >= 1) & (items <= n_items)
    exposure = np.zeros(n_items, dtype=np.float64)
    np.add.at(exposure, items[keep] - 1, np.asarray(counts, dtype=np.float64)[keep])
    return gini(exposure)


def exposure_gini(top: np.ndarray, n_items: int, k: int) -> float:
    """Gini of the number of times each of the ``n_items`` catalogue items is recommended."""
    return gini_of_exposure(*exposure_counts(top, k), n_items)


#: rows of lists compared pairwise at once by :func:`ild_sums` (bounds its memory)
_ILD_CHUNK = 4096


def ild_sums(top: np.ndarray, categories: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """The additive sums behind ILD at each K: ``ild@K`` (sum over lists of the share of
    item pairs with different categories) and ``ild_lists@K`` (lists with two or more items
    that have a category). ``categories[i]``: item ``i``'s category as a non-negative
    integer, -1 for none; an item past the end of ``categories`` has none."""
    cat = np.asarray(categories, dtype=np.int64)
    out: dict[str, float] = {}
    for k in ks:
        lists = _lists(top, k)
        total = lists_n = 0.0
        for s in range(0, len(lists), _ILD_CHUNK):
            rows = lists[s:s + _ILD_CHUNK]
            inside = (rows > 0) & (rows < cat.size)
            c = np.where(inside, cat[np.where(inside, rows, 0)], -1)
            valid = c >= 0
            n = valid.sum(axis=1)
            same = ((c[:, :, None] == c[:, None, :]) & valid[:, :, None]).sum(axis=(1, 2))
            pairs = n * (n - 1) / 2
            keep = n >= 2
            differ = pairs - (same - n) / 2  # same-category pairs, the diagonal left out
            total += float((differ[keep] / pairs[keep]).sum())
            lists_n += float(keep.sum())
        out[f"ild@{k}"] = total
        out[f"ild_lists@{k}"] = lists_n
    return out


def intra_list_diversity(top: np.ndarray, categories: np.ndarray, k: int) -> float:
    """Mean over lists of the share of item pairs with different categories.

    ``categories[i]``: the category of item ``i`` as a non-negative integer, -1 for none."""
    return metrics_from_sums(ild_sums(top, categories, (k,)), (k,))[f"ild@{k}"]


def repeat_split(hits: np.ndarray, target_in_history: np.ndarray) -> dict[str, float]:
    """Hit rate on cases whose target the user had already interacted with (``repeat``) and
    on the others (``new``), and the share of all hits that were repeats."""
    h = np.asarray(hits, dtype=np.float64)
    rep = np.asarray(target_in_history, dtype=bool)
    if h.shape != rep.shape:
        raise ValueError("one repeat flag per case is needed")
    nan = float("nan")
    return {
        "hr_repeat": float(h[rep].mean()) if rep.any() else nan,
        "hr_new": float(h[~rep].mean()) if (~rep).any() else nan,
        "repeat_case_share": float(rep.mean()) if rep.size else nan,
        "repeat_hit_share": float(h[rep].sum() / h.sum()) if h.sum() > 0 else nan,
    }


def beyond_accuracy(top: np.ndarray, counts: np.ndarray, ks: Sequence[int],
                    categories: np.ndarray | None = None,
                    head_share: float = 0.2) -> dict[str, float]:
    """Every list metric above at each K: ``novelty@K``, ``arp@K``, ``aplt@K``, ``gini@K``
    and, with ``categories``, ``ild@K``."""
    n_items = _counts(counts).size - 1
    lists = metrics_from_sums(list_metric_sums(top, counts, ks, head_share=head_share), ks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"novelty@{k}"] = lists[f"novelty@{k}"]
        out[f"arp@{k}"] = lists[f"arp@{k}"]
        out[f"aplt@{k}"] = lists[f"aplt@{k}"]
        out[f"gini@{k}"] = exposure_gini(top, n_items, k)
        if categories is not None:
            out[f"ild@{k}"] = intra_list_diversity(top, categories, k)
    return out
