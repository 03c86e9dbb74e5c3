"""Item texts for the online learner: a new item with metadata starts from its text vector.

    texts = ItemTexts(encoder)                  # any model_core.text TextEncoder
    texts.add("sku-9", "red running shoe")      # from the items topic, or a file
    learner = OnlineLearner(model, schedule, texts=texts)

A model trained with ``--text-mode text`` or ``fused`` represents an item by its projected
text vector (plus, fused, a trained ID row). When the learner gives a new item a row
(:meth:`~model_core.learn.learner.OnlineLearner.update`), an item whose text is here gets its
text vector installed and, fused, a zero ID row, so its vector *is* its text's, in the space
the model was trained in; the steps then move only the ID part. An item without a text keeps
the schedule's ``init`` (``context``): a text-mode model has no ID row, so such an item
cannot be represented until its text arrives. A text that arrives (or changes) after the item
got its row is installed at the next update, for items given a row during the stream only
(the trained items keep the vectors they were trained with; the workers' items feed refreshes
what they serve).

Texts are kept as strings and encoded only when an item needs its vector — in one batch per
update, each distinct text once (:func:`model_core.text.cache.encode_items`, with an optional
cache) — so a large items topic costs memory for its strings, not encoder time for items that
never occur.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["ItemTexts"]


class ItemTexts:
    """Item id -> metadata text, encoded on demand with ``encoder``."""

    def __init__(self, encoder, cache=None, batch_size: int = 64) -> None:
        from model_core.text.cache import TextVectorCache

        self.encoder = encoder
        self.dim = int(encoder.dim)
        self.cache = cache if cache is not None else TextVectorCache(
            None, encoder.fingerprint, encoder.dim, getattr(encoder, "name", ""))
        self.batch_size = batch_size
        self._texts: dict[str, str] = {}
        self._changed: set[str] = set()  # ids whose text arrived or changed since take_changed
        self.stats = {"texts": 0, "encoded": 0, "cached": 0, "encode_s": 0.0, "started": 0,
                      "refreshed": 0}

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._texts

    def add(self, item_id: str, text: str) -> bool:
        """Keep ``text`` for ``item_id`` (the latest wins); True when it is new or changed."""
        item_id = str(item_id)
        if self._texts.get(item_id) == text:
            return False
        self._texts[item_id] = text
        self._changed.add(item_id)
        self.stats["texts"] = len(self._texts)
        return True

    def add_many(self, pairs: Iterable[tuple[str, str]]) -> int:
        """:meth:`add` each ``(item_id, text)``; returns how many were new or changed."""
        return sum(self.add(i, t) for i, t in pairs)

    def summary(self) -> dict:
        """The counts a report shows: texts held, items started from (or given a later)
        text, texts encoded."""
        return {k: self.stats[k] for k in ("texts", "started", "refreshed", "encoded")}

    def take_changed(self) -> list[str]:
        """The ids whose text arrived or changed since the last call (then forgotten)."""
        out, self._changed = sorted(self._changed), set()
        return out

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Text vectors ``[dim]`` of those ``ids`` that have a text (one encoder batch)."""
        from model_core.text.cache import encode_items

        have = [str(i) for i in ids if str(i) in self._texts]
        if not have:
            return {}
        res = encode_items(self.encoder, [self._texts[i] for i in have], None,
                           self.batch_size, cache=self.cache)
        self.stats["encoded"] += res.n_encoded
        self.stats["cached"] += res.n_cached
        self.stats["encode_s"] += res.seconds
        return dict(zip(have, np.asarray(res.vectors, np.float32), strict=True))
