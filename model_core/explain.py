"""Why an item was recommended: the past events of a sequence that contributed most.

    from model_core.explain import explain
    [ex] = explain(model, batch, [item], top_n=3)        # batch: a SequenceBatch, row 0
    ex.contributions   # (Contribution(position, item, action, weight), ...) largest first

``position`` indexes the row as given (``batch.items[row][position]``, oldest first, unknown
items included), so a caller maps a contribution back to the event it holds. One method per
model family (``Explanation.method`` names it):

* ``popular`` — no past event matters: the explanation has no contributions and says
  "popular overall".
* ``transition`` (Markov) — the score of ``j`` after a history ending in ``i`` is the count
  of ``i -> j`` in training (plus a popularity tie-break below 1): the last known event gets
  that count, every other event 0.
* ``similarity`` (item-kNN) — the score is a sum over the last ``recent`` events of
  ``sim(event item, j) / (1 + age)``: each event gets its own term.
* ``neighbours`` (SKNN, V-SKNN, STAN, VSTAN) — the score is a sum over neighbour sessions
  that hold ``j`` of what each adds; each neighbour's addition is split among the current
  session's items it shares in proportion to their weight in its similarity (the
  ``dot`` of :mod:`model_core.models.sknn`). ``Explanation.neighbours`` lists the
  neighbour sessions (index into the model's training sessions) that added most.
* ``integrated_gradients`` (SASRec; available for any neural model) — integrated gradients
  (Sundararajan, Taly & Yan, ICML 2017, "Axiomatic attribution for deep networks") on each
  position's input vector (item embedding plus side features, before SASRec's position
  embedding), from an all-zero input, :data:`IG_STEPS` midpoint steps: the weights add up to
  about the score minus the score with every input vector zeroed.
* ``grad_input`` (any neural model) — gradient × input (Shrikumar et al., 2016, "Not just a
  black box"): the one-step version of the above, a first-order estimate. On SASRec it fails
  the planted test of ``tests/test_explain.py`` (the last event gets the top weight although
  only the first predicts the item), which is why SASRec defaults to integrated gradients.
* ``loo`` (GRU4Rec; available for any model) — leave-one-out occlusion (Zeiler & Fergus,
  ECCV 2014, "Visualizing and understanding convolutional networks", applied to events): the
  score minus the score with that one event removed from the sequence.

For the three counting methods the weights add up exactly to the item's score minus the
model's popularity tie-break (``completeness``, which the tests check against the model's
own scores); the gradient methods and ``loo`` are estimates, and
:mod:`model_core.faithfulness` measures how well each one predicts what deleting an event
really does.

Cost per call (one row, K items): the counting methods are numpy over the row's events and,
for the session-kNN family, its candidate sessions; ``grad_input`` is one forward and one
backward pass over a batch of K copies of the row, ``integrated_gradients`` the same over
``K * IG_STEPS`` copies; ``loo`` is one forward pass over a batch
of (events + 1) rows, shared by all K items. ``seqstream explain-bench`` measures them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from model_core.predictor import SequenceBatch

__all__ = ["IG_STEPS", "METHODS", "Contribution", "Explanation", "Neighbour", "default_method", "drop_event",
           "describe", "explain", "model_window", "single_row"]

#: Explanation methods; ``default_method`` picks one per model family.
METHODS = ("popular", "transition", "similarity", "neighbours", "grad_input",
           "integrated_gradients", "loo")
#: Riemann steps of ``integrated_gradients``
IG_STEPS = 16
POPULAR_NOTE = "popular overall"
NO_EVENT_NOTE = "no single past event changes this item's score"


@dataclass(frozen=True, slots=True)
class Contribution:
    """One past event and how much it added to the item's score."""

    position: int  # index into the row as given (oldest first)
    item: int  # vocabulary index of the event's item
    action: int | None  # action class id (schemas.ACTIONS), None when the row has none
    weight: float  # in the model's score units; larger = contributed more; negative
    # (leave-one-out and gradient methods only): the event lowered the item's score

    def to_dict(self) -> dict:
        return {"position": self.position, "item": self.item, "action": self.action,
                "weight": self.weight}


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A training session that added to the item's score (session-kNN family)."""

    session: int  # index of the training session in the model (sess_indptr row)
    weight: float  # what it added to the item's score
    shared: tuple[int, ...]  # items of the current row it shares (vocabulary indices)

    def to_dict(self) -> dict:
        return {"session": self.session, "weight": self.weight, "shared": list(self.shared)}


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why ``item`` scored as it did for one row: ``contributions`` largest weight first
    (at most ``top_n``; events with a zero weight left out). ``note`` says what an empty
    list means: "popular overall" (no past event scores the item) or "no single past
    event changes this item's score"."""

    item: int
    method: str
    contributions: tuple[Contribution, ...]
    note: str = ""
    neighbours: tuple[Neighbour, ...] = field(default=())

    def to_dict(self) -> dict:
        out = {"item": self.item, "method": self.method,
               "contributions": [c.to_dict() for c in self.contributions]}
        if self.note:
            out["note"] = self.note
        if self.neighbours:
            out["neighbours"] = [n.to_dict() for n in self.neighbours]
        return out


# --------------------------------------------------------------------------- rows
def single_row(batch: SequenceBatch, row: int = 0) -> SequenceBatch:
    """Row ``row`` of ``batch`` as a batch of one."""
    return SequenceBatch(
        items=[np.asarray(batch.items[row])],
        actions=None if batch.actions is None else [np.asarray(batch.actions[row])],
        timestamps_ms=None if batch.timestamps_ms is None else [np.asarray(batch.timestamps_ms[row])],
    )


def drop_event(batch: SequenceBatch, position: int, row: int = 0) -> SequenceBatch:
    """Row ``row`` of ``batch`` without the event at ``position``, as a batch of one."""
    def cut(a):
        a = np.asarray(a)
        return np.concatenate([a[:position], a[position + 1:]])

    return SequenceBatch(
        items=[cut(batch.items[row])],
        actions=None if batch.actions is None else [cut(batch.actions[row])],
        timestamps_ms=None if batch.timestamps_ms is None else [cut(batch.timestamps_ms[row])],
    )


def model_window(model, batch: SequenceBatch, row: int = 0) -> np.ndarray:
    """Positions of the row's events the model reads: known items (index 1..n_items), and for
    a neural model only the last ``max_len`` of them."""
    items = np.asarray(batch.items[row], dtype=np.int64)
    pos = np.flatnonzero((items > 0) & (items < len(model.vocab)))
    max_len = getattr(model, "max_len", None)
    if max_len is not None and hasattr(model, "module"):
        pos = pos[-int(max_len):]
    return pos


def _action_at(batch: SequenceBatch, row: int, position: int) -> int | None:
    if batch.actions is None or len(batch.actions[row]) <= position:
        return None
    return int(batch.actions[row][position])


def _build(batch: SequenceBatch, row: int, item: int, method: str, positions: np.ndarray,
           weights: np.ndarray, top_n: int, note: str = "",
           neighbours: tuple[Neighbour, ...] = ()) -> Explanation:
    """Keep the ``top_n`` largest nonzero weights (ties: the more recent event first)."""
    positions = np.asarray(positions, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    keep = weights != 0
    positions, weights = positions[keep], weights[keep]
    order = np.lexsort((-positions, -weights))[:top_n]
    items = np.asarray(batch.items[row])
    contribs = tuple(Contribution(int(positions[i]), int(items[positions[i]]),
                                  _action_at(batch, row, int(positions[i])), float(weights[i]))
                     for i in order)
    if not contribs and not note:
        note = NO_EVENT_NOTE
    return Explanation(int(item), method, contribs, note, neighbours)


# --------------------------------------------------------------------------- counting models
def _explain_popular(model, batch, row, items, top_n):
    return [Explanation(int(j), "popular", (), POPULAR_NOTE) for j in items]


def _explain_markov(model, batch, row, items, top_n):
    pos = model_window(model, batch, row)
    out = []
    for j in items:
        if not len(pos):
            out.append(Explanation(int(j), "transition", (), POPULAR_NOTE))
            continue
        last = int(batch.items[row][pos[-1]])
        s, e = model.indptr[last], model.indptr[last + 1]
        hit = np.flatnonzero(model.indices[s:e] == j)
        count = float(model.data[s + hit[0]]) if len(hit) else 0.0
        ex = _build(batch, row, j, "transition", pos[-1:], [count], top_n)
        out.append(ex if ex.contributions else
                   Explanation(int(j), "transition", (), POPULAR_NOTE))
    return out


def _explain_itemknn(model, batch, row, items, top_n):
    pos = model_window(model, batch, row)[::-1][: int(model.config["recent"])]  # newest first
    hist = np.asarray(batch.items[row], dtype=np.int64)[pos]
    out = []
    for j in items:
        w = np.zeros(len(pos))
        for age, it in enumerate(hist):
            s, e = model.indptr[it], model.indptr[it + 1]
            hit = np.flatnonzero(model.indices[s:e] == j)
            if len(hit):
                w[age] = float(model.data[s + hit[0]]) / (1.0 + age)
        ex = _build(batch, row, j, "similarity", pos, w, top_n)
        out.append(ex if ex.contributions else
                   Explanation(int(j), "similarity", (), POPULAR_NOTE))
    return out


def _sknn_neighbours(model, hist: np.ndarray):
    """Steps 1-3 of :mod:`model_core.models.sknn` for one history (known items, oldest
    first): the neighbour sessions with their similarity, ``cur_star``, ``nb_star``, the
    shared items' similarity weights, and each distinct current item's last position."""
    from model_core.models.sknn import _groups

    L = len(hist)
    # distinct items, last position (1-based), weights
    rev_items, rev_idx = np.unique(hist[::-1], return_index=True)
    c_item = rev_items
    c_pos = (L - rev_idx).astype(np.float64)  # last occurrence, 1-based
    c_w = model._current_weights(c_pos, np.full(len(c_pos), float(L)))
    n_cur = float(len(c_item))
    sq_cur = float(np.bincount(np.zeros(len(c_w), np.int64), weights=c_w * c_w)[0])  # as the model
    n_sess = len(model.sess_time)
    lo, hi = model.item_indptr[c_item], model.item_indptr[c_item + 1]
    owner = np.repeat(np.arange(len(c_item)), hi - lo)
    at = np.concatenate([np.arange(s, e) for s, e in zip(lo, hi, strict=True)]) \
        if len(owner) else np.zeros(0, np.int64)
    sess = model.item_sessions[at]
    if not len(sess):
        return None
    # per candidate session, reduced as the model does (same order, same pairwise sums,
    # so that tied similarities break the same way)
    order, starts = _groups(sess)
    uniq = sess[order[starts]]
    dot = np.add.reduceat(c_w[owner][order], starts)
    cur_star = np.maximum.reduceat(c_pos[owner][order], starts)
    nb_star = np.maximum.reduceat(model.item_pos[at][order].astype(np.float64), starts)
    t = model.sess_time[uniq]
    cand = np.arange(len(uniq))
    if len(uniq) > model.sample_size:  # the sample_size most recent (ties: earlier trained)
        cand = np.lexsort((uniq, -t))[: model.sample_size]
        cand = np.sort(cand)
    newest = t[cand].max()
    sim = model._similarity(dot[cand], np.full(len(cand), n_cur), np.full(len(cand), sq_cur),
                            model.sess_len[uniq[cand]], (newest - t[cand]).astype(np.float64))
    order = np.lexsort((uniq[cand], -t[cand], -sim))
    order = order[: model.k]
    order = order[sim[order] > 0]
    nb = cand[order]
    return {"sess": uniq[nb], "sim": sim[order], "cur_star": cur_star[nb],
            "nb_star": nb_star[nb], "dot": dot[nb], "c_item": c_item, "c_pos": c_pos,
            "c_w": c_w, "L": float(L), "n_sess": n_sess}


def _explain_sknn(model, batch, row, items, top_n):
    pos = model_window(model, batch, row)
    hist = np.asarray(batch.items[row], dtype=np.int64)[pos]
    nbh = _sknn_neighbours(model, hist) if len(hist) else None
    if nbh is None or not len(nbh["sess"]):
        return [Explanation(int(j), "neighbours", (), POPULAR_NOTE) for j in items]
    sess, c_item = nbh["sess"], nbh["c_item"]
    n_nb = len(sess)
    # every (neighbour, item) entry of the neighbours
    start, stop = model.sess_indptr[sess], model.sess_indptr[sess + 1]
    owner = np.repeat(np.arange(n_nb), stop - start)
    at = (np.arange(len(owner)) - np.repeat(np.cumsum(stop - start) - (stop - start),
                                            stop - start) + start[owner])
    nb_item = model.sess_items[at].astype(np.int64)
    # shared [n_nb, C]: which current items each neighbour holds; a neighbour's addition is
    # split over them by their share of its similarity's dot
    ci = np.minimum(np.searchsorted(c_item, nb_item), len(c_item) - 1)
    hit = c_item[ci] == nb_item
    shared = np.zeros((n_nb, len(c_item)), dtype=bool)
    shared[owner[hit], ci[hit]] = True
    split = shared * nbh["c_w"][None, :] / nbh["dot"][:, None]  # [n_nb, C]
    targets = np.asarray(items, dtype=np.int64)
    sel = np.flatnonzero(np.isin(nb_item, targets))
    add = model._contributions(nbh["sim"][owner[sel]], nb_item[sel],
                               model.sess_pos[at[sel]].astype(np.float64),
                               nbh["nb_star"][owner[sel]], nbh["cur_star"][owner[sel]],
                               np.full(len(sel), nbh["L"]))
    positions = pos[nbh["c_pos"].astype(np.int64) - 1]  # distinct item -> its last position
    out = []
    for j in targets.tolist():
        mine = nb_item[sel] == j
        per_nb = np.zeros(n_nb)
        per_nb[owner[sel][mine]] = add[mine]
        w_item = per_nb @ split
        best = [n for n in np.lexsort((sess, -per_nb))[:top_n] if per_nb[n] > 0]
        neighbours = tuple(Neighbour(int(sess[n]), float(per_nb[n]),
                                     tuple(int(x) for x in c_item[shared[n]])) for n in best)
        ex = _build(batch, row, j, "neighbours", positions, w_item, top_n,
                    neighbours=neighbours)
        out.append(ex if ex.contributions else
                   Explanation(int(j), "neighbours", (), POPULAR_NOTE))
    return out


# --------------------------------------------------------------------------- neural models
def _gradient_attribution(model, batch, row, items, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions read, [K, n] attributions) on the input encoder's output (item embedding
    plus side features) for each of ``items``: gradient × input when ``steps`` is 0, else
    integrated gradients from the all-zero input with a ``steps``-point midpoint Riemann sum.
    One forward and one backward pass over ``K * max(1, steps)`` copies of the row. (A
    SASRec transition term reads the last item's counts, not its input vector: it adds to
    the scores but not to these attributions.)"""
    import torch

    from model_core.models.base import last_items

    pos = model_window(model, batch, row)
    one = single_row(batch, row)
    k, m = len(items), max(1, steps)
    copies = k * m
    rep = SequenceBatch(items=one.items * copies,
                        actions=None if one.actions is None else one.actions * copies,
                        timestamps_ms=None if one.timestamps_ms is None else one.timestamps_ms * copies)
    module = model.module
    captured = []
    alpha = None

    def hook(_mod, _inp, output):
        x = output.detach().requires_grad_(True)
        captured.append(x)
        return x if alpha is None else x * alpha.view(-1, 1, 1).to(x.dtype)

    handle = module.inputs.register_forward_hook(hook)
    was_training = module.training
    module.eval()
    try:
        # gradients even when the caller runs under inference_mode or no_grad
        with torch.inference_mode(False), torch.enable_grad():
            p = model.pad(rep)
            # copy c: item c // m at path point (c % m + 0.5) / m (1: gradient x input)
            if steps:
                alpha = (torch.arange(copies, device=p.items.device) % m + 0.5) / m
            h = module(p.items, p.lengths, p.actions, p.gaps)  # [copies, H]
            sc = module.score_next(h, last_items(p))  # [copies, V]
            target = torch.as_tensor(items, device=sc.device).repeat_interleave(m)
            sc.gather(1, target.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
        module.zero_grad(set_to_none=True)
        module.train(was_training)
    x = captured[0]  # [copies, L', dim]; the gradient is d score / d (alpha * x) * alpha
    grad = x.grad if alpha is None else x.grad / alpha.view(-1, 1, 1)
    attr = (grad * x).sum(-1).detach().view(k, m, -1).mean(1)  # [K, L']
    return pos, attr.cpu().numpy()[:, : len(pos)].astype(np.float64)


def _explain_gradient(model, batch, row, items, top_n, method: str, steps: int):
    items = [int(j) for j in items]
    if not len(model_window(model, batch, row)) or not items:
        return [Explanation(j, method, (), POPULAR_NOTE) for j in items]
    pos, attr = _gradient_attribution(model, batch, row, items, steps)
    return [_build(batch, row, j, method, pos, attr[i], top_n) for i, j in enumerate(items)]


def _explain_grad_input(model, batch, row, items, top_n):
    return _explain_gradient(model, batch, row, items, top_n, "grad_input", 0)


def _explain_integrated(model, batch, row, items, top_n):
    return _explain_gradient(model, batch, row, items, top_n, "integrated_gradients", IG_STEPS)


def _explain_loo(model, batch, row, items, top_n):
    """Leave-one-out: the row and the row without each event it reads, scored in one batch."""
    pos = model_window(model, batch, row)
    items = [int(j) for j in items]
    if not len(pos) or not items:
        return [Explanation(j, "loo", (), POPULAR_NOTE) for j in items]
    variants = [single_row(batch, row)] + [drop_event(batch, int(q), row) for q in pos]
    big = SequenceBatch(
        items=[v.items[0] for v in variants],
        actions=None if batch.actions is None else [v.actions[0] for v in variants],
        timestamps_ms=None if batch.timestamps_ms is None else [v.timestamps_ms[0]
                                                                for v in variants])
    sc = model.score(big)[:, items].astype(np.float64)  # [1 + n, K]
    drop = sc[0][None, :] - sc[1:]  # [n, K]
    return [_build(batch, row, j, "loo", pos, drop[:, i], top_n) for i, j in enumerate(items)]


_BY_METHOD = {
    "popular": _explain_popular,
    "transition": _explain_markov,
    "similarity": _explain_itemknn,
    "neighbours": _explain_sknn,
    "grad_input": _explain_grad_input,
    "integrated_gradients": _explain_integrated,
    "loo": _explain_loo,
}


def default_method(model) -> str:
    """The method that fits ``model``'s family (see the module docstring)."""
    from model_core.models.sknn import SessionKNNBase

    name = getattr(model, "name", "")
    if isinstance(model, SessionKNNBase):
        return "neighbours"
    return {"popular": "popular", "markov": "transition", "itemknn": "similarity",
            "sasrec": "integrated_gradients", "gru4rec": "loo"}.get(name, "loo")


def _check_method(model, method: str) -> None:
    from model_core.models.sknn import SessionKNNBase

    if method not in _BY_METHOD:
        raise ValueError(f"unknown explanation method {method!r}; choose one of "
                         f"{', '.join(METHODS)}")
    fits = {"popular": True, "loo": True,
            "transition": getattr(model, "name", "") == "markov",
            "similarity": getattr(model, "name", "") == "itemknn",
            "neighbours": isinstance(model, SessionKNNBase),
            "grad_input": hasattr(model, "module"),
            "integrated_gradients": hasattr(model, "module")}[method]
    if not fits:
        raise ValueError(f"explanation method {method!r} does not apply to model "
                         f"{getattr(model, 'name', type(model).__name__)!r}; it takes "
                         f"{default_method(model)!r} or 'loo'")


def explain(model, batch: SequenceBatch, items: Sequence[int], top_n: int = 3, *,
            row: int = 0, method: str | None = None) -> list[Explanation]:
    """One :class:`Explanation` per item of ``items`` (vocabulary indices, e.g. a
    prediction's top-K) for row ``row`` of ``batch``, with at most ``top_n`` contributions
    each. ``method`` defaults to :func:`default_method`; ``"loo"`` applies to every model,
    ``"grad_input"`` and ``"integrated_gradients"`` to every neural one."""
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    method = method or default_method(model)
    _check_method(model, method)
    return _BY_METHOD[method](model, batch, row, [int(j) for j in items], int(top_n))


def describe(model, batch: SequenceBatch, items: Sequence[int], row: int = 0,
             top_n: int = 3) -> list[dict]:
    """:func:`explain` as JSON-ready records for the stream and the serving endpoints: per
    item its id, the method, and the contributing past events as ``{"item", "action",
    "events_ago", "weight"}`` (0 events ago = the newest event of the row), plus ``note``
    when there are none."""
    from schemas.actions import ACTIONS

    vocab = model.vocab
    n = len(batch.items[row])
    items = [int(j) for j in items if j > 0]
    if not n or not items:
        return []
    return [{
        "item": vocab.item_id(ex.item), "method": ex.method,
        "because": [{"item": vocab.item_id(c.item),
                     "action": ACTIONS[c.action] if c.action is not None else None,
                     "events_ago": n - 1 - c.position, "weight": round(c.weight, 6)}
                    for c in ex.contributions],
        **({"note": ex.note} if ex.note else {}),
    } for ex in explain(model, batch, items, top_n=top_n, row=row)]
