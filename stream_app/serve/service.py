"""Requests answered from the worker's live state, batched onto the stream's model thread.

    request ──► ServingService.recommend / .rank ──► queue
                                                       │  drain: up to serve_batch_size
                                                       ▼  requests, one batch at a time
          read each user's state from the table store (on the event loop: every event
          the worker has published is in it, read-your-writes)
                 ├─ unknown user ──► cold start: PopularItems (no model call)
                 └─ known user ───► one urgent job on the worker's model thread
                                    (agent.executor, stream_app.worker.model_thread): one
                                    predict_topk for the recommendations, one call scoring
                                    the rank requests' candidates only
                                       │
                                       ▼  records built on the loop, futures answered

Where the model runs (``serve_model_thread``):

- ``shared``: on the worker's single model thread (``agent.executor``), ahead of the
  stream's waiting work. The stream's model call is queued as sub-batches of
  ``serve_stream_part_rows`` events, so a request batch waits for at most the one sub-batch
  on the thread, never for a whole event batch; the stream's calls are delayed by the request
  batches (``serve_batch_size`` bounds each) and the two never contend for the cores.
- ``own``: on a thread of its own, beside the stream's model calls (torch and numpy release
  the GIL): a request waits for no event batch; the two calls share the cores. A worker
  that adds items to its model at run time (the items feed) always uses ``shared``, the
  thread those additions run on.

The model and the states are taken together on the loop, between two event batches, so a
hot swap never mixes one model with another's vocabulary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from model_core.sequence_state import UserState
from model_core.serving import (
    PopularItems,
    UserSequence,
    blend,
    candidate_scores,
    default_alpha,
    finite_prefix,
    recommend,
)
from schemas.actions import ACTIONS
from schemas.serving import Ranking, RankRequest, Recommendations

log = logging.getLogger("seqstream.serve")


@dataclass(slots=True)
class _Pending:
    user_id: str
    future: asyncio.Future
    # recommendations
    k: int = 0
    exclude_seen: bool = False
    actions: bool = False
    explain: bool = False
    # rank
    rank: RankRequest | None = None
    seq: UserSequence | None = field(default=None)
    #: filled with the request's ms waiting ("queue"; "thread": the part of it spent waiting
    #: for the model thread) and its batch's model call ("model")
    timing: dict | None = None
    submitted: float = field(default_factory=time.perf_counter)


def _explanations(model, seq: UserSequence, items) -> list[dict]:
    """The first items' explanations for one live sequence; [] when the model has none."""
    from model_core.explain import describe
    from model_core.predictor import SequenceBatch

    batch = SequenceBatch([seq.items], [seq.actions], [seq.timestamps_ms])
    try:
        return describe(model, batch, items)
    except Exception as e:  # noqa: BLE001 - an explanation never costs the answer
        log.warning("explanation failed for model %s: %r", getattr(model, "version", "?"), e)
        return []


def _timed(p: _Pending, started: float, model_s: float, handed: float | None = None) -> None:
    if p.timing is not None:
        p.timing["queue"] = (started - p.submitted) * 1000.0
        if handed is not None:
            p.timing["thread"] = (started - handed) * 1000.0
        p.timing["model"] = model_s * 1000.0


def _round(values) -> list[float]:
    return np.round(np.asarray(values, dtype=np.float64), 6).tolist()


class ServingService:
    """Answers :class:`Recommendations` and :class:`Ranking` for one worker.

    ``agent``: the worker's :class:`~stream_app.worker.agent.WorkerAgent` (its table, its
    processor's model, its model thread, its hot-swap adapter). ``served_by``: this worker's
    advertised URL, put in every answer."""

    def __init__(self, agent, settings, served_by: str = "") -> None:
        self.agent = agent
        self.settings = settings
        self.served_by = served_by
        self._popular_of(agent.processor.model)
        own = settings.serve_model_thread == "own" and agent.item_encoder is None
        self.executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqstream-serve")
                         if own else agent.executor)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self.requests = 0
        self.model_calls = 0
        self.batches = 0

    # ------------------------------------------------------------------ the stream's side
    def _popular_of(self, model) -> PopularItems:
        """The popularity counts in ``model``'s vocabulary: after a hot swap to a model with
        another vocabulary they start again (from its training counts when it has them)."""
        if getattr(self, "_popular_vocab", None) is not model.vocab:
            self._popular_vocab = model.vocab
            self.popular = PopularItems(len(model.vocab),
                                        self.settings.serve_popular_half_life_events,
                                        seed=getattr(model, "item_counts", None))
        return self.popular

    def observe_batch(self, out) -> None:
        """A processed batch's events counted for the cold-start answer (the agent calls it
        with each batch's :class:`~stream_app.worker.processor.BatchOutput`)."""
        if out.events:
            model = self.agent.processor.model
            index = model.vocab.index
            self._popular_of(model).add(np.fromiter((index(e.item_id) for e in out.events),
                                         dtype=np.int64, count=len(out.events)))

    # ------------------------------------------------------------------ requests
    async def recommend(self, user_id: str, k: int, exclude_seen: bool = False,
                        actions: bool = False, explain: bool = False,
                        timing: dict | None = None) -> Recommendations:
        """``timing``: filled with the ms the request waited ("queue": for its batch and the
        model thread) and its batch's model call took ("model")."""
        return await self._submit(_Pending(user_id, self._future(), k=k,
                                           exclude_seen=exclude_seen, actions=actions,
                                           explain=explain, timing=timing))

    async def rank(self, request: RankRequest, timing: dict | None = None) -> Ranking:
        return await self._submit(_Pending(request.user_id, self._future(), rank=request,
                                           timing=timing))

    @staticmethod
    def _future() -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, pending: _Pending):
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        self.requests += 1
        self._queue.put_nowait(pending)
        return await pending.future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.executor is not self.agent.executor:
            self.executor.shutdown(wait=False)

    async def _drain(self) -> None:
        """One request batch at a time: the next one gathers while this one is scored."""
        queue = self._queue
        size = self.settings.serve_batch_size
        wait_s = self.settings.serve_batch_wait_ms / 1000.0
        while True:
            batch = [await queue.get()]
            if wait_s > 0 and queue.qsize() < size - 1:
                await asyncio.sleep(wait_s)
            while len(batch) < size and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._serve(batch)
            except Exception as e:  # noqa: BLE001 - each waiting request gets the error
                log.error("serving batch of %d requests failed: %r", len(batch), e,
                          exc_info=True)
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)

    # ------------------------------------------------------------------ one batch
    def read_sequence(self, user_id: str) -> UserSequence | None:
        """The user's live sequence from the table store (None: no state here, or erased or
        expired), in the current model's vocabulary."""
        # the table key: the user's pseudonym when the worker keeps those (worker/privacy.py)
        raw = self.agent.table.data.get(self.agent.processor.state_key(user_id))
        if not raw:
            return None
        st = self.agent.swapper.adapt(UserState.decode(raw))
        return UserSequence(st.items, st.actions, st.timestamps_ms)

    async def _serve(self, batch: list[_Pending]) -> None:
        processor = self.agent.processor
        model, version = processor.model, processor.model_version
        vocab = model.vocab
        live: list[_Pending] = []
        for p in batch:
            if p.future.done():  # the caller gave up (timeout)
                continue
            p.seq = self.read_sequence(p.user_id)
            if p.seq is None or not len(p.seq):
                _timed(p, time.perf_counter(), 0.0)
                p.future.set_result(self._cold(p, version, vocab))
            else:
                live.append(p)
        if not live:
            return
        recs = [p for p in live if p.rank is None]
        ranks = [p for p in live if p.rank is not None]
        cands = [vocab.indices(p.rank.items) for p in ranks]
        k_max = max((p.k for p in recs), default=0)

        def job():
            started = time.perf_counter()
            out_recs = {}
            for excl in (False, True):
                group = [p for p in recs if p.exclude_seen is excl]
                if group:
                    out_recs[excl] = (group, recommend(model, [p.seq for p in group], k_max,
                                                       excl))
            out_ranks = candidate_scores(model, [p.seq for p in ranks], cands)
            why = {}
            for group, topk in out_recs.values():
                for row, p in enumerate(group):
                    if p.explain:
                        why[id(p)] = _explanations(model, p.seq, topk.items[row][:min(p.k, 3)])
            for p, c, model_scores in zip(ranks, cands, out_ranks, strict=True):
                if p.rank.explain:  # the answer's first 3 items the model knows
                    order = self._blend(p.rank, model_scores)[0]
                    known = order[~np.isnan(model_scores[order])]
                    why[id(p)] = _explanations(model, p.seq, np.asarray(c)[known[:3]])
            return out_recs, out_ranks, why, started, time.perf_counter() - started

        self.batches += 1
        self.model_calls += 1
        # urgent: before the stream's waiting sub-batches (own thread: plain FIFO)
        submit = getattr(self.executor, "submit_urgent", self.executor.submit)
        handed = time.perf_counter()
        out_recs, out_ranks, why, started, model_s = await asyncio.wrap_future(submit(job))
        for p in live:
            _timed(p, started, model_s, handed)
        for group, topk in out_recs.values():
            for row, p in enumerate(group):
                if p.future.done():
                    continue
                items, scores = topk.items[row], topk.scores[row]
                n = min(p.k, finite_prefix(items, scores))
                probs = (dict(zip(ACTIONS, _round(topk.action_probs[row]), strict=True))
                         if p.actions and topk.action_probs is not None else {})
                p.future.set_result(Recommendations(
                    p.user_id, vocab.item_ids(items[:n].tolist()), _round(scores[:n]), probs,
                    version, len(p.seq), False, p.exclude_seen, self.served_by,
                    why.get(id(p)) if p.explain else None))
        for p, model_scores in zip(ranks, out_ranks, strict=True):
            if not p.future.done():
                p.future.set_result(self._ranking(p, model_scores, version, len(p.seq), False,
                                                  why.get(id(p)) if p.rank.explain else None))

    @staticmethod
    def _blend(req: RankRequest, model_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                    float]:
        """(order, blended, alpha) of one rank request (:func:`model_core.serving.blend`)."""
        alpha = req.alpha if req.alpha is not None else default_alpha(req.scores is not None)
        caller = np.asarray(req.scores, dtype=np.float64) if req.scores is not None else None
        return (*blend(model_scores, caller, alpha), alpha)

    def _ranking(self, p: _Pending, model_scores: np.ndarray, version: str, seq_len: int,
                 cold: bool, why: list[dict] | None = None) -> Ranking:
        req = p.rank
        order, blended, alpha = self._blend(req, model_scores)
        ms = model_scores[order]
        return Ranking(p.user_id, [req.items[i] for i in order.tolist()],
                       _round(blended[order]),
                       [None if np.isnan(v) else round(float(v), 6) for v in ms.tolist()],
                       version, seq_len, cold, alpha, self.served_by, why)

    def _cold(self, p: _Pending, version: str, vocab):
        """The answer for a user with no live sequence here: popular items."""
        if p.rank is not None:
            return self._ranking(p, self._popular_of(self.agent.processor.model).scores_of(vocab.indices(p.rank.items)),
                                 version, 0, True)
        idx, counts = self._popular_of(self.agent.processor.model).top(p.k)
        return Recommendations(p.user_id, vocab.item_ids(idx.tolist()), _round(counts), {},
                               version, 0, True, p.exclude_seen, self.served_by)


__all__ = ["ServingService"]
