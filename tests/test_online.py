"""Event-time windows of online metrics (pure: no Kafka, no wall clock)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from model_core.metrics import MISS, ranking_metrics
from model_core.predictor import TopK
from model_core.prequential import BatchResult, Score
from schemas import Event, MetricsWindow
from stream_app.windows.aggregation import WindowAggregator, aggregate_windows, merge_windows

T0 = 1_704_067_200_000  # a multiple of 60 s and of 300 s


def ev(i: int, ts: int, user: str = "u1", action: str = "view") -> Event:
    return Event(event_id=f"e{i}", user_id=user, item_id=f"i{i}", action=action,
                 timestamp_ms=ts)


def batch(events, ranks=None, items=None, dups=(), actions=None):
    """A BatchResult: ``ranks[i]`` (None = not scored) for event i."""
    n = len(events)
    top = np.asarray(items if items is not None else [[1, 2, 3]] * n, dtype=np.int64)
    scores = []
    for i, r in enumerate(ranks if ranks is not None else [None] * n):
        if r is not None:
            at, ap = actions[i] if actions else (0, -1)
            scores.append(Score(i, r, at, ap))
    return BatchResult(TopK(top, np.zeros(top.shape, np.float32)), scores, list(dups), {})


def feed(agg, events, ranks=None, wall_ms=1000, lat=5.0, **kw):
    agg.add_batch(events, batch(events, ranks, **kw), [lat] * len(events), wall_ms)


# --------------------------------------------------------------------------- assignment
@pytest.mark.parametrize("offset_ms, start", [
    (0, T0), (59_999, T0), (60_000, T0 + 60_000), (125_000, T0 + 120_000),
])
def test_tumbling_assignment(offset_ms, start):
    agg = WindowAggregator(window_s=60, allowed_lateness_s=0)
    feed(agg, [ev(0, T0 + offset_ms)], [1])
    (w,) = agg.flush(0)
    assert (w.window_start_ms, w.window_end_ms, w.window_kind) == (start, start + 60_000,
                                                                   "tumbling")
    assert w.events == 1 and w.scored == 1


@pytest.mark.parametrize("offset_s, starts", [
    (0, [0, -60, -120, -180, -240]),
    (61, [60, 0, -60, -120, -180]),
    (299, [240, 180, 120, 60, 0]),
])
def test_hopping_assignment(offset_s, starts):
    agg = WindowAggregator(window_s=60, hop_s=60, hop_window_s=300, allowed_lateness_s=0)
    feed(agg, [ev(0, T0 + offset_s * 1000)], [2])
    out = agg.flush(0)
    hop = sorted((w.window_start_ms - T0) // 1000 for w in out if w.window_kind == "hopping")
    assert hop == sorted(starts)
    for w in out:
        if w.window_kind == "hopping":
            assert w.window_end_ms - w.window_start_ms == 300_000
        assert w.events == 1


def test_hopping_windows_overlap_and_sum():
    agg = WindowAggregator(window_s=60, hop_s=60, hop_window_s=120, allowed_lateness_s=0)
    events = [ev(i, T0 + i * 30_000, user=f"u{i % 3}") for i in range(8)]  # 4 minutes
    feed(agg, events, [1] * 8)
    out = agg.flush(0)
    hop = {w.window_start_ms - T0: w for w in out if w.window_kind == "hopping"}
    # each hopping window of 120 s holds 4 events (30 s apart), edges excepted
    assert hop[0].events == 4 and hop[60_000].events == 4 and hop[180_000].events == 2
    assert sum(w.events for w in out if w.window_kind == "hopping") == 2 * len(events)
    assert sum(w.events for w in out if w.window_kind == "tumbling") == len(events)


# --------------------------------------------------------------------------- closing
@pytest.mark.parametrize("lateness_s, watermark_offset_s, closed", [
    (0, 59, 0), (0, 60, 1), (5, 64, 0), (5, 65, 1), (5, 3600, 1),
])
def test_close_by_watermark(lateness_s, watermark_offset_s, closed):
    agg = WindowAggregator(window_s=60, allowed_lateness_s=lateness_s)
    feed(agg, [ev(0, T0), ev(1, T0 + 30_000)], [1, 1])
    agg.advance_watermark(T0 + watermark_offset_s * 1000)
    assert len(agg.close_until(0)) == closed
    assert agg.open_windows() == 1 - closed


def test_event_closes_earlier_windows_and_idle_advance():
    agg = WindowAggregator(window_s=60, allowed_lateness_s=5)
    feed(agg, [ev(0, T0 + 1000)], [1])
    assert agg.close_until(0) == []
    feed(agg, [ev(1, T0 + 70_000)], [1])  # watermark 70 s: window [0, 60) + 5 s lateness
    (w,) = agg.close_until(0)
    assert w.window_start_ms == T0 and w.events == 1
    agg.advance_watermark(T0 + 50_000)  # never goes back
    assert agg.watermark_ms == T0 + 70_000
    agg.advance_watermark(T0 + 125_000)  # the idle timer
    (w2,) = agg.close_until(0)
    assert w2.window_start_ms == T0 + 60_000


# --------------------------------------------------------------------------- lateness
def test_late_event_counted_not_merged():
    agg = WindowAggregator(window_s=60, allowed_lateness_s=5)
    feed(agg, [ev(0, T0 + 10_000), ev(1, T0 + 20_000)], [1, MISS])
    feed(agg, [ev(2, T0 + 66_000)], [3])
    (first,) = agg.close_until(0)
    snapshot = MetricsWindow.from_json(first.to_json())
    assert first.events == 2 and first.late_events == 0
    # within allowed lateness of the open window [60, 120): an ordinary event
    feed(agg, [ev(3, T0 + 61_000)], [None])
    # belongs to the published window [0, 60): late
    feed(agg, [ev(4, T0 + 30_000)], [1])
    assert agg.total_late == 1
    (second,) = agg.flush(0)
    assert second.window_start_ms == T0 + 60_000
    assert second.late_events == 1
    assert second.events == 3 and second.scored == 2  # the late event is counted here
    assert first == snapshot  # the published window was not touched
    # totals stay exact: every scored rank appears once over the windows
    total = aggregate_windows([first, second])
    ref = ranking_metrics(np.array([1, MISS, 3, 1]), (10, 20))
    assert total == pytest.approx(ref, rel=1e-12)


def test_late_event_for_hopping_windows_not_double_counted():
    agg = WindowAggregator(window_s=60, hop_s=60, hop_window_s=120, allowed_lateness_s=0)
    feed(agg, [ev(0, T0 + 10_000)], [1])
    feed(agg, [ev(1, T0 + 130_000)], [1])
    closed = agg.close_until(0)
    assert {(w.window_kind, w.window_start_ms - T0) for w in closed} == {
        ("tumbling", 0), ("hopping", -60_000), ("hopping", 0)}
    # hopping windows of 70 s: [0,120) published, [60,180) open -> goes there once, late.
    # Its tumbling window [60,120) was never published (it had no event): not late there.
    feed(agg, [ev(2, T0 + 70_000)], [1])
    out = agg.flush(0)
    hop = {w.window_start_ms - T0: w for w in out if w.window_kind == "hopping"}
    assert hop[60_000].events == 2 and hop[60_000].late_events == 1
    assert hop[120_000].events == 1 and hop[120_000].late_events == 0
    assert agg.total_late == 0
    # all its hopping windows published: it goes to the oldest open hopping window, late
    feed(agg, [ev(3, T0 + 1000)], [1])
    (tum, hop_w) = sorted(agg.flush(0), key=lambda w: w.window_kind, reverse=True)
    assert tum.window_kind == "tumbling" and tum.late_events == 1 and agg.total_late == 1
    assert hop_w.late_events == 1 and hop_w.events == 1


# --------------------------------------------------------------------------- contents
def filled_aggregator() -> WindowAggregator:
    """One tumbling window: 4 events of 2 users (one a duplicate), 3 scored, 1 dead letter."""
    agg = WindowAggregator(ks=(1, 3), window_s=60, allowed_lateness_s=0, n_items=10,
                           model_version="m-1")
    events = [ev(0, T0, "a", "view"), ev(1, T0 + 1, "b", "click"), ev(2, T0 + 2, "a", "cart"),
              ev(3, T0 + 3, "a", "cart")]
    res = batch(events, ranks=[None, 1, 3, 2], items=[[1, 2], [2, 3], [4, 5], [4, 5]],
                dups=[3], actions=[None, (1, 1), (2, 0), (2, 2)])
    agg.add_batch(events, res, [10.0, 20.0, 30.0, 1000.0], 5000)
    agg.add_dead_letters(1, 5000)
    return agg


def test_window_contents():
    (w,) = filled_aggregator().flush(123)
    assert (w.events, w.predictions, w.users, w.dead_letters) == (3, 4, 2, 1)
    assert w.dead_letter_rate == pytest.approx(1 / 4)
    # the duplicate (position 3) is published but neither counted nor scored
    assert w.scored == 3
    assert w.metrics == pytest.approx(ranking_metrics(np.array([1, 3, 2]), (1, 3)))
    assert w.coverage == pytest.approx(5 / 10)  # items 1..5
    assert w.action_accuracy == pytest.approx(2 / 3)
    # latency percentiles from a 1 % log-bucket histogram (stream_app.windows.latency_sketch)
    assert w.latency_p50_ms == pytest.approx(20.0, rel=0.01)
    assert w.latency_p99_ms == pytest.approx(30.0, rel=0.01)
    assert w.model_version == "m-1" and w.emitted_at_ms == 123
    # first batch: throughput over the oldest event's latency (1 s of the duplicate aside)
    assert w.events_per_s == pytest.approx(3 / 1.0)


def test_throughput_shared_between_windows():
    agg = WindowAggregator(window_s=60, allowed_lateness_s=0)
    feed(agg, [ev(0, T0)], [None], wall_ms=1000, lat=0.0)  # no latency: no wall time known
    feed(agg, [ev(i, T0 + 60_000 * (i % 2)) for i in range(1, 5)], [1] * 4, wall_ms=3000)
    a, b = agg.flush(0)
    # the second batch took 2 s for 4 events, 2 in each window
    assert b.events == 2 and b.events_per_s == pytest.approx(2 / 1.0)
    assert a.events == 3 and a.events_per_s == pytest.approx(3 / 1.0)


def test_dead_letters_before_any_event_are_kept():
    agg = WindowAggregator(window_s=60)
    agg.add_dead_letters(2, 0)
    assert agg.open_windows() == 0
    feed(agg, [ev(0, T0 + 5)], [None])
    (w,) = agg.flush(0)
    assert w.dead_letters == 2 and w.events == 1


def test_empty_aggregator():
    agg = WindowAggregator()
    assert agg.close_until(0) == [] and agg.flush(0) == []
    assert aggregate_windows([]) == {}


# --------------------------------------------------------------------------- exact totals
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lateness_s, shuffle", [(0, False), (5, True), (0, True)])
def test_totals_equal_ranking_metrics(seed, lateness_s, shuffle):
    """Over any batching, closing and lateness, the windows' totals equal ranking_metrics."""
    rng = np.random.default_rng(seed)
    n = 600
    ts = np.sort(rng.integers(0, 900_000, n)) + T0
    if shuffle:  # out-of-order arrivals: some events are late
        ts = ts + rng.integers(-40_000, 1, n) * (rng.random(n) < 0.2)
    ranks = np.where(rng.random(n) < 0.4, rng.integers(1, 30, n), MISS)
    scored = rng.random(n) < 0.85
    agg = WindowAggregator(ks=(10, 20), window_s=60, allowed_lateness_s=lateness_s,
                           hop_s=60, hop_window_s=180)
    published: list[MetricsWindow] = []
    i = 0
    while i < n:
        size = int(rng.integers(1, 80))
        idx = range(i, min(n, i + size))
        events = [ev(j, int(ts[j]), user=f"u{j % 17}") for j in idx]
        agg.add_batch(events, batch(events, [int(ranks[j]) if scored[j] else None
                                             for j in idx]), [1.0] * len(events), 0)
        published += agg.close_until(0)
        i += size
    published += agg.flush(0)
    tumbling = [w for w in published if w.window_kind == "tumbling"]
    assert sum(w.events for w in tumbling) == n
    assert sum(w.late_events for w in tumbling) == agg.total_late
    if shuffle and lateness_s == 0:
        assert agg.total_late > 0
    ref = ranking_metrics(ranks[scored], (10, 20))
    got = aggregate_windows(published)
    assert got.keys() == ref.keys()
    for key, v in ref.items():
        assert got[key] == pytest.approx(v, rel=1e-12, abs=1e-15)


def test_merge_windows_of_partitions():
    a = WindowAggregator(window_s=60, allowed_lateness_s=0, n_items=100)
    b = WindowAggregator(window_s=60, allowed_lateness_s=0, n_items=100)
    feed(a, [ev(0, T0, "u1"), ev(1, T0 + 5, "u1")], [1, 5], lat=10.0)
    feed(b, [ev(2, T0 + 7, "u2")], [MISS], lat=50.0)
    b.add_dead_letters(1, 0)
    wa, wb = a.flush(0), b.flush(0)
    (m,) = merge_windows(wa + wb)
    assert (m.events, m.scored, m.users, m.dead_letters) == (3, 3, 2, 1)
    assert m.dead_letter_rate == pytest.approx(0.25)
    assert m.metrics == pytest.approx(ranking_metrics(np.array([1, 5, MISS]), (10, 20)))
    # merged percentiles: the max of p99s, the event-weighted mean of p50s (histogram: 1 %)
    assert m.latency_p99_ms == pytest.approx(50.0, rel=0.01)
    assert m.latency_p50_ms == pytest.approx((2 * 10 + 50) / 3, rel=0.01)
    assert merge_windows(wa) == wa


def test_window_record_stays_small_as_the_window_fills():
    """The crash-safe window record is written every batch: its size must not follow the
    number of events in the window (no list of latencies, no set of items)."""
    from stream_app.windows.persistence import decode_record, encode_record

    agg = WindowAggregator(window_s=3600, allowed_lateness_s=0, n_items=1000)
    sizes = []
    for b in range(5):
        evs = [ev(b * 2000 + i, T0 + b * 2000 + i, f"u{i % 50}") for i in range(2000)]
        feed(agg, evs, [MISS] * len(evs), lat=10.0 + b)
        sizes.append(len(encode_record(agg, b)))
    assert sizes[-1] < 1.2 * sizes[0], sizes
    back, applied = decode_record(encode_record(agg, 7))
    assert applied == 7
    assert [w.to_json() for w in back.flush(1)] == [w.to_json() for w in agg.flush(1)]


# window records of formats 1 to 3 (the reflected layout before snapshots), as those workers
# wrote them for the aggregator fed in test_older_window_records_are_upgraded; they differ in
# how a window holds its users, items and latencies
_LEGACY_HEAD = (
    b'"applied_offset":3,"aggregator":{"__obj__":"WindowAggregator","attrs":{'
    b'"ks":{"__tuple__":[10,20]},"window_ms":60000,"lateness_ms":0,"hop_ms":0,'
    b'"hop_window_ms":300000,"n_items":100,"model_version":"","watermark_ms":1704067200005,'
    b'"_open":{"__map__":[[{"__tuple__":["tumbling",1704067200000]},{"__obj__":"_Window",'
    b'"attrs":{"start_ms":1704067200000,"end_ms":1704067260000,"kind":"tumbling",'
    b'"ks":{"__tuple__":[10,20]},"events":2,"predictions":2,"late_events":0,"dead_letters":0,'
)
_LEGACY_CONFUSION = (b'"confusion":{"__nd__":"<i8","shape":[5,5],'
                     b'"data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]},')
_LEGACY_LATENCY = (b'"latency":{"__obj__":"LatencyHistogram","attrs":{"accuracy":0.01,'
                   b'"floor_ms":0.001,"counts":{"__map__":[[116,2]]},"zeros":0,"n":2}},')
_LEGACY_RANKING = (
    b'"busy_ms":10.0,"ranking":{"__obj__":"RankingAccumulator","attrs":{'
    b'"ks":{"__tuple__":[10,20]},"n":2,"sums":{"__map__":[["hr@10",1.0],["ndcg@10",1.0],'
    b'["mrr@10",1.0],["hr@20",1.0],["ndcg@20",1.0],["mrr@20",1.0]]}}}'
)
_LEGACY_TAIL = (b'}}]]},"_closed_until":{"__map__":[]},"total_late":0,"_pending_dead":0,'
                b'"_last_wall_ms":1000}}}')
_USER_SET = b'"users":{"__set__":["u1","u2"]},'
LEGACY_RECORDS = {
    1: (b'{"format":1,' + _LEGACY_HEAD + _USER_SET + _LEGACY_CONFUSION + _LEGACY_RANKING
        + b',"predicted_items":{"__set__":[1,2,3]},"latencies_ms":[10.0,10.0]' + _LEGACY_TAIL),
    2: (b'{"format":2,' + _LEGACY_HEAD + _USER_SET + _LEGACY_CONFUSION + _LEGACY_LATENCY
        + _LEGACY_RANKING
        + b',"items_seen":{"__nd__":"|b1","shape":[101],"bits":"cAAAAAAAAAAAAAAAAA=="}'
        + _LEGACY_TAIL),
    3: (b'{"format":3,' + _LEGACY_HEAD
        + b'"users":{"__obj__":"DistinctSketch","attrs":{"sparse":{"__set__":['
        b'15378189911849802130,12599529359267765114]},"registers":null}},' + _LEGACY_CONFUSION
        + b'"items":{"__obj__":"DistinctSketch","attrs":{"sparse":{"__set__":['
        b'10451216379200822465,10905525725756348110,2092789425003139053]},"registers":null}},'
        + _LEGACY_LATENCY + _LEGACY_RANKING + _LEGACY_TAIL),
}


@pytest.mark.parametrize("fmt", [1, 2, 3])
def test_older_window_records_are_upgraded(fmt):
    """Format 1 (sets of users and items, a latency list), format 2 (a set of users, an
    item bitmap) and format 3 (sketches): read back as the same windows."""
    from stream_app.windows.persistence import decode_record

    agg = WindowAggregator(window_s=60, allowed_lateness_s=0, n_items=100)
    feed(agg, [ev(0, T0, "u1"), ev(1, T0 + 5, "u2")], [1, MISS], lat=10.0)  # items 1, 2, 3
    from test_window_snapshot import without_gini

    back, applied = decode_record(LEGACY_RECORDS[fmt])
    assert applied == 3
    (w_back,), (w,) = back.flush(1), agg.flush(1)
    assert without_gini(w_back) == without_gini(w)  # legacy records kept no exposure counts
    assert (w.users, w.coverage) == (2, pytest.approx(3 / 100))


def test_window_record_is_independent_of_the_number_of_users():
    """A window of 200,000 users makes records of a few KB (every user id kept would be about
    2 MB; Apache Kafka refuses records over 1 MiB by default), and the distinct-user count
    is within the sketch's error."""
    from stream_app.windows.persistence import PartitionWindows, decode_record

    n_users, per_batch = 200_000, 2000
    factory = lambda: WindowAggregator(window_s=3600, allowed_lateness_s=0,  # noqa: E731
                                       hop_s=600, hop_window_s=3600, n_items=1_000_000)
    pw = PartitionWindows(factory, lambda key: None)
    rng = np.random.default_rng(0)
    sizes = []
    for b in range(n_users // per_batch):
        evs = [ev(b * per_batch + i, T0 + b * per_batch + i, f"user-{b * per_batch + i}")
               for i in range(per_batch)]
        items = rng.integers(1, 1_000_001, (per_batch, 20))
        res = batch(evs, [MISS] * per_batch, items=items)
        offsets = list(range(b * per_batch, (b + 1) * per_batch))
        closed, records = pw.account([0] * per_batch, offsets, evs, range(per_batch), res,
                                     [5.0] * per_batch, 1000 + b)
        assert closed == []
        sizes.append(len(records[0][1]))
    # 7 open windows (1 tumbling, 6 hopping), each about 11 KB (two 4,096-register sketches)
    assert max(sizes) < 96 * 1024, max(sizes)
    agg, _ = decode_record(records[0][1])
    (w,) = [w for w in agg.flush(0) if w.window_kind == "tumbling"]
    assert w.events == n_users
    assert w.users == pytest.approx(n_users, rel=0.05)
    assert w.coverage == pytest.approx(1 - np.exp(-n_users * 20 / 1e6), rel=0.05)


def test_record_over_the_limit_publishes_the_oldest_windows_early():
    from stream_app.windows.persistence import PartitionWindows, decode_record

    factory = lambda: WindowAggregator(window_s=60, allowed_lateness_s=0,  # noqa: E731
                                       hop_s=60, hop_window_s=3600, n_items=100)
    pw = PartitionWindows(factory, lambda key: None, max_record_bytes=40_000)
    evs = [ev(i, T0 + i * 1000, f"u{i}") for i in range(300)]
    closed, records = pw.account([0] * 300, list(range(300)), evs, range(300),
                                 batch(evs, [MISS] * 300), [5.0] * 300, 1000)
    assert len(records[0][1]) <= 40_000 and 0 < pw.forced_closes <= len(closed)
    agg, _ = decode_record(records[0][1])
    # nothing is lost: the windows published early and those still open hold every event
    from schemas import MetricsWindow

    published = [MetricsWindow.from_json(v) for _, v in closed] + agg.flush(0)
    assert sum(w.events for w in published if w.window_kind == "tumbling") == 300


# --------------------------------------------------------------------------- fast path
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("hop_s", [0, 60])
def test_window_fast_path_equals_event_by_event(seed, hop_s, monkeypatch):
    """Batches with no late event are accounted per window at once; the windows published
    are exactly those of the event-by-event path (late events, duplicates, row subsets,
    dead letters before the first event, action confusion, latencies, items)."""
    rng = np.random.default_rng(seed)
    n = 700
    ts = np.sort(rng.integers(0, 900_000, n)) + T0
    ts = ts + rng.integers(-70_000, 1, n) * (rng.random(n) < 0.05)  # a few late events
    ranks = np.where(rng.random(n) < 0.4, rng.integers(1, 30, n), MISS)
    scored = rng.random(n) < 0.85
    acts = rng.integers(0, 5, (n, 2))
    items = rng.integers(1, 400, (n, 3))
    lats = rng.random(n) * 300

    def run(slow: bool) -> list[dict]:
        agg = WindowAggregator(ks=(5, 10, 20), window_s=60, allowed_lateness_s=0,
                               hop_s=hop_s, hop_window_s=180, n_items=400)
        if slow:
            monkeypatch.setattr(agg, "_groups_if_on_time", lambda ts: None)
        agg.add_dead_letters(3, 0)
        brng = np.random.default_rng(seed + 100)  # the same batching for both runs
        out, i, wall = [], 0, 0
        while i < n:
            size = int(brng.integers(1, 90))
            idx = list(range(i, min(n, i + size)))
            events = [ev(j, int(ts[j]), user=f"u{j % 23}") for j in idx]
            dups = [k for k in range(len(idx)) if brng.random() < 0.05]
            res = batch(events, [int(ranks[j]) if scored[j] and k not in dups else None
                                 for k, j in enumerate(idx)],
                        items=items[idx], dups=dups,
                        actions=[tuple(int(a) for a in acts[j]) for j in idx])
            rows = sorted(k for k in range(len(idx)) if brng.random() < 0.8)
            wall += int(brng.integers(1, 50))
            agg.add_batch(events, res, [float(lats[j]) for j in idx], wall, rows=rows)
            out += agg.close_until(wall)
            i += size
        out += agg.flush(wall)
        return [orjson.loads(w.to_json()) for w in out]

    fast, slow = run(False), run(True)
    assert len(fast) > 5
    assert fast == slow
