"""``seqstream bench --learner``: a worker and a learner without lockstep, side by side."""

from __future__ import annotations

import pytest


@pytest.mark.broker
def test_learner_bench_measures_stream_and_learner(tmp_path):
    from stream_app.ops.bench_learner import (
        LearnerBenchConfig,
        format_learner_table,
        run_learner_bench,
    )

    cfg = LearnerBenchConfig(model="markov", events=1200, schedules=("every=100",),
                             work_dir=str(tmp_path))
    summary = run_learner_bench(cfg, log=lambda msg: None)
    (run,) = summary["runs"]
    assert summary["events_replayed"] == run["events"] == 600
    assert run["learned"] + run["skipped"] == 600 and run["stats"]["published"] == 6
    assert run["stream_events_per_s"] > 0 and run["learner_events_per_busy_s"] > 0
    assert run["ratio"] == pytest.approx(run["learner_events_per_busy_s"]
                                         / run["stream_events_per_s"])
    assert run["keeps_up"] == (run["ratio"] >= 1 and run["skipped"] == 0)
    assert 0 <= run["most_behind"] <= 600
    table = format_learner_table(summary)
    assert "every=100" in table and max(len(line) for line in table.splitlines()) <= 80


def test_a_wrong_schedule_stops_before_any_broker(capsys):
    from stream_app.cli import main

    assert main(["bench", "--learner", "--schedule", "every=100,stepz=2"]) == 2
    assert "stepz=2" in capsys.readouterr().err
