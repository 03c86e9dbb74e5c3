"""Fencing a worker's writes by its consumer-group membership.

A worker that stalls longer than the group's session timeout (SIGSTOP, a frozen VM, a long
pause) wakes up as a *zombie*: the group has given its partitions to another worker, which
has gone on processing them, but the zombie still holds the batch it was working on and
does not know yet. Were it to publish that batch, its older state for a user would land
on the changelog after the new owner's newer one (recovery and standbys apply the last
record: the user loses events), and its window records would overwrite newer ones.

:class:`MembershipFence` decides, before a batch's outputs and states are written, whether
this worker may write them:

- events delivered in an earlier group generation are never processed (a rebalance seeks
  every assigned partition back to its committed offset, so they come again — here or at
  the new owner);
- the generation must not have changed since the batch's events were delivered;
- after a stall (the event loop did not run for more than half the session timeout), the
  membership is confirmed with the group coordinator (a heartbeat with the worker's
  generation and member id) before anything is written; until it is confirmed, or the
  generation has changed (then the batch is dropped unwritten and unacknowledged), the
  worker waits.

What remains: records already handed to the producer when the process froze are sent when
it resumes. Only Kafka transactions fence those; the window between handing a batch to the
producer and its send is milliseconds, against the seconds of a stall.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

log = logging.getLogger("seqstream.fencing")


class MembershipFence:
    def __init__(self, app, session_timeout_s: float, heartbeat_interval_s: float) -> None:
        self.app = app
        self.stall_s = max(0.5, session_timeout_s / 2.0)
        self.session_timeout_s = session_timeout_s
        self.poll_s = max(0.1, min(heartbeat_interval_s, 1.0))
        self.last_tick = time.monotonic()
        self.suspect_since: float | None = None  # a stall seen, membership not confirmed
        self.lost_generation: int | None = None  # the coordinator no longer knows us in it
        self._settling = asyncio.Lock()
        # Faust's count of rebalances started (``app.rebalancing_count``) when the last one
        # completed (its tables recovered); None before the first completes
        self._recovered_at: int | None = None
        self.dropped_batches = 0
        self.dropped_events = 0

    # ------------------------------------------------------------------ stall detection
    def _note_stall(self) -> None:
        now = time.monotonic()
        gap = now - self.last_tick
        if gap > self.stall_s and self.suspect_since is None:
            self.suspect_since = now
            log.warning("the worker did not run for %.1f s (session timeout %.1f s): its "
                        "group membership is confirmed before it writes again",
                        gap, self.session_timeout_s)
        self.last_tick = now

    async def watch(self) -> None:
        """Background task: notices stalls of the event loop and settles them with the
        coordinator even when no batch comes (idle windows and the shutdown flush wait for
        it)."""
        while True:
            self._note_stall()
            if self.suspect_since is not None:
                await self._settle(self.generation)
            await asyncio.sleep(0.2)

    def on_new_generation(self) -> None:
        """A rebalance completed (its tables are recovered): this generation's membership
        is fresh."""
        self.suspect_since = None
        self.last_tick = time.monotonic()
        self._recovered_at = self._rebalances_started()

    def _rebalances_started(self) -> int:
        # incremented by Faust at the revocation that starts each rebalance (synchronously,
        # in aiokafka's rebalance listener), before any partition of it is recovered
        return int(getattr(self.app, "rebalancing_count", 0))

    @property
    def tables_recovered(self) -> bool:
        """True when the tables hold the recovered state of the current assignment: a
        rebalance completed (:meth:`on_new_generation`) and no other has started since.

        While a rebalance recovers its tables, Faust resumes the flow (to read the
        changelogs) and already reports the new assignment: a table read then can return a
        partition's value as it was some changelog records ago."""
        return self._recovered_at is not None and self._rebalances_started() == self._recovered_at

    # ------------------------------------------------------------------ the checks
    @property
    def generation(self) -> int:
        return self.app.consumer_generation_id

    def current(self, events: list) -> tuple[list, list]:
        """Split ``events`` into (delivered in the current generation, earlier ones)."""
        gen = self.generation
        fresh, stale = [], []
        for e in events:
            (fresh if e.message.generation_id == gen else stale).append(e)
        return fresh, stale

    async def may_write(self, generation: int) -> bool:
        """True when this worker may write the outputs of a batch delivered in
        ``generation``; False when the batch must be dropped unwritten (then
        :meth:`release` it)."""
        self._note_stall()
        if self.suspect_since is not None:
            await self._settle(generation)
        return self.generation == generation and generation != self.lost_generation

    async def _settle(self, generation: int) -> None:
        """After a stall: ask the coordinator until it confirms the membership of
        ``generation`` (suspicion cleared) or denies it (``lost_generation``)."""
        async with self._settling:
            while self.suspect_since is not None:
                if self.generation != generation:
                    return  # a rebalance completed meanwhile: that batch is stale anyway
                code = await self._heartbeat(generation)
                if code == 0 and self.generation == generation:
                    log.warning("membership confirmed after the stall (generation %s)",
                                generation)
                    self.suspect_since = None
                    self.last_tick = time.monotonic()
                    return
                if code is not None:  # expelled, stale generation, or a rebalance under way
                    # the rebalance that follows seeks the partitions back to their committed
                    # offsets; its revocation waits for the held batch, so that is released
                    log.warning("membership of generation %s lost during the stall "
                                "(heartbeat error %s): nothing is written until the group "
                                "has rebalanced", generation, code)
                    self.lost_generation = generation
                    self.suspect_since = None
                    return
                await asyncio.sleep(self.poll_s)  # the coordinator did not answer: again

    def may_write_now(self, rebalancing_ok: bool = False) -> bool:
        """For writes outside a batch (idle windows; the shutdown flush with
        ``rebalancing_ok``, as Faust suspends the flow when it stops): no stall unconfirmed,
        membership not known lost, no rebalance under way, and the tables recovered since
        the last rebalance began (writes outside a batch read state from the table: the
        idle timer could publish — or the retention sweep expire — from a partition's
        value as it was some changelog records ago, e.g. a window with fewer events than
        its owner had already published, which would then be the latest emitted).

        A clean stop does not start a rebalance (leaving the group revokes nothing
        locally), so the shutdown flush after a completed rebalance is allowed."""
        self._note_stall()
        return (self.suspect_since is None and self.generation != self.lost_generation
                and self.tables_recovered
                and (rebalancing_ok or self.app.flow_control.is_active()))

    @staticmethod
    def release(events: Iterable) -> None:
        """Let go of events that will not be processed here, without acknowledging them:
        their offsets are never marked done (nothing is committed past them), and a
        rebalance does not wait for them (it waits for every delivered message that is
        neither acknowledged nor released)."""
        for e in events:
            e.message.acked = True

    async def _heartbeat(self, generation: int) -> int | None:
        """The coordinator's error code for a heartbeat as ``generation`` (0 = a member in
        good standing), or None when it could not be asked."""
        from aiokafka.consumer.group_coordinator import HeartbeatRequest

        try:
            thread = self.app.consumer._thread
            coordinator = thread._ensure_consumer()._coordinator
        except AttributeError:  # not the aiokafka driver: nothing to ask
            return 0
        member = coordinator.member_id

        async def beat():
            req = HeartbeatRequest(coordinator.group_id, generation, member)
            return (await coordinator._send_req(req)).error_code

        try:
            return await asyncio.wait_for(thread.call_thread(beat), self.session_timeout_s)
        except Exception as e:  # noqa: BLE001 - any failure to ask means "ask again"
            log.warning("membership check failed: %r", e)
            return None

    def dropped(self, n_events: int, reason: str) -> None:
        self.dropped_batches += 1
        self.dropped_events += n_events
        log.warning("batch of %d events not written (%s); the partitions' owner processes "
                    "them again from the committed offsets", n_events, reason)
