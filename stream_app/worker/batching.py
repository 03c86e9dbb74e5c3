"""Micro-batches from a Faust stream, with the next batch filling while one is processed.

Faust's ``Stream.take_events(max_, within)`` stops taking events while the caller holds a
batch: delivery (Faust's per-event path: the conductor, the channel, the stream's iterator)
and processing then alternate, and whatever the worker awaits — the model on its thread, the
broker's acknowledgements of predictions and changelog — is time in which no event is
delivered. :func:`take_batches` keeps the stream's passive drainer adding events to the next
batch meanwhile (double buffering), and waits only when that batch is full (back-pressure at
``max_``).

Acknowledgement: a batch's events are acked after the caller has finished with the batch
(when the generator is resumed), in order, so the input offsets committed never pass an event
whose effects are not durable (at-least-once). With ``ack=False`` the caller acks each event
itself (``stream.ack``), e.g. once the broker has acknowledged the batch's outputs while the
next batch is already being processed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from stream_app.kafka.faust_compat import iterate_passively, remove_processor


async def take_batches(stream, max_: int, within: float, ack: bool = True,
                       ) -> AsyncIterator[list]:
    """Yield lists of up to ``max_`` events: when full, or ``within`` seconds after the
    batch's first event arrived (events that arrived while the previous batch was being
    processed have waited already: a backlog is taken without a further wait)."""
    if max_ < 1:
        raise ValueError(f"batch size must be at least 1, got {max_}")
    filling: list = []
    first_at = 0.0  # loop time of the filling batch's first event
    loop = asyncio.get_running_loop()
    full = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def add(value):
        nonlocal first_at
        # runs in the stream's drainer, once per delivered event, with it as current event
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_batches: an event arrived without a current event")
        while len(filling) >= max_:  # the next batch is full: wait for it to be taken
            room.clear()
            await stream.wait(room)
        if not filling:
            first_at = loop.time()
        filling.append(event)
        if len(filling) >= max_:
            full.set()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked here, after the caller is done with each batch
    stream.add_processor(add)
    iterate_passively(stream, aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not filling:
                await stream.wait_for_stopped(full, timeout=within)
                continue
            left = within - (loop.time() - first_at)
            if left > 0 and not full.is_set():
                await stream.wait_for_stopped(full, timeout=left)
            # swap, with no await in between: the drainer goes on filling a new batch
            batch = filling.copy()
            filling.clear()
            full.clear()
            room.set()
            yield batch
            # only once the caller is done: a batch whose processing raised is never acked
            if ack:
                for event in batch:
                    await stream.ack(event)
    finally:
        stream.enable_acks = enable_acks
        remove_processor(stream, add)
