"""The growing item table: new items join the vocabulary and the model as they first appear.

:class:`ItemTable` decides which slot (vocabulary index) a new item gets:

- below the bound (``max_items``, 0 = none) it gets a fresh slot at the end (the vocabulary,
  the count arrays and the embedding rows grow by one);
- at the bound it takes the slot of the item **not seen for the longest** (least recently
  seen, counted in events; never-seen slots first, ties to the lowest index). That item is
  forgotten: its counts and transitions are cleared, its embedding row starts afresh, and
  whoever holds sequences must drop the slot from them (:attr:`Admission.evicted`).

The clock is the learner's event count, not the wall clock, so the same log evicts the same
items online and offline.

Resizing the models happens here too, on the model's own arrays and modules, so the models
need no hook: :func:`grow_neural` replaces the id embedding (and GRU4Rec's output bias) by a
larger one and moves the optimiser state along; :func:`grow_counting` pads the count arrays
and item tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from model_core.vocab import ItemVocab


@dataclass(slots=True)
class Admission:
    """What one update did to the item table."""

    added: list[int] = field(default_factory=list)  # slots given to new items (new or reused)
    evicted: list[int] = field(default_factory=list)  # reused slots (their old item forgotten)
    grown_to: int = 0  # len(vocab) after the update


class ItemTable:
    """Slot bookkeeping beside an :class:`~model_core.vocab.ItemVocab` (changed in place)."""

    def __init__(self, vocab: ItemVocab, max_items: int = 0) -> None:
        self.vocab = vocab
        self.max_items = int(max_items)
        self.trained_ids = frozenset(vocab.item_ids(range(1, len(vocab))))
        self.last_seen = np.full(len(vocab), -1, dtype=np.int64)
        self.born = np.zeros(len(vocab), dtype=bool)  # slot holds an item born after training
        # slot given to an item during the stream (new, or a reused slot): not the trained row
        self.joined = np.zeros(len(vocab), dtype=bool)

    def _fit(self) -> None:
        n = len(self.vocab)
        if len(self.last_seen) < n:
            self.last_seen = np.r_[self.last_seen, np.full(n - len(self.last_seen), -1, np.int64)]
            self.born = np.r_[self.born, np.zeros(n - len(self.born), bool)]
            self.joined = np.r_[self.joined, np.zeros(n - len(self.joined), bool)]

    def admit(self, item_ids, clocks) -> Admission:
        """Give every unknown id of ``item_ids`` a slot (in order of first appearance) and
        mark each id seen at its ``clocks`` value."""
        adm = Admission()
        index = self.vocab.index
        for item_id, clock in zip(item_ids, clocks, strict=True):
            slot = index(item_id)
            if slot == 0:
                if self.max_items and self.vocab.n_items >= self.max_items:
                    ages = self.last_seen[1:]
                    slot = int(np.argmin(ages)) + 1
                    self.vocab.reassign(slot, item_id)
                    adm.evicted.append(slot)
                else:
                    slot = self.vocab.add(item_id)
                    self._fit()
                adm.added.append(slot)
                self.born[slot] = item_id not in self.trained_ids
                self.joined[slot] = True
            self.last_seen[slot] = clock
        adm.grown_to = len(self.vocab)
        return adm

    def is_new(self, slots: np.ndarray) -> np.ndarray:
        """Whether each slot holds an item born after training (same shape as ``slots``)."""
        s = np.asarray(slots, dtype=np.int64)
        return self.born[np.clip(s, 0, len(self.born) - 1)] & (s > 0)


# --------------------------------------------------------------------------- neural models
def _new_rows(weight: torch.Tensor, n: int, init: str, rng: np.random.Generator) -> torch.Tensor:
    """``n`` starting vectors for new items from the existing rows ``weight[1:]``."""
    old = weight[1:].detach().float()
    dim = weight.shape[1]
    spread = float(old.std()) if old.numel() > 1 else dim ** -0.5
    noise = torch.from_numpy(rng.standard_normal((n, dim)).astype(np.float32))
    if init == "mean" and len(old):
        return old.mean(0, keepdim=True) + noise * (0.01 * spread)
    return noise * spread


def _move_state(opts, old: torch.Tensor, new: torch.Tensor) -> None:
    """Point the optimisers at ``new`` in place of ``old``; per-row state is zero-padded."""
    for opt in opts:
        for group in opt.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        st = opt.state.pop(old, None)
        if st is None:
            continue
        for k, v in list(st.items()):
            if torch.is_tensor(v) and v.dim() and v.shape[0] == old.shape[0] and v.shape != new.shape:
                pad = v.new_zeros((new.shape[0] - v.shape[0],) + tuple(v.shape[1:]))
                st[k] = torch.cat([v, pad])
        opt.state[new] = st


def grow_neural(module: nn.Module, n_vocab: int, added: list[int], evicted: list[int],
                init: str, rng: np.random.Generator, opts=()) -> None:
    """Fit a :class:`~model_core.models.base.SequenceModule` to ``n_vocab`` slots.

    New rows start from ``init`` (:func:`_new_rows`); reused (``evicted``) rows start afresh
    the same way, with their optimiser state cleared. Text vectors and categories of new and
    reused slots are zero (unknown); the learner installs the text vectors of items whose
    metadata it has (:mod:`model_core.learn.texts`).
    """
    emb = module.item_emb
    n_old = emb.n_items + 1
    grow = n_vocab - n_old
    fresh = sorted(set(evicted) | {s for s in added if s < n_old})  # reused slots
    if emb.id_emb is not None and (grow > 0 or fresh):
        w = emb.id_emb.weight
        if grow > 0:
            big = nn.Embedding(n_vocab, emb.dim, padding_idx=0, sparse=emb.id_emb.sparse)
            big = big.to(device=w.device, dtype=w.dtype)
            with torch.no_grad():
                big.weight[:n_old] = w
                big.weight[n_old:] = _new_rows(w, grow, init, rng).to(w)
            _move_state(opts, w, big.weight)
            emb.id_emb = big
            w = big.weight
        if fresh:
            idx = torch.tensor(fresh, dtype=torch.long, device=w.device)
            with torch.no_grad():
                w[idx] = _new_rows(w, len(fresh), init, rng).to(w)
            for opt in opts:
                for v in opt.state.get(w, {}).values():
                    if torch.is_tensor(v) and v.dim() and v.shape[0] == w.shape[0]:
                        v[idx] = 0
    if grow > 0:
        emb.n_items = n_vocab - 1
        module.n_items = n_vocab - 1
        if getattr(emb, "text_vectors", None) is not None:
            tv = emb.text_vectors
            emb.text_vectors = torch.cat([tv, tv.new_zeros(grow, tv.shape[1])])
        enc = module.inputs
        if getattr(enc, "use_category", False):
            ic = enc.item_categories
            enc.item_categories = torch.cat([ic, ic.new_zeros(grow)])
        bias = getattr(module, "out_bias", None)
        if bias is not None:
            nb = nn.Parameter(torch.cat([bias.detach(), bias.new_zeros(grow)]))
            _move_state(opts, bias, nb)
            module.out_bias = nb
        lc = getattr(module, "log_count", None)
        if lc is not None:
            module.log_count = torch.cat([lc, lc.new_zeros(grow)])
    if fresh:
        reused = torch.tensor(fresh, dtype=torch.long)
        with torch.no_grad():  # a reused slot's text and category were another item's
            if getattr(emb, "text_vectors", None) is not None:
                emb.text_vectors[reused.to(emb.text_vectors.device)] = 0
            ic = getattr(module.inputs, "item_categories", None)
            if getattr(module.inputs, "use_category", False) and ic is not None:
                ic[reused.to(ic.device)] = 0
        if getattr(module, "transitions", None) is not None:  # a reused slot's counts
            module.transitions.forget(fresh)  # were another item's
        bias = getattr(module, "out_bias", None)
        if bias is not None:
            with torch.no_grad():
                bias[torch.tensor(fresh, dtype=torch.long, device=bias.device)] = 0
        lc = getattr(module, "log_count", None)
        if lc is not None:
            lc[torch.tensor(fresh, dtype=torch.long, device=lc.device)] = 0


# --------------------------------------------------------------------------- counting models
def grow_counting(model, n_vocab: int) -> None:
    """Pad a counting model's per-item arrays to ``n_vocab`` slots (new items: no counts)."""
    grow = n_vocab - len(model.item_counts)
    if grow <= 0:
        return
    model.item_counts = np.r_[model.item_counts, np.zeros(grow, np.float32)]
    if hasattr(model, "indptr"):  # item -> item tables (Markov, item-kNN): empty new rows
        model.indptr = np.r_[model.indptr, np.full(grow, model.indptr[-1], np.int64)]


__all__ = ["Admission", "ItemTable", "grow_counting", "grow_neural"]
