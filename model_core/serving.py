"""Answering requests from a user's live sequence: top-K, candidate re-ranking, cold start.

Kafka-free maths behind seqstream's serving endpoints (``stream_app/serve``):

- :func:`recommend` — one batched top-K call for many users' sequences (the same
  :meth:`~model_core.predictor.Recommender.predict_topk` the stream's predictions come from,
  so a user's answer equals the prediction published after their last event).
- :func:`candidate_scores` — the model's score of each request's candidates, by the model's
  ``score_candidates`` (``model_core.models.base``): for those items only where the model
  can (a neural model's sequence representation once per row dotted with the candidates'
  item rows, plus GRU4Rec's output bias or SASRec's transition term; popularity, Markov
  and item-kNN read their counts and tables at the candidates), else its full-catalogue
  scores gathered (session-kNN).
  Equal to the model's :meth:`~model_core.predictor.Recommender.score` at those items
  (float32 rounding aside, a test checks it).
- :func:`blend` — the candidates' order: the model's scores blended with the caller's own
  retrieval scores by rank percentile (scale-free: a BM25 score and a dot product mix
  without calibration); an item the model does not know keeps the caller's score alone.
- :class:`PopularItems` — the cold-start answer: item counts of the events a worker has
  processed, halved every ``half_life_events`` events (recent popularity), seeded from a
  counting model's training counts when the model has them.

Every function takes arrays and returns arrays: the tests check the maths directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model_core.predictor import Recommender, SequenceBatch, TopK


@dataclass(slots=True)
class UserSequence:
    """One user's live sequence as the stream holds it (oldest first; empty: unknown user)."""

    items: np.ndarray  # int32 vocabulary indices
    actions: np.ndarray  # uint8 action classes
    timestamps_ms: np.ndarray  # int64 event times

    def __len__(self) -> int:
        return len(self.items)


def _batch(rows: Sequence[UserSequence]) -> SequenceBatch:
    return SequenceBatch([r.items for r in rows], [r.actions for r in rows],
                         [r.timestamps_ms for r in rows])


def recommend(model: Recommender, rows: Sequence[UserSequence], k: int,
              exclude_seen: bool) -> TopK:
    """Top-``k`` for each row in one batched model call (rows must be non-empty sequences).

    With ``exclude_seen`` a row's own items are left out; a row may then hold fewer than
    ``k`` items with a finite score (:func:`finite_prefix` trims the rest)."""
    return model.predict_topk(_batch(rows), k, exclude_history=exclude_seen)


def finite_prefix(items: np.ndarray, scores: np.ndarray) -> int:
    """How many leading entries of one top-K row are real items (finite score, index > 0)."""
    ok = np.isfinite(scores) & (items > 0)
    return int(len(ok) if ok.all() else np.argmin(ok))


def candidate_scores(model: Recommender, rows: Sequence[UserSequence],
                     candidates: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The model's score of each request's candidates (vocabulary indices; 0 = unknown item),
    float64, NaN where the item is unknown. One batched call: the model's own
    ``score_candidates`` (the candidates only where the model can: a neural sequence vector
    dotted with their item rows, a counting model's tables read at them), or, for a
    recommender without one, its full-catalogue scores gathered."""
    if not rows:
        return []
    cands = [np.asarray(c, dtype=np.int64) for c in candidates]
    width = len(model.vocab)
    known = [(c > 0) & (c < width) for c in cands]
    # unknown items are asked as index 0 (always a valid row) and set to NaN after
    safe = [np.where(k, c, 0) for c, k in zip(cands, known, strict=True)]
    batch = _batch(rows)
    scorer = getattr(model, "score_candidates", None)
    if scorer is not None:
        raw = scorer(batch, safe)
    else:
        full = model.score(batch)
        raw = [full[r, c] for r, c in enumerate(safe)]
    out = []
    for s, k in zip(raw, known, strict=True):
        s = np.asarray(s, dtype=np.float64).copy()
        s[~k | ~np.isfinite(s)] = np.nan  # -inf: an item the model cannot score
        out.append(s)
    return out


def percentile_ranks(x: np.ndarray) -> np.ndarray:
    """Each value's rank among ``x`` scaled to 0..1 (the smallest 0, the largest 1; equal
    values share their average rank; a single value is 1)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.ones(1)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n, dtype=np.float64)
    # ties: the mean rank of each group of equal values
    uniq, inverse = np.unique(x, return_inverse=True)
    if len(uniq) < n:
        sums = np.bincount(inverse, weights=ranks)
        counts = np.bincount(inverse)
        ranks = (sums / counts)[inverse]
    return ranks / (n - 1)


def default_alpha(has_caller_scores: bool) -> float:
    """The model's weight when a request names none: all of it without caller scores, half
    with them."""
    return 0.5 if has_caller_scores else 1.0


def blend(model_scores: np.ndarray, caller_scores: np.ndarray | None,
          alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(order, blended): candidate positions best first, and each candidate's blended score.

    ``model_scores``: one per candidate, NaN for an item the model does not know.
    ``caller_scores``: the caller's retrieval scores (higher is better); None: the input order
    stands in (the first candidate best). Both are turned into rank percentiles (0..1): the
    model's among the known items, the caller's among all. A known item scores
    ``alpha * model + (1 - alpha) * caller``; an unknown item its caller percentile alone, so
    it stays where the caller's order puts it. Equal blended scores keep the input order.
    """
    m = np.asarray(model_scores, dtype=np.float64)
    n = len(m)
    if caller_scores is None:
        c = np.arange(n, 0, -1, dtype=np.float64)  # first = best
    else:
        c = np.asarray(caller_scores, dtype=np.float64)
        if len(c) != n:
            raise ValueError(f"{len(c)} caller scores for {n} candidates")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    cp = percentile_ranks(c)
    known = ~np.isnan(m)
    blended = cp.copy()
    if known.any():
        mp = percentile_ranks(m[known])
        blended[known] = alpha * mp + (1.0 - alpha) * cp[known]
    order = np.argsort(-blended, kind="stable")
    return order, blended


class PopularItems:
    """Recent item popularity: counts of processed events, halved every ``half_life_events``.

    ``seed``: starting counts per vocabulary index (a counting model's training counts).
    Index 0 (unknown item) is never counted. The array grows with the vocabulary (items
    added at run time)."""

    def __init__(self, n_slots: int, half_life_events: int = 100_000,
                 seed: np.ndarray | None = None) -> None:
        if half_life_events < 1:
            raise ValueError("half_life_events must be at least 1")
        self.counts = np.zeros(max(1, n_slots), dtype=np.float64)
        if seed is not None:
            seed = np.asarray(seed, dtype=np.float64)[: len(self.counts)]
            self.counts[: len(seed)] = np.where(np.isfinite(seed) & (seed > 0), seed, 0.0)
        self.counts[0] = 0.0
        self.half_life_events = half_life_events
        self._since_halving = 0

    def add(self, indices: np.ndarray) -> None:
        """Count one event for each vocabulary index in ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        idx = idx[idx > 0]
        if not len(idx):
            return
        top = int(idx.max())
        if top >= len(self.counts):
            self.counts = np.concatenate([self.counts,
                                          np.zeros(top + 1 - len(self.counts))])
        self.counts += np.bincount(idx, minlength=len(self.counts))
        self._since_halving += len(idx)
        while self._since_halving >= self.half_life_events:
            self.counts *= 0.5
            self._since_halving -= self.half_life_events

    def top(self, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(indices, counts): up to ``k`` counted items, most popular first (equal counts:
        lower index first), without ``exclude``."""
        c = self.counts.copy()
        if exclude is not None and len(exclude):
            ex = np.asarray(exclude, dtype=np.int64)
            c[ex[(ex > 0) & (ex < len(c))]] = 0.0
        n = int(np.count_nonzero(c > 0))
        k = min(k, n)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0)
        order = np.lexsort((np.arange(len(c)), -c))[:k]
        return order.astype(np.int64), c[order]

    def scores_of(self, indices: np.ndarray) -> np.ndarray:
        """Each index's count: 0 for an item never counted, NaN for index 0 (an item the
        vocabulary does not know)."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.where(idx > 0, 0.0, np.nan)
        ok = (idx > 0) & (idx < len(self.counts))
        out[ok] = self.counts[idx[ok]]
        return out


__all__ = ["PopularItems", "UserSequence", "blend", "candidate_scores",
           "default_alpha", "finite_prefix", "percentile_ranks", "recommend"]
