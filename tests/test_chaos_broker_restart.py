"""``seqstream chaos --scenario broker-restart``: the broker stops and comes back.

The embedded Tansu keeps its data in memory (its build has no file or SQL storage engine):
a restarted broker is empty. What can be checked, and is: every worker gives up on the lost
broker with exit 69 and a line naming it — when it stays away past the exit window, and when
it comes back empty within it (before: the workers reconnected and went on with their old
state against the new, empty log) — and a fleet started again with the broker processes
everything sent afterwards exactly (no event missing or twice in a state, sequences and
window counts as a fault-free run of those events).
"""

from __future__ import annotations

import json

import pytest


@pytest.mark.broker
def test_chaos_broker_restart(tmp_path):
    from stream_app.ops.chaos import run_chaos

    rep = run_chaos(3000, kills=2, seed=4, scenario="broker-restart", rate=1500,
                    workdir=tmp_path, min_gap_s=0.3, max_gap_s=1.0, log=lambda *a: None)
    d = json.dumps(rep.to_dict())
    assert rep.kills == 2 and len(rep.worker_exits) == 2, d
    assert rep.worker_exits and rep.broker_loss_handled, d  # exit 69, the broker named
    back_empty, stayed_away = (why for _name, _code, _named, why in rep.worker_exits)
    assert "came back without its data" in back_empty, d
    assert "unreachable for" in stayed_away, d
    assert 0 < rep.lost_with_broker < 3000, d
    assert rep.audited_events == 3000 - rep.lost_with_broker, d
    assert rep.missing == 0 and rep.duplicated_in_state == 0, d
    assert rep.mismatched_sequences == 0, d
    assert rep.metrics_match and rep.metrics_events == rep.audited_events, d
    assert rep.ok, d


def test_broker_restart_needs_its_own_broker():
    from stream_app.ops.chaos import run_chaos

    with pytest.raises(ValueError, match="own embedded broker"):
        run_chaos(10, scenario="broker-restart", broker_url="kafka://127.0.0.1:1")
