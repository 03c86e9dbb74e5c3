"""Item vocabulary: external item id (string) <-> dense index.

Index 0 is reserved: it stands for padding and for any item the vocabulary does not know.
Models never score index 0, and sequence inputs drop 0 entries, so an unknown item at
prediction time is simply not part of the model input (never a crash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson

UNKNOWN = 0


class ItemVocab:
    def __init__(self, item_ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = ["<unk>"]
        self._index: dict[str, int] = {}
        for i in item_ids:
            self.add(i)

    def add(self, item_id: str) -> int:
        idx = self._index.get(item_id)
        if idx is None:
            idx = len(self._ids)
            self._ids.append(item_id)
            self._index[item_id] = idx
        return idx

    def reassign(self, index: int, item_id: str) -> None:
        """Give slot ``index`` (1..n_items) to the new ``item_id``; its previous item becomes
        unknown. The online learner's eviction (:mod:`model_core.learn.items`) bounds the
        item table this way without renumbering the other items."""
        if not 0 < index < len(self._ids):
            raise IndexError(f"vocabulary slot {index} out of range 1..{self.n_items}")
        if item_id in self._index:
            raise ValueError(f"item {item_id!r} already has slot {self._index[item_id]}")
        del self._index[self._ids[index]]
        self._ids[index] = item_id
        self._index[item_id] = index

    def index(self, item_id: str) -> int:
        """Dense index of ``item_id``; :data:`UNKNOWN` (0) when absent."""
        return self._index.get(item_id, UNKNOWN)

    def indices(self, item_ids: Iterable[str]) -> np.ndarray:
        get = self._index.get
        return np.fromiter((get(i, UNKNOWN) for i in item_ids), dtype=np.int32)

    def item_id(self, index: int) -> str:
        return self._ids[index]

    def item_ids(self, indices: Iterable[int]) -> list[str]:
        ids = self._ids
        return [ids[i] for i in indices]

    def __len__(self) -> int:
        """Number of slots including the reserved index 0 (= ``n_items + 1``)."""
        return len(self._ids)

    @property
    def n_items(self) -> int:
        return len(self._ids) - 1

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._index

    def fingerprint(self) -> str:
        """Short hash identifying this exact id -> index mapping."""
        h = hashlib.sha256()
        for i in self._ids[1:]:
            h.update(i.encode())
            h.update(b"\0")
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(orjson.dumps(self._ids[1:]))

    @classmethod
    def load(cls, path: str | Path) -> ItemVocab:
        ids = orjson.loads(Path(path).read_bytes())
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{path}: vocabulary must be a JSON list of strings")
        return cls(ids)
