"""stream_app.kafka.delivery: a message's delivery coroutine run directly, or raced as Faust does.

Pure asyncio (no broker): the consumer is a bare ``mode.Service`` with Faust's
``suspend_flow`` event, so ``wait_first`` is mode's own. The worker runs this path in every
broker test (fast delivery is on by default); test_pipeline also runs with it off.
"""

from __future__ import annotations

import asyncio

import pytest
from mode import Service

from stream_app.kafka.delivery import deliver


class Consumer(Service):
    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()
        self.raced = 0

    async def wait_first(self, *coros, **kw):
        self.raced += 1
        return await super().wait_first(*coros, **kw)


def run(coro):
    return asyncio.run(coro)


def test_delivery_that_completes_at_once_is_not_raced():
    async def main():
        consumer, got = Consumer(), []

        async def handler(x):
            got.append(x)

        for i in range(3):
            await deliver(consumer, handler(i))
        return consumer.raced, got

    assert run(main()) == (0, [0, 1, 2])


def test_delivery_that_waits_finishes_in_the_race():
    async def main():
        consumer, got = Consumer(), []
        room = asyncio.get_running_loop().create_future()

        async def handler(x):
            got.append(("start", x))
            await room  # a full stream buffer
            got.append(("put", x))

        asyncio.get_running_loop().call_later(0.01, room.set_result, None)
        await deliver(consumer, handler(7))
        return consumer.raced, got

    assert run(main()) == (1, [("start", 7), ("put", 7)])


def test_delivery_after_several_waits_and_sleeps():
    async def main():
        consumer, got = Consumer(), []

        async def handler():
            for i in range(3):
                await asyncio.sleep(0)
                got.append(i)
            await asyncio.sleep(0.005)
            got.append("done")

        await deliver(consumer, handler())
        return got

    assert run(main()) == [0, 1, 2, "done"]


def test_suspended_flow_abandons_a_waiting_delivery():
    async def main():
        consumer, got = Consumer(), []
        never = asyncio.get_running_loop().create_future()

        async def handler():
            try:
                await never  # flow control: blocked until the rebalance is over
                got.append("delivered")
            except asyncio.CancelledError:
                got.append("cancelled")
                raise

        asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
        await deliver(consumer, handler())
        await asyncio.sleep(0)
        return got

    assert run(main()) == ["cancelled"]


@pytest.mark.parametrize("wait_first", [False, True])
def test_errors_reach_the_loop(wait_first):
    async def main():
        consumer = Consumer()

        async def handler():
            if wait_first:
                await asyncio.sleep(0.001)
            raise ValueError("bad message")

        await deliver(consumer, handler())

    with pytest.raises(ValueError, match="bad message"):
        run(main())


def test_a_jump_is_fetched_again_before_it_counts_as_a_gap():
    """Offsets 0, 1, 2, then 10: Faust would declare 3..10 a gap and commit past records it
    never delivered. The guard asks for a fetch from 2 first (2 comes again, a recognised
    duplicate); only a fetch from there that jumps again makes 3..9 a gap (records absent
    from the log)."""
    from stream_app.kafka.delivery import JumpGuard

    g = JumpGuard()
    assert [g.check("p0", last, off) for last, off in [(None, 0), (0, 1), (1, 2)]] == \
        ["deliver"] * 3
    assert g.check("p0", 2, 10) == "refetch"
    assert g.check("p0", 2, 2) == "deliver"  # fetched again from 2
    assert g.check("p0", 2, 3) == "deliver"  # and 3 follows: nothing was missing
    assert g.check("p0", 3, 9) == "refetch"
    assert g.check("p0", 3, 3) == "deliver"  # fetched again from 3 ...
    assert g.check("p0", 3, 9) == "gap"  # ... and still 9 follows: 4..8 are not in the log
    assert g.check("p0", 9, 12) == "refetch"  # a later jump is checked again
    assert g.check("p1", None, 50) == "deliver"  # first record after a seek: no jump
