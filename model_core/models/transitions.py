"""A counted last-item transition term for a neural model's scores.

The score of item ``j`` after a history whose last item is ``i`` gains

    w * log(1 + c(i, j))

where ``c(i, j)`` counts how often ``j`` followed ``i`` in the training sequences (the
first-order Markov chain's table, ``model_core.models.markov``) and ``w`` is one weight. It
is a log-linear interpolation of a neural and a count-based model, as in Neubig & Dyer's
hybrids of neural and n-gram language models (EMNLP 2016, "Generalizing and Hybridizing
Count-based and Neural Language Models"), with the weight chosen on the validation part as
session-rec's weighted hybrids choose theirs (Ludewig & Jannach, 2018, "Evaluation of
session-based recommendation algorithms"): the network trains alone (``w = 0``), then
:func:`model_core.train.choose_transition_weight` tries :data:`WEIGHTS` on the validation
cases and keeps the best NDCG@10. Trained jointly, ``w`` stayed small (about 1.3 on the
20,000-event synthetic log): on its training events the network had memorised their
transitions itself, and it then scored worse than the Markov chain on validation.

Why: a sequence model learns each item's successors from the few dozen events of that item;
the counts give the Markov chain's evidence at once, and the network ranks what they leave
open (items after a last item with few successors). With a large ``w`` the ranking among an
item's counted successors is the Markov chain's (``log(1 + c)`` is monotone in ``c``); unseen
pairs add 0.

The table is sparse (CSR buffers ``indptr`` / ``indices`` / ``logc``, saved in the
checkpoint with ``weight`` and the network's weights) and built once from the training
sequences (:meth:`TransitionTerm.fit`); online learning does not count new events into it
(an item added later has no row and gets no term; a reused slot's pairs are dropped,
:meth:`TransitionTerm.forget`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["WEIGHTS", "TransitionTerm", "transition_counts"]

#: The weights tried on validation (0: the network alone; 1000: the Markov chain's ranking
#: wherever the last item has counted successors, the network's elsewhere).
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 1000.0)


def transition_counts(sequences: Sequence[np.ndarray], n_rows: int):
    """CSR ``(indptr [n_rows + 1], indices, counts)`` of consecutive pairs ``(s[t], s[t+1])``
    of known items (both > 0) in ``sequences``; rows ``>= n_rows`` are left out."""
    src = [np.asarray(s[:-1], np.int64) for s in sequences if len(s) > 1]
    dst = [np.asarray(s[1:], np.int64) for s in sequences if len(s) > 1]
    src = np.concatenate(src) if src else np.zeros(0, np.int64)
    dst = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    keep = (src > 0) & (dst > 0) & (src < n_rows)
    key = (src[keep] << 32) | dst[keep]
    uniq, counts = np.unique(key, return_counts=True)  # sorted: by row, then column
    rows = uniq >> 32
    indptr = np.zeros(n_rows + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), uniq & 0xFFFFFFFF, counts


class TransitionTerm(nn.Module):
    """``w * log(1 + c(last, j))`` from a sparse transition-count table (module docstring)."""

    def __init__(self, n_items: int, weight: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", torch.tensor(float(weight)))  # set, not trained
        self.register_buffer("indptr", torch.zeros(n_items + 2, dtype=torch.int64))
        self.register_buffer("indices", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("logc", torch.zeros(0, dtype=torch.float32))

    def fit(self, sequences: Sequence[np.ndarray], n_items: int) -> None:
        """Count the transitions of ``sequences`` (item indices 1..n_items, 0 = unknown)."""
        indptr, indices, counts = transition_counts(sequences, n_items + 1)
        dev = self.weight.device
        self.indptr = torch.from_numpy(indptr).to(dev)
        self.indices = torch.from_numpy(indices).to(dev)
        self.logc = torch.from_numpy(np.log1p(counts).astype(np.float32)).to(dev)

    def forget(self, items: Sequence[int]) -> None:
        """Drop every pair from or to ``items`` (slots that online learning gives to new
        items: their counts were the old items')."""
        gone = torch.as_tensor(list(items), dtype=torch.int64, device=self.indices.device)
        rows = self._rows_of()
        keep = ~(torch.isin(rows, gone) | torch.isin(self.indices, gone))
        per_row = torch.bincount(rows[keep], minlength=self.indptr.numel() - 1)
        self.indptr = torch.cat([self.indptr.new_zeros(1), torch.cumsum(per_row, 0)])
        self.indices, self.logc = self.indices[keep], self.logc[keep]

    @property
    def n_pairs(self) -> int:
        return int(self.indices.numel())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the table's sizes are the training log's (items added online by model_core.learn
        # have no row): take the saved shapes before copying
        for name in ("indptr", "indices", "logc"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=self.weight.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _span(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and length of each ``src`` row in the table (0 for unknown or new items)."""
        known = (src > 0) & (src < self.indptr.numel() - 1)
        s = torch.where(known, src, torch.zeros_like(src))
        start = self.indptr[s]
        return start, torch.where(known, self.indptr[s + 1] - start, torch.zeros_like(start))

    def rows(self, src: torch.Tensor, width: int) -> torch.Tensor:
        """[N] last items -> [N, width] features ``log(1 + c(src, j))`` for j < width."""
        out = torch.zeros(len(src), width, device=self.logc.device)
        start, length = self._span(src)
        total = int(length.sum())
        if total == 0:
            return out
        row = torch.repeat_interleave(torch.arange(len(src), device=src.device), length)
        first = torch.cumsum(length, 0) - length  # where each row's run starts in the flat
        at = torch.arange(total, device=src.device) - first[row] + start[row]
        col = self.indices[at]
        keep = col < width
        out[row[keep], col[keep]] = self.logc[at[keep]]
        return out

    def at(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """[N] last items, [N, C] (or [C], shared) candidates -> [N, C] features."""
        if dst.dim() == 1:
            dst = dst.view(1, -1).expand(len(src), -1)
        if self.n_pairs == 0:
            return torch.zeros(dst.shape, device=self.logc.device)
        start, length = self._span(src)
        end = (start + length).view(-1, 1)
        key = (src.view(-1, 1) << 32) | dst  # [N, C]
        keys = (self._rows_of() << 32) | self.indices  # sorted
        pos = torch.searchsorted(keys, key.reshape(-1)).view(key.shape)
        pos = torch.minimum(pos, end.clamp_min(1) - 1).clamp_min(0)
        hit = (pos >= start.view(-1, 1)) & (pos < end) & (keys[pos] == key)
        return torch.where(hit, self.logc[pos], torch.zeros((), device=self.logc.device))

    def _rows_of(self) -> torch.Tensor:
        lengths = self.indptr[1:] - self.indptr[:-1]
        return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device),
                                       lengths)
