"""First-order Markov chain: item -> next-item transition counts.

The score of item ``j`` after a history ending in ``i`` is the number of times ``j``
followed ``i`` in training, plus popularity scaled into [0, 1) so that popularity breaks ties
(and is the whole answer after an item never seen with a successor). The next action is
predicted from the last action (action -> next-action counts).
"""

from __future__ import annotations

import numpy as np

from model_core.hparams import declared
from model_core.models.base import CountingRecommender
from model_core.models.data import SeqData


def csr_from_pairs(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int):
    """Sum duplicate (src, dst) pairs and return CSR arrays (indptr, indices, data)."""
    key = src.astype(np.int64) * n + dst.astype(np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    data = np.bincount(inv, weights=weight, minlength=len(uniq)).astype(np.float32)
    rows = (uniq // n).astype(np.int64)
    cols = (uniq % n).astype(np.int32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols, data


class ItemTableRecommender(CountingRecommender):
    """A counting model whose state is one sparse item -> item table (CSR arrays
    ``indptr`` / ``indices`` / ``data``), saved and loaded as such."""

    table_name = "item table"

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"indptr": self.indptr, "indices": self.indices, "data": self.data}

    def _load_extra(self, arrays) -> None:
        self.indptr = np.asarray(arrays["indptr"], dtype=np.int64)
        self.indices = np.asarray(arrays["indices"], dtype=np.int32)
        self.data = np.asarray(arrays["data"], dtype=np.float32)
        if len(self.indptr) != len(self.vocab) + 1:
            raise ValueError(f"{self.table_name} does not match the vocabulary size")


class MarkovRecommender(ItemTableRecommender):
    name = "markov"
    table_name = "transition table"
    hparams = declared("markov")  # none: transition counts, popularity as tie-break
    conditional_actions = True

    def _fit(self, data: SeqData) -> None:
        n = len(self.vocab)
        src = [s[:-1] for s in data.items if len(s) > 1]
        dst = [s[1:] for s in data.items if len(s) > 1]
        src = np.concatenate(src) if src else np.zeros(0, np.int64)
        dst = np.concatenate(dst) if dst else np.zeros(0, np.int64)
        self.indptr, self.indices, self.data = csr_from_pairs(src, dst, np.ones(len(src)), n)

    def _dense_scores(self, histories: list[np.ndarray]) -> np.ndarray:
        out = np.tile(self.popularity_tiebreak(), (len(histories), 1))
        for b, h in enumerate(histories):
            if len(h) == 0 or h[-1] >= len(self.indptr) - 1:
                continue
            s, e = self.indptr[h[-1]], self.indptr[h[-1] + 1]
            out[b, self.indices[s:e]] += self.data[s:e]
        return out

