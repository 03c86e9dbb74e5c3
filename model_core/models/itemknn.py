"""Session item-kNN: items that co-occur close together in the same sequences.

Similarity of items ``i`` and ``j``: co-occurrences within ``window`` positions of each
other, divided by ``sqrt(count_i * count_j)`` (cosine over occurrences). Each item keeps its
``neighbours`` most similar items. A history is scored by summing the neighbour similarities
of its last ``recent`` items, the most recent weighted most (``1 / (1 + age)``), plus a small
popularity tie-break.

Config: ``window`` (20), ``neighbours`` (100), ``recent`` (10).
"""

from __future__ import annotations

import numpy as np

from model_core.hparams import declared
from model_core.models.data import SeqData
from model_core.models.markov import ItemTableRecommender, csr_from_pairs


class ItemKNNRecommender(ItemTableRecommender):
    name = "itemknn"
    table_name = "neighbour table"
    hparams = declared("itemknn")  # model_core.hparams.MODEL_HPARAMS
    # popularity far below any similarity: only orders items with no similarity at all
    tiebreak = 1e-6

    def __init__(self, vocab, config=None, **kw) -> None:
        config = {"window": 20, "neighbours": 100, "recent": 10, **(config or {})}
        super().__init__(vocab, config, **kw)
        n = len(vocab)
        self.indptr = np.zeros(n + 1, np.int64)
        self.indices = np.zeros(0, np.int32)
        self.data = np.zeros(0, np.float32)

    def _fit(self, data: SeqData) -> None:
        n = len(self.vocab)
        window = int(self.config["window"])
        src, dst = [], []
        for s in data.items:
            s = np.asarray(s, dtype=np.int64)
            for d in range(1, min(window, len(s) - 1) + 1):
                a, b = s[:-d], s[d:]
                keep = a != b
                src += [a[keep], b[keep]]
                dst += [b[keep], a[keep]]
        src = np.concatenate(src) if src else np.zeros(0, np.int64)
        dst = np.concatenate(dst) if dst else np.zeros(0, np.int64)
        indptr, indices, co = csr_from_pairs(src, dst, np.ones(len(src)), n)
        rows = np.repeat(np.arange(n), np.diff(indptr))
        cnt = np.maximum(self.item_counts.astype(np.float64), 1.0)
        sim = co / np.sqrt(cnt[rows] * cnt[indices])
        # keep the top `neighbours` per row: sort by (row, -sim)
        order = np.lexsort((-sim, rows))
        rows, indices, sim = rows[order], indices[order], sim[order]
        rank = np.arange(len(rows)) - indptr[rows]
        keep = rank < int(self.config["neighbours"])
        rows, self.indices, self.data = rows[keep], indices[keep], sim[keep].astype(np.float32)
        self.indptr = np.zeros(n + 1, np.int64)
        np.add.at(self.indptr, rows + 1, 1)
        self.indptr = np.cumsum(self.indptr)

    def recent(self) -> int:
        return int(self.config["recent"])

