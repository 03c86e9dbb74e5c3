"""The contract between trained models and their users (offline evaluation, the stream).

Every recommender — baselines and neural sequence models — is used through
:class:`Recommender`: give it a :class:`SequenceBatch` (one row per user history, oldest
event first), get back top-K items, scores and next-action probabilities (:class:`TopK`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from model_core.vocab import ItemVocab


@dataclass(slots=True)
class SequenceBatch:
    """B user histories. Row b: ``items[b]`` int32 vocabulary indices, oldest first.

    Index 0 (unknown item) entries are dropped by the models before they build inputs.
    ``actions[b]`` (uint8 class ids of :data:`schemas.ACTIONS`) and ``timestamps_ms[b]``
    (int64) are aligned with ``items[b]`` when given; models with side features need them.
    """

    items: list[np.ndarray]
    actions: list[np.ndarray] | None = None
    timestamps_ms: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, start: int, end: int) -> SequenceBatch:
        """Rows ``[start, end)`` as a batch (this batch itself when that is all of it)."""
        if start == 0 and end == len(self.items):
            return self
        return SequenceBatch(
            items=self.items[start:end],
            actions=self.actions[start:end] if self.actions is not None else None,
            timestamps_ms=(self.timestamps_ms[start:end] if self.timestamps_ms is not None
                           else None),
        )


@dataclass(slots=True)
class TopK:
    items: np.ndarray  # [B, K] int64 vocabulary indices, best first, never 0
    scores: np.ndarray  # [B, K] float32
    action_probs: np.ndarray | None = None  # [B, N_ACTIONS] float32, rows sum to 1


@runtime_checkable
class Recommender(Protocol):
    name: str  # e.g. "popular", "markov", "gru4rec", "sasrec"
    vocab: ItemVocab
    version: str  # model_version published with predictions

    def score(self, batch: SequenceBatch) -> np.ndarray:
        """[B, len(vocab)] float32 scores over the catalogue; column 0 is ``-inf``."""
        ...

    def predict_topk(self, batch: SequenceBatch, k: int,
                     exclude_history: bool = False) -> TopK: ...

