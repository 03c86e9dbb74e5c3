"""Does evaluating a checkpoint on a split test it on events it was trained on?

``seqstream train`` records its split in the checkpoint's ``meta.json`` (``split.protocol``,
``split.info`` with the time cut ``cut_ts`` for ``temporal`` and ``session``, and
``data.sha256_16``, the hash of the training file). :func:`training_overlap` compares that
with the split an evaluation is about to use, on the same file, and names the conflict:

- a different protocol (``prequential`` counts as ``temporal``: it streams the events after
  the same kind of time cut): leave-one-out trains on events after any time cut, and a time
  cut trains on some users' last events, which leave-one-out tests;
- the same time-cut protocol with an earlier cut: the events between the two cuts are in
  both the training part and the test part;
- the session protocol with another separate test file.

Only the same file (same hash) can be checked; for another file it says nothing. A checkpoint
without a recorded split (``seqstream demo``'s) is not checked either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_TIME_CUT = {"temporal": "temporal", "prequential": "temporal", "session": "session"}


def recorded_protocol(spec: str) -> str | None:
    """The protocol a checkpoint directory was trained with, or None (no checkpoint, none kept)."""
    from model_core.checkpoint import read_meta

    if not Path(spec).is_dir():
        return None
    try:
        split = read_meta(spec).get("split") or {}
    except Exception:  # an unreadable meta.json is load_model's to report, with its reason
        return None
    p = split.get("protocol")
    return p if isinstance(p, str) else None


def training_overlap(meta: dict[str, Any], protocol: str, info: dict[str, Any],
                     data_sha: str | None, test_file: str | None = None) -> str | None:
    """Why evaluating a model with training metadata ``meta`` on this split would test it on
    its own training events, or None when it would not (or cannot be told)."""
    split = meta.get("split") or {}
    data = meta.get("data") or {}
    trained = split.get("protocol")
    if not trained or not data_sha or data.get("sha256_16") != data_sha:
        return None
    t_info = split.get("info") or {}
    kind_t, kind_e = _TIME_CUT.get(trained, trained), _TIME_CUT.get(protocol, protocol)
    if kind_t != kind_e:
        return (f"the checkpoint was trained on the {trained} split of this file; the test part "
                f"of the {protocol} split holds events it was trained on. Evaluate with "
                f"--protocol {trained}, or train with --protocol {protocol}")
    if kind_e == "session" and (data.get("test_file") or None) != (test_file or None):
        return (f"the checkpoint was trained with the session protocol and test file "
                f"{data.get('test_file')!r}; this evaluation uses {test_file!r}")
    cut_t, cut_e = t_info.get("cut_ts"), info.get("cut_ts")
    if isinstance(cut_t, (int, float)) and isinstance(cut_e, (int, float)) and cut_e < cut_t:
        return (f"the checkpoint was trained on events before {int(cut_t)} ms; this split tests "
                f"from {int(cut_e)} ms, so the events in between are in both parts. Use the "
                "training --quantile (0.8 by default)")
    return None


__all__ = ["recorded_protocol", "training_overlap"]
