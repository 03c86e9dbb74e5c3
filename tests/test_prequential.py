"""Per-user sequence state and the prequential (test-then-learn) engine — no Kafka."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.metrics import MISS, ranking_metrics
from model_core.predictor import SequenceBatch, TopK
from model_core.prequential import PrequentialEngine, run_prequential
from model_core.sequence_state import UserState, event_hash
from model_core.vocab import ItemVocab
from schemas import Event


class NextItemModel:
    """Predicts items last+1, last+2, ... (wrapping), next action = the last action."""

    name = "next-item"
    version = "next-item-1"

    def __init__(self, n_items: int) -> None:
        self.vocab = ItemVocab(f"i{i}" for i in range(1, n_items + 1))
        self.calls: list[int] = []

    def predict_topk(self, batch: SequenceBatch, k: int, exclude_history: bool = False) -> TopK:
        self.calls.append(len(batch))
        n = self.vocab.n_items
        last = np.array([int(r[-1]) if len(r) else 1 for r in batch.items])
        items = (last[:, None] + np.arange(1, k + 1)[None, :] - 1) % n + 1
        scores = np.tile(np.linspace(1, 0, k, dtype=np.float32), (len(batch), 1))
        probs = np.zeros((len(batch), 5), dtype=np.float32)
        for b, acts in enumerate(batch.actions):
            probs[b, int(acts[-1])] = 1.0
        return TopK(items.astype(np.int64), scores, probs)


def ev(i: int, user: str, item: int, action: str = "view", eid: str | None = None) -> Event:
    return Event(eid or f"e{i}", user, f"i{item}", action, 1_700_000_000_000 + i * 1000)


def test_state_roundtrip_and_bound():
    st = UserState()
    for i in range(60):
        st.append(i + 1, i % 5, 1_700_000_000_000 + i, event_hash(f"e{i}"), max_len=50)
    st.last_pred_items = np.arange(1, 21, dtype=np.int32)
    st.last_pred_action = 3
    raw = st.encode()
    assert len(raw) <= 1024  # issue 4: per-user state <= 1 KiB for a 50-event sequence
    back = UserState.decode(raw)
    assert len(back) == 50
    assert back.items.tolist() == list(range(11, 61))
    assert back.actions.tolist() == [i % 5 for i in range(10, 60)]
    assert back.last_pred_items.tolist() == list(range(1, 21))
    assert back.last_pred_action == 3
    assert back.position_of(event_hash("e59")) == 49
    assert back.position_of(event_hash("e5")) == -1  # fell out of the window
    assert UserState.decode(b"").items.size == 0


def test_state_decode_rejects_garbage():
    raw = UserState().encode()
    with pytest.raises(ValueError):
        UserState.decode(raw + b"x")
    with pytest.raises(ValueError):
        UserState.decode(b"\x09" + raw[1:])


def test_source_offset_is_read_from_the_header_alone():
    st = UserState(source_offset=123_456_789)
    st.append(5, 1, 1_700_000_000_000, event_hash("e"), max_len=50)
    raw = st.encode()
    assert UserState.peek_source_offset(raw) == 123_456_789 == UserState.decode(raw).source_offset
    assert UserState.peek_source_offset(_v1_state(["e0"], [1])) == 7  # version 1 too
    with pytest.raises(ValueError):
        UserState.peek_source_offset(raw[:10])
    with pytest.raises(ValueError):
        UserState.peek_source_offset(b"\x09" + raw[1:])


def test_scores_against_previous_prediction():
    model = NextItemModel(100)
    engine = PrequentialEngine(model, max_len=50, k=5)
    states: dict = {}
    # u1: 1 -> 2 (rank 1 of [2..6]) -> 4 (rank 2 of [3..7]) -> 50 (miss)
    res = engine.process([ev(0, "u1", 1), ev(1, "u1", 2, "click"), ev(2, "u1", 4),
                          ev(3, "u1", 50, "cart")], states)
    assert [s.rank for s in res.scores] == [1, 2, MISS]
    # next action predicted = previous action: view->click wrong, click->view wrong, view->cart
    assert [(s.action_true, s.action_pred) for s in res.scores] == [(1, 0), (0, 1), (2, 0)]
    assert states["u1"].items.tolist() == [1, 2, 4, 50]
    # a later batch is scored against the stored prediction ([51..55])
    res2 = engine.process([ev(4, "u1", 53)], states)
    assert [s.rank for s in res2.scores] == [3]


def test_unknown_item_is_a_miss_and_kept_as_zero():
    model = NextItemModel(10)
    states: dict = {}
    res = PrequentialEngine(model, k=5).process(
        [ev(0, "u", 1), Event("e1", "u", "never-seen", "view", 1_700_000_001_000)], states)
    assert [s.rank for s in res.scores] == [MISS]
    assert states["u"].items.tolist() == [1, 0]


def test_redelivered_event_not_appended_nor_scored():
    model = NextItemModel(100)
    engine = PrequentialEngine(model, k=5)
    states: dict = {}
    first = [ev(0, "u", 1), ev(1, "u", 2), ev(2, "u", 3)]
    engine.process(first, states)
    before = states["u"].encode()
    res = engine.process([first[1]], states)  # redelivery after a crash
    assert res.duplicates == [0] and res.scores == []
    assert states["u"].encode() == before
    # the redelivered event's prediction is the one made from the sequence as it stood then
    assert res.topk.items[0].tolist() == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("batch_size", [1, 3, 17, 10_000])
def test_figures_do_not_depend_on_batching(batch_size):
    rng = np.random.default_rng(0)
    events = []
    for i in range(400):
        user = f"u{rng.integers(0, 12)}"
        events.append(ev(i, user, int(rng.integers(1, 30)),
                         ["view", "click", "cart"][int(rng.integers(0, 3))]))
    ref = run_prequential(NextItemModel(30), events, k=10, ks=(1, 5, 10), batch_size=1)
    got = run_prequential(NextItemModel(30), events, k=10, ks=(1, 5, 10), batch_size=batch_size)
    assert got.ranks == ref.ranks
    assert got.metrics() == pytest.approx(ranking_metrics(np.array(ref.ranks), (1, 5, 10)))
    assert (got.action_confusion == ref.action_confusion).all()
    assert got.n_scored == 400 - len({e.user_id for e in events})


def _crc32_collision() -> tuple[str, str]:
    """Two different ids with the same crc32. crc32 is affine over GF(2) for messages of one
    length: ids of 64 letters, each 'a' or 'c' (one bit apart), map bit vectors x to
    crc32 = c0 ^ L(x); 64 vectors in a 32-bit space are linearly dependent, and a dependent
    set XORed into the all-'a' id gives a second id with the same crc32."""
    import zlib

    def word(mask: int) -> str:
        return "".join("c" if mask >> i & 1 else "a" for i in range(64))

    c0 = zlib.crc32(word(0).encode())
    basis: dict[int, tuple[int, int]] = {}
    for j in range(64):
        v, combo = zlib.crc32(word(1 << j).encode()) ^ c0, 1 << j
        while v:
            top = v.bit_length() - 1
            if top not in basis:
                basis[top] = (v, combo)
                break
            v, combo = v ^ basis[top][0], combo ^ basis[top][1]
        else:
            return word(0), word(combo)
    raise AssertionError("64 vectors in 32 dimensions are dependent")


def test_crc32_collision_is_not_a_duplicate():
    import zlib

    a, b = _crc32_collision()
    assert a != b and zlib.crc32(a.encode()) == zlib.crc32(b.encode())
    assert event_hash(a) != event_hash(b)
    engine = PrequentialEngine(NextItemModel(100), max_len=50, k=5)
    states: dict = {}
    engine.process([ev(0, "u1", 1, eid=a)], states)
    res = engine.process([ev(1, "u1", 2, eid=b)], states)  # a later batch: read from state
    assert res.duplicates == [] and len(res.scores) == 1
    back = UserState.decode(states["u1"].encode())
    assert back.items.tolist() == [1, 2]
    res = engine.process([ev(2, "u1", 3, eid=a), ev(3, "u1", 4, eid=b)], states)
    assert res.duplicates == [0, 1]  # true redeliveries are still recognised


def _v1_state(ids: list[str], items: list[int]) -> bytes:
    """A user state as format version 1 wrote it (uint32 crc32 id hashes)."""
    import struct
    import zlib

    n = len(ids)
    last = np.arange(1, 6, dtype="<i4")
    head = struct.pack("<BBHHbxqi4x", 1, 0, n, len(last), 0, 7, 0)
    ts = 1_700_000_000_000 + np.arange(n, dtype="<i8") * 1000
    return b"".join((head, np.asarray(items, dtype="<i4").tobytes(),
                     np.zeros(n, dtype="u1").tobytes(), ts.tobytes(),
                     np.asarray([zlib.crc32(i.encode()) for i in ids], dtype="<u4").tobytes(),
                     last.tobytes()))


def test_version1_state_upgrades_on_read():
    raw = _v1_state(["e0", "e1", "e2"], [1, 2, 3])
    st = UserState.decode(raw)
    assert st.items.tolist() == [1, 2, 3] and st.legacy and st.source_offset == 7
    assert st.timestamps_ms.tolist() == [1_700_000_000_000 + i * 1000 for i in range(3)]
    assert st.position_of_id("e1") == 1 and st.position_of_id("e9") == -1
    engine = PrequentialEngine(NextItemModel(100), max_len=4, k=5)
    states = {"u1": st}
    # e2 was recorded before the upgrade: still a redelivery; e3 is new
    res = engine.process([ev(2, "u1", 3, eid="e2"), ev(3, "u1", 4, eid="e3")], states)
    assert res.duplicates == [0]
    up = states["u1"].encode()
    assert up[0] == 2  # written back in the current format
    back = UserState.decode(up)
    assert back.items.tolist() == [1, 2, 3, 4] and back.legacy
    assert back.position_of_id("e0") == 0 and back.position_of_id("e3") == 3
    # once the upgraded hashes slide out of the window the state is no longer flagged
    engine.process([ev(4 + i, "u1", 5 + i, eid=f"n{i}") for i in range(4)], states)
    assert not UserState.decode(states["u1"].encode()).legacy


def test_state_times_far_apart_roundtrip():
    st = UserState()
    times = [0, 2**40, 5, -(2**35)]
    for i, t in enumerate(times):
        st.append(i + 1, 0, t, event_hash(f"e{i}"), max_len=50)
    assert UserState.decode(st.encode()).timestamps_ms.tolist() == times
