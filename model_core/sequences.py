"""Per-user behaviour sequences as compact arrays.

    vocab = build_vocab(events)                 # ItemVocab, items by first appearance
    seqs = group_by_user(events, vocab)         # UserSequences

For user ``u`` (``seqs.user_ids[u]``): ``items[u]`` int32 vocabulary indices (0 = item unknown
to ``vocab``), ``actions[u]`` uint8 class ids (:func:`schemas.action_index`),
``timestamps_ms[u]`` int64 — sorted by ``(timestamp_ms, input order)``: a stable sort, so
events with the same time keep the order in which they were given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from model_core.predictor import SequenceBatch
from model_core.vocab import ItemVocab
from schemas import Event, action_index

VOCAB_ORDERS = ("first", "frequency")


def build_vocab(events: Iterable[Event], order: str = "first") -> ItemVocab:
    """Item vocabulary of ``events``.

    ``order="first"`` (default): indices by first appearance in the given order (so the same
    events give the same vocabulary). ``"frequency"``: most frequent first, ties by first
    appearance.
    """
    if order == "first":
        vocab = ItemVocab()
        for e in events:
            vocab.add(e.item_id)
        return vocab
    if order == "frequency":
        counts: dict[str, int] = {}
        for e in events:
            counts[e.item_id] = counts.get(e.item_id, 0) + 1
        # dicts keep insertion (= first appearance) order; sorted() is stable
        return ItemVocab(sorted(counts, key=lambda i: -counts[i]))
    raise ValueError(f"unknown vocabulary order {order!r}; choose one of {', '.join(VOCAB_ORDERS)}")


@dataclass(slots=True)
class UserSequences:
    user_ids: list[str]
    items: list[np.ndarray]  # int32, per user, time order
    actions: list[np.ndarray]  # uint8
    timestamps_ms: list[np.ndarray]  # int64

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def n_events(self) -> int:
        return int(sum(len(x) for x in self.items))

    def index_of(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids)}

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        return iter(zip(self.user_ids, self.items, self.actions, self.timestamps_ms, strict=True))

    def as_batch(self, rows: Sequence[int] | None = None) -> SequenceBatch:
        """The sequences (all, or ``rows``) as a model input batch (views, no copies)."""
        idx = range(len(self)) if rows is None else rows
        return SequenceBatch(items=[self.items[i] for i in idx],
                             actions=[self.actions[i] for i in idx],
                             timestamps_ms=[self.timestamps_ms[i] for i in idx])

    def select(self, keep: Sequence[np.ndarray]) -> UserSequences:
        """Per-user boolean/index masks applied to every array; users left empty are dropped."""
        out = UserSequences([], [], [], [])
        for u, m in zip(range(len(self)), keep, strict=True):
            it = self.items[u][m]
            if len(it) == 0:
                continue
            out.user_ids.append(self.user_ids[u])
            out.items.append(it)
            out.actions.append(self.actions[u][m])
            out.timestamps_ms.append(self.timestamps_ms[u][m])
        return out


def group_by_user(events: Iterable[Event], vocab: ItemVocab, key: str = "user_id",
                  keys: Sequence[str] | None = None) -> UserSequences:
    """Group events by ``key`` (``user_id``, or ``session_id`` falling back to ``user_id``),
    or by ``keys[i]`` for event ``i`` when ``keys`` is given (see :func:`session_keys`).

    Users appear in order of their first event in the input.
    """
    if key not in ("user_id", "session_id"):
        raise ValueError(f"group key must be user_id or session_id, got {key!r}")
    by: dict[str, tuple[list[int], list[int], list[int]]] = {}
    get = vocab.index
    for n, e in enumerate(events):
        if keys is not None:
            u = keys[n]
        else:
            u = e.user_id if key == "user_id" else (e.session_id or e.user_id)
        rec = by.get(u)
        if rec is None:
            rec = by[u] = ([], [], [])
        rec[0].append(get(e.item_id))
        rec[1].append(action_index(e.action))
        rec[2].append(e.timestamp_ms)
    out = UserSequences([], [], [], [])
    for u, (it, ac, ts) in by.items():
        t = np.asarray(ts, dtype=np.int64)
        order = np.argsort(t, kind="stable")
        out.user_ids.append(u)
        out.items.append(np.asarray(it, dtype=np.int32)[order])
        out.actions.append(np.asarray(ac, dtype=np.uint8)[order])
        out.timestamps_ms.append(t[order])
    return out


#: Inactivity gap that starts a new session when events carry no ``session_id``.
SESSION_GAP_MS = 30 * 60 * 1000


def session_keys(events: Sequence[Event], gap_ms: int = SESSION_GAP_MS) -> list[str]:
    """A session key per event: its ``session_id`` when set, else ``"<user_id>#<n>"`` where a
    user's n-th session starts after more than ``gap_ms`` without events (in time order)."""
    keys: list[str] = [""] * len(events)
    pending: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        if e.session_id:
            keys[i] = e.session_id
        else:
            pending.setdefault(e.user_id, []).append(i)
    for user, ix in pending.items():
        ix.sort(key=lambda i: events[i].timestamp_ms)
        n, last = 0, None
        for i in ix:
            t = events[i].timestamp_ms
            if last is not None and t - last > gap_ms:
                n += 1
            keys[i] = f"{user}#{n}"
            last = t
    return keys


def sort_events(events: Sequence[Event]) -> list[Event]:
    """Events by ``(timestamp_ms, input order)``."""
    return sorted(events, key=lambda e: e.timestamp_ms)


__all__ = ["VOCAB_ORDERS", "UserSequences", "build_vocab", "group_by_user", "session_keys",
           "sort_events", "SESSION_GAP_MS"]
