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
    ``indptr`` / ``indices`` / ``data``), saved and loaded as such.

    Its score: popularity scaled by :attr:`tiebreak`, plus the table rows of the history's
    last :meth:`recent` items, each weighted ``1 / (1 + age)`` (newest: age 0) — over the
    catalogue (:meth:`_dense_scores`) or at a few candidates (:meth:`score_candidates`),
    the same float32 sums in the same order."""

    table_name = "item table"
    tiebreak = 1.0  # popularity's weight

    def recent(self) -> int:
        """How many of the history's last items score."""
        return 1

    def _rows(self, history: np.ndarray):
        """(start, end, weight divisor) of the table rows that score after ``history``."""
        n_rows = len(self.indptr) - 1
        for age, item in enumerate(history[::-1][:self.recent()]):
            if item < n_rows:
                yield self.indptr[item], self.indptr[item + 1], 1.0 + age

    def _dense_scores(self, histories: list[np.ndarray]) -> np.ndarray:
        out = np.tile(self.popularity_tiebreak() * self.tiebreak, (len(histories), 1))
        for b, h in enumerate(histories):
            for lo, hi, div in self._rows(h):
                out[b, self.indices[lo:hi]] += self.data[lo:hi] / div
        return out

    def score_candidates(self, batch, candidates) -> list[np.ndarray]:
        base = self.popularity_tiebreak() * self.tiebreak
        out = []
        for h, c in zip(self.histories(batch), candidates, strict=True):
            c = np.asarray(c, dtype=np.int64)
            s = base[c].astype(np.float32)
            for lo, hi, div in self._rows(h):
                cols = self.indices[lo:hi]
                if not len(cols):
                    continue
                order = np.argsort(cols, kind="stable")
                sorted_cols = cols[order]
                at = np.minimum(np.searchsorted(sorted_cols, c), len(cols) - 1)
                hit = sorted_cols[at] == c
                s[hit] += self.data[lo:hi][order[at[hit]]] / div
            out.append(s)
        return out

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

