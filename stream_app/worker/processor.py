"""One micro-batch through seqstream: parse, test-then-learn, predict, publish.

:class:`BatchProcessor` is the adapter between Kafka records and the pure prequential engine
(:mod:`model_core.prequential`). It knows nothing of Faust: the agent hands it raw records and
a state mapping, and gets back the bytes to publish. That keeps one code path for the worker,
the tests and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from model_core.predictor import Recommender
from model_core.prequential import BatchResult, PrequentialEngine
from model_core.sequence_state import UserState
from schemas.actions import ACTIONS
from schemas.dead_letter import MAX_ORIGINAL_BYTES, DeadLetter
from schemas.event import DEFAULT_MAX_FUTURE_MS, Event, check_event_time, parse_event
from schemas.exceptions import SchemaError
from stream_app.windows.aggregation import WindowAggregator


@dataclass(slots=True)
class RawRecord:
    """What the processor needs of one Kafka message."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # Kafka message timestamp (producer send time): the latency origin


@dataclass
class BatchOutput:
    events: list[Event]  # valid events, in input order
    positions: list[int]  # index of each valid event in the input records
    result: BatchResult | None
    predictions: list[tuple[bytes, bytes]]  # (key, value) for the predictions topic
    dead_letters: list[tuple[bytes | None, bytes]]  # (key, value) for dead-letters
    latencies_ms: list[float] = field(default_factory=list)
    model_ms: float = 0.0


class BatchProcessor:
    """``max_future_ms``: how far ahead of the wall clock an event time may be (0 = no
    limit); a later event is a dead letter (:func:`schemas.event.check_event_time`).
    ``max_record_bytes``: the largest dead letter to write; an input too large to copy into
    one under it (base64 adds a third) is dead-lettered by reference
    (:meth:`schemas.dead_letter.DeadLetter.of`)."""

    def __init__(self, model: Recommender, max_len: int = 50, k: int = 20,
                 exclude_history: bool = False, windows: WindowAggregator | None = None,
                 max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
                 max_record_bytes: int = 512 * 1024) -> None:
        self.set_model(model, max_len=max_len, k=k, exclude_history=exclude_history)
        self.windows = windows
        self.max_future_ms = max_future_ms
        # room for the reason, the key's prefix and the other fields (under 4 KiB together)
        self.max_original_bytes = min(MAX_ORIGINAL_BYTES, (max_record_bytes - 4096) * 3 // 4)

    def set_model(self, model: Recommender, max_len: int = 50, k: int = 20,
                  exclude_history: bool = False) -> None:
        """Switch models between batches (hot swap)."""
        self.model = model
        self.engine = PrequentialEngine(model, max_len=max_len, k=k,
                                        exclude_history=exclude_history)
        self._item_ids = model.vocab.item_ids
        self.model_version = model.version

    # ------------------------------------------------------------------ stage 1
    def parse(self, records: Sequence[RawRecord]) -> tuple[list[Event], list[int],
                                                           list[tuple[bytes | None, bytes]]]:
        """Validate records; bad ones become dead letters with the reason and original bytes.

        A record must be keyed by its event's ``user_id``. A record without a key is a dead
        letter too: it landed on whichever partition the producer picked, and processing it
        there would start a second state for its user beside the one in the partition its
        user's other events go to (and another worker may own that one). The dead letter
        names the key to re-send it with.
        """
        events: list[Event] = []
        positions: list[int] = []
        dead: list[tuple[bytes | None, bytes]] = []
        now_ms = int(time.time() * 1000)
        max_future_ms = self.max_future_ms
        for i, r in enumerate(records):
            try:
                ev = parse_event(r.value)
                if r.key is None:
                    raise SchemaError(
                        f"record has no Kafka key; events must be keyed by user_id (re-send it "
                        f"with key {ev.user_id[:64]!r}) so each user's events stay in one "
                        "partition, in order", "key")
                if r.key != ev.user_id.encode():
                    raise SchemaError(
                        f"Kafka key {r.key[:64]!r} is not the event's user_id {ev.user_id[:64]!r};"
                        " events must be keyed by user_id so each user's events stay in order",
                        "key")
                if ev.user_id.startswith("\x00"):  # reserved for the worker's own table keys
                    raise SchemaError("user_id must not start with a NUL character", "user_id")
                if ev.timestamp_ms > now_ms + max_future_ms and max_future_ms:
                    check_event_time(ev, now_ms, max_future_ms)
            except SchemaError as e:
                dl = DeadLetter.of(r.value, e.reason, r.topic, r.partition, r.offset, r.key,
                                   failed_at_ms=now_ms,
                                   max_original_bytes=self.max_original_bytes)
                dead.append((r.key, dl.to_json()))
                continue
            events.append(ev)
            positions.append(i)
        return events, positions, dead

    # ------------------------------------------------------------------ stage 2
    def run_model(self, events: Sequence[Event], states: MutableMapping[str, UserState],
                  offsets: Sequence[int] | None = None) -> BatchResult:
        """Test-then-learn + batched prediction (pure; safe to run in a worker thread)."""
        return self.engine.process(events, states, offsets)

    # ------------------------------------------------------------------ stage 3
    def encode_predictions(self, events: Sequence[Event], result: BatchResult,
                           emitted_at_ms: int) -> list[tuple[bytes, bytes]]:
        """One ``Prediction`` JSON per event (duplicates included: at-least-once output)."""
        top = result.topk
        # whole-batch numpy -> Python conversions (one call each), then one dumps per event
        rows = top.items.tolist()
        scores = np.round(top.scores.astype(np.float64), 6).tolist()
        probs = (np.round(top.action_probs.astype(np.float64), 6).tolist()
                 if top.action_probs is not None else None)
        ids = self._item_ids
        version = self.model_version
        dumps = orjson.dumps
        empty: dict = {}
        out = []
        for i, ev in enumerate(events):
            value = dumps({
                "event_id": ev.event_id,
                "user_id": ev.user_id,
                "items": ids(rows[i]),
                "scores": scores[i],
                "next_action": dict(zip(ACTIONS, probs[i], strict=True)) if probs else empty,
                "model_version": version,
                "event_timestamp_ms": ev.timestamp_ms,
                "emitted_at_ms": emitted_at_ms,
                "extra": empty,
            })
            out.append((ev.user_id.encode(), value))
        return out

    def process(self, records: Sequence[RawRecord],
                states: MutableMapping[str, UserState]) -> BatchOutput:
        """All stages in one call (no Kafka): used by tests, the benchmark and offline replay."""
        events, positions, dead = self.parse(records)
        result = None
        preds: list[tuple[bytes, bytes]] = []
        lat: list[float] = []
        t0 = time.perf_counter()
        if events:
            result = self.run_model(events, states, [records[p].offset for p in positions])
        model_ms = (time.perf_counter() - t0) * 1000
        now_ms = int(time.time() * 1000)
        if events:
            preds = self.encode_predictions(events, result, now_ms)
            lat = [float(now_ms - records[p].timestamp_ms) for p in positions]
        out = BatchOutput(events, positions, result, preds, dead, lat, model_ms)
        self.account(out, now_ms)
        return out

    def account(self, out: BatchOutput, now_ms: int) -> None:
        if self.windows is None:
            return
        if out.result is not None:
            self.windows.add_batch(out.events, out.result, out.latencies_ms, now_ms)
        self.windows.add_dead_letters(len(out.dead_letters), now_ms)
