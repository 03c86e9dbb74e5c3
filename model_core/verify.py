"""A trial batch for a loaded model, before it serves: shapes, index ranges, finite values.

A checkpoint can load and still fail on its first batch (weights that do not fit the
vocabulary, NaN parameters, a scorer that indexes past its tables). The worker runs
:func:`verify_model` on the model it starts with and on every model it is asked to swap
to; a model that fails is never served (at start: the worker refuses to start; on a swap:
the old model stays, with an alert).
"""

from __future__ import annotations

import numpy as np

from model_core.exceptions import CheckpointError
from model_core.predictor import SequenceBatch


def trial_batch(n_items: int, seed: int = 0) -> SequenceBatch:
    """Sequences over the whole index range: the first and last item, short and long ones,
    one with every action class."""
    rng = np.random.default_rng(seed)
    hi = max(1, n_items)
    seqs = [np.array([1], dtype=np.int64), np.array([hi], dtype=np.int64),
            rng.integers(1, hi + 1, size=5), rng.integers(1, hi + 1, size=50),
            np.array([hi, 1, hi], dtype=np.int64)]
    actions = [np.arange(len(s), dtype=np.uint8) % 5 for s in seqs]
    stamps = [1_700_000_000_000 + 1000 * np.arange(len(s), dtype=np.int64) for s in seqs]
    return SequenceBatch(items=seqs, actions=actions, timestamps_ms=stamps)


def verify_model(model, k: int = 20, where: str = "") -> None:
    """Run a trial batch through ``model``; raise :class:`CheckpointError` naming what is
    wrong. ``where`` names the checkpoint in the message."""
    at = f" ({where})" if where else ""
    n = model.vocab.n_items
    if n < 1:
        raise CheckpointError(f"model {model.version}{at} has an empty vocabulary")
    batch = trial_batch(n)
    try:
        top = model.predict_topk(batch, k)
    except Exception as e:  # noqa: BLE001 - any failure of the trial is the model's
        raise CheckpointError(f"model {model.version}{at} failed its trial batch: {e!r}"
                              ) from e
    items, scores = np.asarray(top.items), np.asarray(top.scores)
    if items.ndim != 2 or items.shape[0] != len(batch) or items.shape != scores.shape:
        raise CheckpointError(f"model {model.version}{at}: trial top-k has shape "
                              f"{items.shape} / {scores.shape}, expected ({len(batch)}, <= {k})")
    if items.size and (items.min() < 0 or items.max() > n):
        raise CheckpointError(f"model {model.version}{at}: trial top-k holds item index "
                              f"{int(items.max())} outside the vocabulary (1..{n})")
    if not np.isfinite(scores).all():
        raise CheckpointError(f"model {model.version}{at}: trial scores are not finite "
                              "(NaN or infinite weights?)")
    probs = top.action_probs
    if probs is not None:
        probs = np.asarray(probs)
        if not np.isfinite(probs).all() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            raise CheckpointError(f"model {model.version}{at}: trial next-action "
                                  "probabilities are not finite or do not sum to 1")
