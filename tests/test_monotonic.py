"""Changelog values are applied in input order: a value that reflects less input than the
one held (a late record of a worker that had stalled) never replaces it."""

from __future__ import annotations

from types import SimpleNamespace

from model_core.sequence_state import UserState, event_hash
from stream_app.kafka.monotonic import keep_newest, latest_values, record_version
from stream_app.windows.persistence import window_key


def _state(offset: int, n: int) -> bytes:
    st = UserState()
    for i in range(n):
        st.append(i + 1, 0, 1_700_000_000_000 + 1000 * i, event_hash(f"e{i}"), 50)
    st.source_offset = offset
    assert UserState.decode(st.encode()).source_offset == offset
    return st.encode()


def _rec(key: bytes, value: bytes | None):
    return SimpleNamespace(key=key, value=value)


def test_a_late_older_state_does_not_replace_a_newer_one():
    new, old = _state(150, 30), _state(100, 20)
    log = [_rec(b"u1", _state(90, 10)), _rec(b"u1", new), _rec(b"u1", old)]  # old arrives last
    assert latest_values(log)[b"u1"] == new
    kept, skipped = keep_newest(log, lambda k: None)
    assert skipped == 1 and [r.value for r in kept] == [log[0].value, new]


def test_held_value_counts_and_equal_offsets_and_tombstones_apply():
    held = {b"u1": _state(200, 40)}
    kept, skipped = keep_newest([_rec(b"u1", _state(150, 30))], held.get)
    assert skipped == 1 and not kept  # recovery replaying a record older than the store's
    same = _state(200, 40)
    kept, skipped = keep_newest([_rec(b"u1", same)], held.get)
    assert skipped == 0 and kept  # a rewrite of the same point (a redelivered batch)
    log = [_rec(b"u1", _state(150, 30)), _rec(b"u1", None), _rec(b"u1", _state(5, 1))]
    assert latest_values(log)[b"u1"] == log[2].value  # after a tombstone anything applies


def test_window_records_are_ordered_by_applied_offset():
    k = window_key(3)
    a = b'{"format": 3, "applied_offset": 500, "aggregator": {}}'
    b = b'{"format": 3, "applied_offset": 400, "aggregator": {}}'
    assert record_version(k, a) == 500
    assert latest_values([_rec(k, a), _rec(k, b)])[k] == a
    assert record_version(b"u1", b"not a state") is None  # unreadable: applied as it is
