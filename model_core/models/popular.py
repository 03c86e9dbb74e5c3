"""Most-popular: every user gets the items seen most often in training."""

from __future__ import annotations

import numpy as np

from model_core.hparams import declared
from model_core.models.base import CountingRecommender


class PopularRecommender(CountingRecommender):
    name = "popular"
    hparams = declared("popular")  # none

    def _dense_scores(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.item_counts, (len(histories), len(self.item_counts))).copy()

    def score_candidates(self, batch, candidates) -> list[np.ndarray]:
        return [self.item_counts[np.asarray(c, dtype=np.int64)] for c in candidates]
