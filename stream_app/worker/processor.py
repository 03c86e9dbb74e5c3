"""One micro-batch through seqstream: parse, test-then-learn, predict, publish.

:class:`BatchProcessor` is the adapter between Kafka records and the pure prequential engine
(:mod:`model_core.prequential`). It knows nothing of Faust: the agent hands it raw records and
a state mapping, and gets back the bytes to publish. That keeps one code path for the worker,
the tests and the benchmarks.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import orjson

from model_core.predictor import Recommender, TopK
from model_core.prequential import BatchResult, PrequentialEngine, PrequentialStep
from model_core.sequence_state import UserState, event_hash
from schemas.actions import ACTIONS
from schemas.dead_letter import MAX_ORIGINAL_BYTES, DeadLetter
from schemas.event import DEFAULT_MAX_FUTURE_MS, Event, check_event_time, parse_event
from schemas.exceptions import SchemaError
from schemas.prediction import Prediction
from stream_app.windows.aggregation import WindowAggregator

_explain_failed: set[str] = set()


def _log_explain_failure(model_version: str, e: Exception) -> None:
    """Once per model version: its predictions go out without explanations."""
    if model_version not in _explain_failed:
        _explain_failed.add(model_version)
        logging.getLogger("seqstream.worker").warning(
            "explanations off for model %s: %r (predictions go out without them)",
            model_version, e)


#: items of a prediction that are explained (its first ones), and the sampling resolution
EXPLAINED_ITEMS = 3
_EXPLAIN_SCALE = 1_000_000


def read_event_record(value: bytes, key: bytes | None, now_ms: int,
                      max_future_ms: int) -> Event:
    """The event of one record of the events topic, or :class:`SchemaError` with the reason
    the worker dead-letters it for: not a valid Event, no Kafka key or a key other than its
    ``user_id`` (see :meth:`BatchProcessor.parse`), a ``user_id`` starting with NUL (the
    table's own keys), an event time more than ``max_future_ms`` ahead (0 = no bound). The
    learner (``seqstream learner``) takes events by the same function, so it never learns an
    event the workers refused."""
    ev = parse_event(value)
    if key is None:
        raise SchemaError(
            f"record has no Kafka key; events must be keyed by user_id (re-send it "
            f"with key {ev.user_id[:64]!r}) so each user's events stay in one "
            "partition, in order", "key")
    if key != ev.user_id.encode():
        raise SchemaError(
            f"Kafka key {key[:64]!r} is not the event's user_id {ev.user_id[:64]!r};"
            " events must be keyed by user_id so each user's events stay in order",
            "key")
    if ev.user_id.startswith("\x00"):  # reserved for the worker's own table keys
        raise SchemaError("user_id must not start with a NUL character", "user_id")
    if ev.timestamp_ms > now_ms + max_future_ms and max_future_ms:
        check_event_time(ev, now_ms, max_future_ms)
    return ev


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
class PreparedBatch:
    """A parsed batch after test-then-learn, waiting for its model call (``step``; None
    when the batch has no valid event)."""

    records: Sequence[RawRecord]
    events: list[Event]  # valid events, in input order
    positions: list[int]  # index of each valid event in the input records
    dead: list[tuple[bytes | None, bytes]]  # dead letters of the records that did not parse
    step: PrequentialStep | None


@dataclass
class BatchOutput:
    events: list[Event]  # valid events, in input order
    positions: list[int]  # index of each valid event in the input records
    result: BatchResult | None
    predictions: list[tuple[bytes, bytes]]  # (key, value) for the predictions topic
    dead_letters: list[tuple[bytes | None, bytes]]  # (key, value) for dead-letters
    latencies_ms: list[float] = field(default_factory=list)
    emitted_at_ms: int = 0  # wall clock when the outputs were made
    model_ms: float = 0.0


class BatchProcessor:
    """``max_future_ms``: how far ahead of the wall clock an event time may be (0 = no
    limit); a later event is a dead letter (:func:`schemas.event.check_event_time`).
    ``max_record_bytes``: the largest dead letter to write; an input too large to copy into
    one under it (base64 adds a third) is dead-lettered by reference
    (:meth:`schemas.dead_letter.DeadLetter.of`).
    ``pseudonyms``: replaces each valid event's ``user_id`` after the key check (the state,
    predictions and windows then hold only the pseudonym; :mod:`stream_app.worker.privacy`).
    ``explain_share``: the share of predictions that carry ``explanations`` (sampled by event
    id, so a redelivered event is explained again; :meth:`explain`)."""

    def __init__(self, model: Recommender, max_len: int = 50, k: int = 20,
                 exclude_history: bool = False, windows: WindowAggregator | None = None,
                 max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
                 max_record_bytes: int = 512 * 1024,
                 pseudonyms: Callable[[str], str] | None = None,
                 explain_share: float = 0.0) -> None:
        self.set_model(model, max_len=max_len, k=k, exclude_history=exclude_history)
        self.pseudonyms = pseudonyms
        self.explain_share = explain_share
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
        pseudonyms = self.pseudonyms
        for i, r in enumerate(records):
            try:
                ev = read_event_record(r.value, r.key, now_ms, max_future_ms)
                if pseudonyms is not None:
                    ev = replace(ev, user_id=pseudonyms(ev.user_id))
            except SchemaError as e:
                dl = DeadLetter.of(r.value, e.reason, r.topic, r.partition, r.offset, r.key,
                                   failed_at_ms=now_ms,
                                   max_original_bytes=self.max_original_bytes)
                dead.append((r.key, dl.to_json()))
                continue
            events.append(ev)
            positions.append(i)
        return events, positions, dead

    def state_key(self, user_id: str) -> bytes:
        """The table key of ``user_id``'s state (its pseudonym when those are on)."""
        return (self.pseudonyms(user_id) if self.pseudonyms is not None else user_id).encode()

    # ------------------------------------------------------------------ stage 2
    def prepare(self, records: Sequence[RawRecord], events: list[Event], positions: list[int],
                dead: list[tuple[bytes | None, bytes]],
                states: MutableMapping[str, UserState]) -> PreparedBatch:
        """Test-then-learn for the parsed batch (states are updated in place); the model call
        is left in ``step`` (:meth:`PreparedBatch.step.predict`, safe on a worker thread)."""
        step = None
        if events:
            step = self.engine.prepare(events, states, [records[p].offset for p in positions])
        return PreparedBatch(records, events, positions, dead, step)

    @staticmethod
    def predict_parts(step: PrequentialStep, rows: int) -> list[Callable[[], TopK]]:
        """The batch's model call as calls of at most ``rows`` rows each, in row order (one
        call, ``step.predict``, when ``rows`` is 0 or the batch is no larger); their
        :func:`join_topk` is ``step.predict()``: each row is scored on its own."""
        n = len(step.batch)
        if rows <= 0 or n <= rows:
            return [step.predict]
        return [functools.partial(step.predict_rows, s, min(n, s + rows))
                for s in range(0, n, rows)]

    def explained_rows(self, events: Sequence[Event]) -> list[int]:
        """The events (positions in ``events``) whose predictions carry explanations."""
        share = self.explain_share
        if share <= 0.0:
            return []
        cut = int(share * _EXPLAIN_SCALE)
        return [i for i, ev in enumerate(events) if event_hash(ev.event_id) % _EXPLAIN_SCALE < cut]

    def explain(self, step: PrequentialStep, topk: TopK, rows: Sequence[int],
                n_items: int = EXPLAINED_ITEMS) -> dict[int, list[dict]]:
        """Explanations of the first ``n_items`` recommended items of each row in ``rows``
        (:func:`model_core.explain.explain`, the model family's default method): per item,
        the past events that contributed most, newest counted as 0 events ago. Runs the model:
        call it on the model thread."""
        from model_core.explain import describe

        out: dict[int, list[dict]] = {}
        for r in rows:
            try:
                found = describe(self.model, step.batch, topk.items[r][:n_items], row=r)
            except Exception as e:  # noqa: BLE001 - an explanation never costs a prediction
                _log_explain_failure(self.model_version, e)
                continue
            if found:
                out[r] = found
        return out

    # ------------------------------------------------------------------ stage 3
    def finish(self, prepared: PreparedBatch, topk: TopK | None, now_ms: int,
               explanations: dict[int, list[dict]] | None = None) -> BatchOutput:
        """The batch's outputs once its model call returned ``topk`` (None without events);
        ``explanations`` by event position, from :meth:`explain`."""
        if prepared.step is None:
            return BatchOutput([], [], None, [], prepared.dead, [], now_ms)
        result = self.engine.complete(prepared.step, topk)
        recs = prepared.records
        return BatchOutput(prepared.events, prepared.positions, result,
                           self.encode_predictions(prepared.events, result, now_ms,
                                                   explanations),
                           prepared.dead,
                           [float(now_ms - recs[p].timestamp_ms) for p in prepared.positions],
                           now_ms)

    def fail(self, prepared: PreparedBatch, reason: str, now_ms: int) -> BatchOutput:
        """The batch's outputs once every model call failed: its valid events go to dead
        letters with ``reason``, unchanged (their states are not written)."""
        recs = prepared.records
        dead = prepared.dead + [
            (recs[p].key, DeadLetter.of(recs[p].value, reason, recs[p].topic, recs[p].partition,
                                        recs[p].offset, recs[p].key, failed_at_ms=now_ms,
                                        max_original_bytes=self.max_original_bytes).to_json())
            for p in prepared.positions]
        return BatchOutput([], [], None, [], dead, [], now_ms)

    def encode_predictions(self, events: Sequence[Event], result: BatchResult,
                           emitted_at_ms: int,
                           explanations: dict[int, list[dict]] | None = None,
                           ) -> list[tuple[bytes, bytes]]:
        """One :class:`~schemas.prediction.Prediction` per event (duplicates included:
        at-least-once output), serialised by orjson straight from the dataclass."""
        top = result.topk
        # whole-batch numpy -> Python conversions (one call each), then one dumps per event
        rows = top.items.tolist()
        scores = np.round(top.scores.astype(np.float64), 6).tolist()
        probs = (np.round(top.action_probs.astype(np.float64), 6).tolist()
                 if top.action_probs is not None else None)
        ids = self._item_ids
        version = self.model_version
        dumps = orjson.dumps
        out = []
        why = explanations or {}
        for i, ev in enumerate(events):
            pred = Prediction(ev.event_id, ev.user_id, ids(rows[i]), scores[i],
                              dict(zip(ACTIONS, probs[i], strict=True)) if probs else {},
                              version, ev.timestamp_ms, emitted_at_ms, {}, why.get(i))
            out.append((ev.user_id.encode(), dumps(pred)))
        return out

    def process(self, records: Sequence[RawRecord],
                states: MutableMapping[str, UserState]) -> BatchOutput:
        """The worker's stages in one call, the model called on this thread (no Kafka, no
        retries): used by tests and the benchmark. With ``windows`` the batch is accounted
        there too."""
        events, positions, dead = self.parse(records)
        prepared = self.prepare(records, events, positions, dead, states)
        t0 = time.perf_counter()
        topk = prepared.step.predict() if prepared.step is not None else None
        model_ms = (time.perf_counter() - t0) * 1000
        rows = self.explained_rows(events) if topk is not None else []
        why = self.explain(prepared.step, topk, rows) if rows else None
        out = self.finish(prepared, topk, int(time.time() * 1000), why)
        out.model_ms = model_ms
        if self.windows is not None:
            if out.result is not None:
                self.windows.add_batch(out.events, out.result, out.latencies_ms, out.emitted_at_ms)
            self.windows.add_dead_letters(len(out.dead_letters), out.emitted_at_ms)
        return out


def join_topk(parts: Sequence[TopK]) -> TopK:
    """The top-K of consecutive row ranges (:meth:`BatchProcessor.predict_parts`) as one."""
    if len(parts) == 1:
        return parts[0]
    probs = [p.action_probs for p in parts]
    return TopK(np.concatenate([p.items for p in parts]),
                np.concatenate([p.scores for p in parts]),
                None if any(p is None for p in probs) else np.concatenate(probs))
