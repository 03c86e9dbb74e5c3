"""Handing each consumed message to the streams without four asyncio tasks per message.

Faust's consumer loop (``Consumer._drain_messages``, faust-streaming 0.15) delivers every
message through ``Service.wait_first(callback(message), suspend_flow.wait())``: four tasks
(the delivery, the flow-control wait, the consumer's stopped and crashed events) and an
``asyncio.wait`` per message, so that a delivery blocked while the flow is suspended (a
rebalance) is abandoned. The delivery itself (decode, put into the stream's queue) almost
never blocks. py-spy on a worker: those tasks were about a fifth of its CPU.

:func:`fast_consumer_class` returns a subclass of a Faust consumer class whose loop runs the
delivery coroutine's first step directly. If it completes there — the common case — nothing
else is needed: Faust's own loop would have run that same step first, ahead of the tasks it
races against. If it suspends (flow control, a full stream buffer, a full producer buffer),
the rest of it is raced against the same events exactly as Faust does. Everything else of the
loop (stop checks, read offsets and gaps, commit cadence, yielding to the event loop) follows
Faust's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING

log = logging.getLogger("seqstream.delivery")

# what the loop needs of Faust's consumer; without one of them Faust's own loop is kept
_REQUIRED = ("callback", "getmany", "_read_offset", "_add_gap", "_commit_every", "commit",
             "wait_first", "suspend_flow", "diag", "consumer_stopped_errors", "_stopped",
             "seek")


class _Rest:
    """Awaitable: the rest of a coroutine whose first step ran already and yielded
    ``pending`` (what an awaited future hands to the task running it)."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine, pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self):
        coro, pending = self._coro, self._pending
        while True:
            try:
                yield pending  # to the task that runs us, as the coroutine itself would
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation (or any error) thrown into the task
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(None)
                except StopIteration as stop:
                    return stop.value


async def deliver(consumer, coro: Coroutine) -> None:
    """Run delivery ``coro``: its first step now; if it suspends, the rest raced against the
    consumer's flow suspension (as ``wait_first`` in Faust's loop)."""
    try:
        pending = coro.send(None)
    except StopIteration:
        return
    await consumer.wait_first(_Rest(coro, pending), consumer.suspend_flow.wait())


POSITION_CHECK_S = 2.0  # how often client positions are compared with what was delivered


class JumpGuard:
    """What to do when a partition's next record is not the one after the last delivered.

    Faust declares every such jump a gap: the skipped offsets count as acknowledged, and the
    committed offset moves past them. On a topic without compaction or transactions a jump
    means records this worker never processed, and committing past them loses them. So the
    first time a partition jumps past ``last``, it is fetched again from ``last`` itself
    (:meth:`check` answers ``"refetch"``; the record at ``last`` comes again, a duplicate the
    worker recognises, because after a seek Faust's read offset names the next record to
    read rather than the last one delivered). Only when the fetch from there jumps past
    ``last`` again are the offsets in between absent from the log (transaction markers,
    compaction) and declared a gap (``"gap"``).
    """

    def __init__(self) -> None:
        self.refetched_at: dict = {}  # tp -> the offset it was fetched again from

    def check(self, tp, last: int | None, offset: int) -> str:
        """``"deliver"`` (no jump), ``"refetch"`` or ``"gap"``."""
        if last is None or offset - last <= 1:
            if last is not None and offset == last + 1:
                self.refetched_at.pop(tp, None)  # records follow on: nothing was missing
            return "deliver"
        if self.refetched_at.get(tp) == last:
            del self.refetched_at[tp]
            return "gap"
        self.refetched_at[tp] = last
        return "refetch"


def fast_consumer_class(base: type) -> type:
    """``base`` (a Faust consumer class) with the direct-delivery loop."""

    class FastDeliveryConsumer(base):  # type: ignore[misc, valid-type]
        async def _refetch_undelivered(self, read_offsets, jumps: JumpGuard) -> None:
            """Between two fetches every record the client returned has been delivered or
            skipped on purpose, so a partition whose client position is past the record after
            the last one delivered lost records between the client and the streams (Faust's
            getmany drops records of a partition it is not counting as active). Fetch those
            again, once per position (a transaction marker also moves the position)."""
            for tp in list(self.assignment()):
                last = read_offsets.get(tp)
                if last is None or tp.topic in self.app.tables.changelog_topics:
                    continue
                try:
                    pos = await self.position(tp)
                except Exception:  # noqa: BLE001 - not assigned any more: nothing to do
                    continue
                if pos is None or pos <= last + 1:
                    continue
                if jumps.check(tp, last, pos) != "refetch":
                    continue  # fetched again from there before: the log has nothing there
                log.warning("%s: the client is at offset %d but %d was the last delivered; "
                            "fetching from %d again", tp, pos, last, last)
                await self.seek(tp, last)

        async def _drain_messages(self, fetcher) -> None:  # noqa: C901 - one loop, as Faust's
            missing = [n for n in _REQUIRED if not hasattr(self, n)]
            if missing:  # another Faust: keep its own loop
                log.warning("fast delivery off (Faust consumer lacks %s)", ", ".join(missing))
                return await super()._drain_messages(fetcher)
            callback = self.callback
            consumer_stopped = self._stopped.is_set
            fetcher_stopped = fetcher._stopped.is_set
            read_offsets = self._read_offset
            suspended = self.suspend_flow.is_set
            acks_enabled_for = self.app.topics.acks_enabled_for
            commit_every = self._commit_every
            fetching = CONSUMER_FETCHING
            jumps = JumpGuard()
            loop_time = asyncio.get_running_loop().time
            next_check = loop_time() + POSITION_CHECK_S
            since_yield = 0
            try:
                while not (consumer_stopped() or fetcher_stopped()):
                    self.diag.set_flag(fetching)
                    records = self.getmany(timeout=1.0)
                    await asyncio.sleep(0)  # never hold the loop between two fetches
                    if self.should_stop:
                        self.diag.unset_flag(fetching)
                        continue
                    refetching: set = set()
                    async for tp, message in records:
                        since_yield += 1
                        if since_yield > 100:
                            await asyncio.sleep(0)
                            since_yield = 0
                        if tp in refetching:
                            continue  # fetched again from the first missing offset
                        offset = message.offset
                        last = read_offsets[tp]
                        if last is not None and offset < last:
                            continue  # already delivered (Faust drops these too)
                        if last and acks_enabled_for(message.topic):
                            action = jumps.check(tp, last, offset)
                            if action == "refetch":
                                log.warning("%s: offset %d follows %d; fetching from %d again "
                                            "rather than skip unprocessed records", tp,
                                            offset, last, last)
                                refetching.add(tp)
                                await self.seek(tp, last)
                                continue
                            if action == "gap":  # absent from the log (markers, compaction)
                                await self._add_gap(tp, last + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if suspended():
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await deliver(self, callback(message))
                        read_offsets[tp] = offset
                    self.diag.unset_flag(fetching)
                    if loop_time() >= next_check and self.flow_active:
                        next_check = loop_time() + POSITION_CHECK_S
                        await self._refetch_undelivered(read_offsets, jumps)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    log.info("broker stopped the consumer, shutting down")
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    return
                raise
            except Exception as exc:
                log.exception("delivering messages raised: %r", exc)
                raise
            finally:
                self.diag.unset_flag(fetching)

    return FastDeliveryConsumer
