"""The saved window state is a designed record: snapshot/restore, a version, literal bytes."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from test_online import T0, batch, ev, filled_aggregator

from stream_app.windows.aggregation import SNAPSHOT_VERSION, AggregatorSnapshot, WindowAggregator
from stream_app.windows.persistence import (
    WindowRecordVersionError,
    decode_record,
    encode_record,
)

# written by encode_record (snapshot version 4) for filled_aggregator() with applied_offset 41;
# kept as bytes so that a change to the aggregator's attributes cannot follow it silently
V4_RECORD = (
    b'{"format":4,"applied_offset":41,"aggregator":{"ks":[1,3],"window_ms":60000,'
    b'"lateness_ms":0,"hop_ms":0,"hop_window_ms":300000,"n_items":10,"model_version":"m-1",'
    b'"watermark_ms":1704067200003,"closed_until":{},"total_late":0,"pending_dead":0,'
    b'"last_wall_ms":5000,"windows":[{"kind":"tumbling","start_ms":1704067200000,'
    b'"end_ms":1704067260000,"events":3,"predictions":4,"late_events":0,"dead_letters":1,'
    b'"busy_ms":1000.0,"scored":3,"ranking_sums":{"hr@1":1.0,"ndcg@1":1.0,"mrr@1":1.0,'
    b'"hr@3":3.0,"ndcg@3":2.1309297535714578,"mrr@3":1.8333333333333333},'
    b'"confusion":[[0,0,0,0,0],[0,1,0,0,0],[1,0,1,0,0],[0,0,0,0,0],[0,0,0,0,0]],'
    b'"users":{"hashes":[3405396810240292928,8453121595177857668],"registers":null},'
    b'"items":{"hashes":[2092789425003139053,7134611160154358618,7958955049054603978,'
    b'10451216379200822465,10905525725756348110],"registers":null},'
    b'"latency":{"accuracy":0.01,"floor_ms":0.001,"zeros":0,'
    b'"buckets":[[116,1],[150,1],[171,1]]}}]}}'
)
# snapshot version 5 adds each window's beyond-accuracy sums (empty without item counts)
V5_RECORD = (V4_RECORD.replace(b'"format":4', b'"format":5')
             .replace(b'[171,1]]}}]}}', b'[171,1]]},"list_sums":{}}]}}'))
# snapshot version 6 adds each window's exposure counts (items 1..5 recommended 1, 2, 1, 1, 1
# times at K=1 and K=3: gaps and counts as uint32, zlib, base64)
V6_RECORD = (V5_RECORD.replace(b'"format":5', b'"format":6')
             .replace(b'"list_sums":{}}', b'"list_sums":{},'
                      b'"exposure":"eAFjZGBgYMSBgcJgORjNhKYOAAH0AA8="}'))


def without_gini(w):
    """A published window's JSON without its Gini (windows of records before version 6
    have none: their exposure was not kept)."""
    d = orjson.loads(w.to_json())
    d["beyond"] = {k: v for k, v in d["beyond"].items() if not k.startswith("gini@")}
    return d


def test_snapshot_is_a_typed_record_with_a_version():
    snap = filled_aggregator().snapshot()
    assert isinstance(snap, AggregatorSnapshot) and snap.version == SNAPSHOT_VERSION
    (w,) = snap.windows
    assert (w.kind, w.events, w.predictions, w.dead_letters, w.scored) == ("tumbling", 3, 4, 1, 3)
    assert dataclasses.is_dataclass(w.users) and dataclasses.is_dataclass(w.latency)


def test_restore_goes_on_as_the_original():
    agg = filled_aggregator()
    back = WindowAggregator.restore(agg.snapshot())
    assert back.snapshot() == agg.snapshot()
    more = [ev(4, T0 + 70_000, "c")]
    for a in (agg, back):
        a.add_batch(more, batch(more, ranks=[2], items=[[7, 8]]), [5.0], 6000)
    assert [w.to_json() for w in back.flush(9)] == [w.to_json() for w in agg.flush(9)]


def test_record_of_literal_bytes_is_restored():
    """Records written as bytes by snapshot versions 4, 5 and 6 are read back into the same
    windows, whatever the aggregator's attributes are called now (before version 6 without
    exposure counts: no Gini)."""
    for record in (V4_RECORD, V5_RECORD, V6_RECORD):
        back, applied = decode_record(record)
        assert applied == 41
        (w,) = back.flush(123)
        (want,) = filled_aggregator().flush(123)
        if record is V6_RECORD:
            assert w.to_json() == want.to_json()
            assert w.beyond == {"gini@1": pytest.approx(0.7), "gini@3": pytest.approx(0.5666666)}
        else:
            assert without_gini(w) == without_gini(want) and w.beyond == {}
        assert (w.events, w.users, w.dead_letters, w.coverage) == (3, 2, 1, pytest.approx(0.5))
    # and the current code writes the same bytes for the same input
    assert encode_record(filled_aggregator(), 41) == V6_RECORD


@pytest.mark.parametrize("version", [0, 7, 99, None, "4"])
def test_unknown_version_fails_with_a_clear_message(version):
    d = orjson.loads(V4_RECORD)
    d["format"] = version
    with pytest.raises(WindowRecordVersionError,
                       match=rf"snapshot version {version!r}, expected version {SNAPSHOT_VERSION}"):
        decode_record(orjson.dumps(d))


def test_missing_or_extra_field_is_named():
    d = orjson.loads(V4_RECORD)
    del d["aggregator"]["windows"][0]["busy_ms"]
    with pytest.raises(ValueError, match="busy_ms"):
        decode_record(orjson.dumps(d))
    d = orjson.loads(V4_RECORD)
    d["aggregator"]["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        decode_record(orjson.dumps(d))


def test_sketch_past_its_exact_phase_round_trips():
    agg = WindowAggregator(window_s=60, allowed_lateness_s=0, n_items=10_000)
    events = [ev(i, T0 + i, f"u{i}") for i in range(500)]
    agg.add_batch(events, batch(events, items=[[i + 1, i + 2] for i in range(500)]),
                  [1.0] * 500, 1000)
    back, _ = decode_record(encode_record(agg, 0))
    (w,) = back.snapshot().windows
    assert w.users.registers is not None and w.users.hashes is None
    assert [x.to_json() for x in back.flush(1)] == [x.to_json() for x in agg.flush(1)]


def test_format_3_record_is_read_into_a_snapshot():
    """The last reflected format (its fixture: tests/test_online.py) becomes the same snapshot
    as the aggregator it was written for."""
    from test_online import LEGACY_RECORDS, feed

    from model_core.metrics import MISS

    agg = WindowAggregator(window_s=60, allowed_lateness_s=0, n_items=100)
    feed(agg, [ev(0, T0, "u1"), ev(1, T0 + 5, "u2")], [1, MISS], lat=10.0)
    back, applied = decode_record(LEGACY_RECORDS[3])
    assert applied == 3
    (w,) = agg.snapshot().windows  # the legacy record kept no exposure counts
    assert back.snapshot() == dataclasses.replace(
        agg.snapshot(), windows=(dataclasses.replace(w, exposure=None),))
    # written again, it is a current record
    assert orjson.loads(encode_record(back, 3))["format"] == SNAPSHOT_VERSION
