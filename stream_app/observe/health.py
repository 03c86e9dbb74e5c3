"""The worker's health: is it live, is it ready, can it reach the broker.

``GET /v1/live`` (also ``/v1/health``) answers 200 while the worker's event loop runs (a stalled or wedged process
does not answer at all, which is what a liveness probe should see). ``GET /v1/ready``
answers 200 only when the worker can do its job — partitions assigned and recovered, the
broker reachable, its group membership not lost — and 503 otherwise, with the reasons in a
JSON body; a load balancer or Kubernetes then stops counting on it.

The broker is probed every ``probe_s`` seconds with a metadata request on the producer's
connection. While it cannot be reached the worker is not ready, says so once (the Kafka
client's own retry lines are rate-limited, stream_app.observe.logs), and after
``broker_lost_exit_s`` seconds (0 = never) exits non-zero with one line naming the broker: a
supervisor restarts it, and the restart resumes from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time

from stream_app.kafka.end_offsets import LogKeeper, reported_end_offsets
from stream_app.kafka.faust_compat import aiokafka_producer

log = logging.getLogger("seqstream.health")


class Health:
    def __init__(self, app, settings, fence, probe_s: float = 2.0) -> None:
        self.app, self.settings, self.fence = app, settings, fence
        self.probe_s = probe_s
        self.assigned = False  # a rebalance completed with this worker in the group
        self.unreachable_since: float | None = None
        self.last_error = ""
        self.log_keeper = LogKeeper()  # a broker back without its data: exit, not go on

    # ------------------------------------------------------------------ state
    def reasons(self) -> list[str]:
        """Why the worker is not ready (empty: ready)."""
        out = []
        if not self.assigned:
            out.append("not yet assigned partitions (joining the group or recovering state)")
        elif not self.app.flow_control.is_active():
            out.append("rebalancing")
        if self.unreachable_since is not None:
            out.append(f"broker {self.settings.broker_url} unreachable for "
                       f"{time.monotonic() - self.unreachable_since:.0f} s: {self.last_error}")
        if self.fence.suspect_since is not None:
            out.append("stalled; group membership being confirmed")
        if (self.fence.lost_generation is not None
                and self.fence.generation == self.fence.lost_generation):
            out.append("group membership lost; rejoining")
        return out

    # ------------------------------------------------------------------ broker probe
    async def _probe(self) -> None:
        producer = aiokafka_producer(self.app)
        client = producer.client
        await asyncio.wait_for(client.fetch_all_metadata(), timeout=max(1.0, self.probe_s * 2))

    async def watch_broker(self, on_lost) -> None:
        """Background task: probe the broker; ``on_lost(message)`` once the outage is longer
        than ``broker_lost_exit_s``."""
        limit = self.settings.broker_lost_exit_s
        while True:
            await asyncio.sleep(self.probe_s)
            try:
                await self._probe()
            except Exception as e:  # noqa: BLE001 - any failure means "not reachable"
                self.last_error = repr(e)
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                    log.error("broker %s unreachable (%s); not ready until it answers%s",
                              self.settings.broker_url, self.last_error,
                              f"; exiting after {limit:.0f} s" if limit else "")
                down = time.monotonic() - self.unreachable_since
                if limit and down >= limit:
                    on_lost(f"broker {self.settings.broker_url} unreachable for {down:.0f} s "
                            f"(SEQSTREAM_BROKER_LOST_EXIT_S={limit:g}); last error: "
                            f"{self.last_error}")
                    return
                continue
            if self.unreachable_since is not None:
                log.warning("broker %s reachable again after %.0f s", self.settings.broker_url,
                            time.monotonic() - self.unreachable_since)
                self.unreachable_since = None
            lost = await self._log_went_back()
            if lost:
                on_lost(lost)
                return

    async def _log_went_back(self) -> str | None:
        """Why the broker is known to have lost records (a partition of the events topic
        ends before where it ended earlier), or None."""
        topic = self.settings.topic("events")
        try:
            ends = await asyncio.wait_for(reported_end_offsets(self.app, topic),
                                          timeout=max(1.0, self.probe_s * 2))
        except Exception:  # noqa: BLE001 - unknown now: asked again at the next probe
            return None
        back = self.log_keeper.check(ends)
        if not back:
            return None
        tp, before, now = back[0]
        return (f"broker {self.settings.broker_url} came back without its data: "
                f"{tp.topic} partition {tp.partition} ends at offset {now}, it ended at "
                f"{before} before ({len(back)} partition(s) went back; a broker restarted "
                f"with memory storage?); restart the workers against it")

    # ------------------------------------------------------------------ web
    def install_pages(self) -> None:
        from faust import web

        health = self

        @self.app.page("/v1/live")
        async def live(view: web.View, request: web.Request) -> web.Response:
            return view.json({"live": True})

        @self.app.page("/v1/health")  # the serving API's name for liveness (stream_app.serve)
        async def health_(view: web.View, request: web.Request) -> web.Response:
            return view.json({"live": True})

        @self.app.page("/v1/ready")
        async def ready(view: web.View, request: web.Request) -> web.Response:
            reasons = health.reasons()
            return view.json({"ready": not reasons, "reasons": reasons},
                             status=200 if not reasons else 503)
