"""Writes outside a batch (the idle-window timer, the shutdown flush) wait for the tables.

While a rebalance recovers its tables, Faust resumes the flow (to read the changelogs) and
already reports the new assignment, so the fence let the idle timer through: it could read a
taken-over partition's window record from a partly recovered table and publish its windows
with fewer events than the owner had published before (the latest emitted wins), or the
retention sweep expire from it. Found by reading Faust's recovery (``Recovery._restart_recovery``
resumes the flow before it waits for the active changelogs); no chaos run has shown it yet
(their audit counts such windows: ``windows_shrunk``).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from stream_app.kafka.fencing import MembershipFence


class _Flow:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


def _app():
    """What the fence reads of a Faust app: its generation, its flow control and the count
    of rebalances started (Faust increments it at the revocation that starts one)."""
    return SimpleNamespace(consumer_generation_id=1, flow_control=_Flow(), rebalancing_count=0)


def _fence(app) -> MembershipFence:
    async def make():
        return MembershipFence(app, session_timeout_s=6.0, heartbeat_interval_s=0.5)
    return asyncio.run(make())


def test_no_write_outside_a_batch_while_a_rebalance_recovers_its_tables():
    app = _app()
    fence = _fence(app)
    app.rebalancing_count = 1  # the first rebalance: tables not recovered yet
    assert not fence.may_write_now()
    assert not fence.may_write_now(rebalancing_ok=True)
    fence.on_new_generation()  # on_rebalance_complete: recovery done
    assert fence.tables_recovered
    assert fence.may_write_now() and fence.may_write_now(rebalancing_ok=True)

    # a second rebalance starts; Faust resumes the flow to read the changelogs while the
    # new assignment is already reported: the flow is active, the tables are partial
    app.rebalancing_count = 2
    app.consumer_generation_id = 2
    assert app.flow_control.is_active()
    assert not fence.tables_recovered
    assert not fence.may_write_now()
    assert not fence.may_write_now(rebalancing_ok=True)  # no shutdown flush from them either

    fence.on_new_generation()
    assert fence.may_write_now()


def test_the_other_conditions_still_hold():
    app = _app()
    fence = _fence(app)
    fence.on_new_generation()
    app.flow_control.active = False  # suspended, not recovering: only the shutdown flush
    assert not fence.may_write_now()
    assert fence.may_write_now(rebalancing_ok=True)
    app.flow_control.active = True
    fence.lost_generation = app.consumer_generation_id  # expelled after a stall
    assert not fence.may_write_now(rebalancing_ok=True)
