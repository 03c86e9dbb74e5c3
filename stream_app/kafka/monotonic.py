"""Changelog records applied in input order, whatever order they arrived in.

Every value the worker writes to the ``user-state`` changelog carries the highest input
offset it reflects: a user's state its ``source_offset`` (a user's events all come from one
input partition, in offset order), a partition's window record its ``applied_offset``. A
record that reflects *less* input than the value already held is stale: a worker that froze
with records in its producer's buffer sends them when it resumes, after the partition's new
owner wrote newer ones (:mod:`stream_app.kafka.fencing` stops such a worker from writing anything
after the stall, but not what was already handed to the producer; only Kafka transactions
would). Applied blindly — table recovery, standby replicas, the chaos audit — the stale
record would win and the user would lose events.

:func:`install` makes a Faust table skip such records when it applies its changelog
(recovery and standbys); :func:`latest_values` applies the same rule to a list of records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import orjson

from model_core.sequence_state import UserState
from stream_app.windows.persistence import is_window_key

log = logging.getLogger("seqstream.changelog")


def record_version(key: bytes | None, value: bytes | None) -> int | None:
    """The highest input offset ``value`` reflects, or None when it cannot be read."""
    if key is None or not value:
        return None
    try:
        if is_window_key(key):
            v = orjson.loads(value).get("applied_offset")
            return int(v) if v is not None else None
        return UserState.peek_source_offset(value)
    except Exception:  # noqa: BLE001 - an unreadable record is applied as it is
        return None


def keep_newest(records: Iterable, current: Callable[[bytes], bytes | None],
                key_of=lambda r: r.key, value_of=lambda r: r.value) -> tuple[list, int]:
    """The records of ``records`` (in order) that do not go back in input offset against
    the value held for their key (``current(key)``, then the records kept before them);
    tombstones are always kept. Returns (kept, number skipped)."""
    held: dict[bytes, int | None] = {}
    kept, skipped = [], 0
    for r in records:
        key, value = key_of(r), value_of(r)
        if value is None:
            kept.append(r)
            held[key] = None
            continue
        version = record_version(key, value)
        if version is None:
            kept.append(r)
            continue
        if key not in held:
            held[key] = record_version(key, current(key))
        prev = held[key]
        if prev is not None and version < prev:
            skipped += 1
            continue
        kept.append(r)
        held[key] = version
    return kept, skipped


def latest_values(records: Iterable, key_of=lambda r: r.key,
                  value_of=lambda r: r.value) -> dict[bytes, bytes]:
    """Last value per key of ``records`` (a changelog read from the start), stale records
    skipped as a table applies them."""
    out: dict[bytes, bytes] = {}
    kept, _ = keep_newest(records, out.get, key_of, value_of)
    for r in kept:
        k, v = key_of(r), value_of(r)
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def install(table, on_applied: Callable[[list], None] | None = None) -> None:
    """Make ``table`` (a Faust table of raw bytes) skip stale changelog records;
    ``on_applied`` gets each batch of records applied (Faust changelog events)."""
    apply = table.apply_changelog_batch
    store = table.data

    def current(key: bytes) -> bytes | None:
        try:
            return store.get(key)
        except Exception:  # noqa: BLE001 - a store that cannot answer: apply as Faust does
            return None

    def apply_changelog_batch(batch) -> None:
        batch = list(batch)
        kept, skipped = keep_newest(batch, current)
        if skipped:  # a replay of records applied before, or late ones of a stalled worker
            log.info("%d changelog records older than the values held were skipped", skipped)
        apply(kept)
        if on_applied is not None:
            on_applied(kept)

    table.apply_changelog_batch = apply_changelog_batch
