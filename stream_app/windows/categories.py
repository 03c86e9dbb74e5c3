"""Each item's category, learnt by the worker from the events' ``category_id``, for the online
windows' ILD (:func:`model_core.beyond.ild_sums`).

The windows need a category per recommended item, by the model's vocabulary index; the
events carry one (``Event.category_id``, optional). :class:`ItemCategories` keeps the latest
category seen for each vocabulary item, as an integer code (-1: none seen yet).

Bounded: one code per vocabulary slot (items the model does not know are never recommended,
so their events teach nothing and are not kept), and at most ``max_categories`` distinct
category names (a category first seen past that is not learnt, counted in ``skipped``).

Rebuilt, not persisted: the table lives in the worker's memory and starts empty when the
worker starts; it learns from the events of the worker's own partitions as they are
processed (a batch's events before its lists are accounted). So after a start, ILD counts the
pairs of items whose category the worker has seen since; an item not yet seen has no
category, and pairs with it are left out (as offline for items without a category). Once each
recommended item has been seen, the figure is the offline one (:mod:`tests.test_metric_parity`
holds the exactness for a given table). Persisting it would put a catalogue-sized record in
the state changelog; the stream re-teaches it within the first events of each item.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: distinct category names learnt at most (later new names are not learnt)
MAX_CATEGORIES = 1 << 16


class ItemCategories:
    """Category codes by vocabulary index of ``vocab`` (``codes``; -1 = none)."""

    def __init__(self, vocab, max_categories: int = MAX_CATEGORIES) -> None:
        self.vocab = vocab
        self.max_categories = max_categories
        self.codes = np.full(len(vocab), -1, dtype=np.int32)
        self._code: dict[str, int] = {}
        self.skipped = 0  # events whose category was new past max_categories

    def learn(self, events: Iterable) -> None:
        """The categories of ``events`` (objects with ``item_id`` and ``category_id``); the
        latest wins. Items outside the vocabulary are skipped."""
        index = self.vocab.index
        for e in events:
            cat = e.category_id
            if cat is None:
                continue
            i = index(e.item_id)
            if i <= 0:
                continue
            code = self._code.get(cat)
            if code is None:
                if len(self._code) >= self.max_categories:
                    self.skipped += 1
                    continue
                code = self._code[cat] = len(self._code)
            if i >= len(self.codes):  # an item added to the vocabulary at run time
                grow = max(len(self.vocab), i + 1) - len(self.codes)
                self.codes = np.r_[self.codes, np.full(grow, -1, dtype=np.int32)]
            self.codes[i] = code

    def rebind(self, vocab) -> None:
        """The table in another vocabulary (a model swap): each learnt item keeps its
        category under its new index; items the new vocabulary lacks are dropped."""
        if vocab is self.vocab:
            return
        known = np.flatnonzero(self.codes >= 0)
        codes = np.full(len(vocab), -1, dtype=np.int32)
        index = vocab.index
        for i, item in zip(known.tolist(), self.vocab.item_ids(known.tolist()), strict=True):
            j = index(item)
            if 0 < j < len(codes):
                codes[j] = self.codes[i]
        self.vocab, self.codes = vocab, codes

    def __len__(self) -> int:
        """Items with a category."""
        return int((self.codes >= 0).sum())


__all__ = ["MAX_CATEGORIES", "ItemCategories"]
