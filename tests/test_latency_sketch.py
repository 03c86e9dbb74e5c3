"""The windows' latency histogram: bounded size, percentiles within the stated accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.windows.latency_sketch import LatencyHistogram


def _exact(values, q):
    s = np.sort(np.asarray(values, dtype=np.float64))
    return float(s[round(q / 100.0 * (len(s) - 1))])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=3.6e6, allow_nan=False), min_size=1,
                max_size=300),
       st.sampled_from([0, 1, 50, 90, 95, 99, 100]))
def test_percentiles_within_relative_accuracy(values, q):
    h = LatencyHistogram(accuracy=0.01)
    h.add_many(values)
    (got,) = h.quantiles([q])
    want = _exact(values, q)
    assert abs(got - want) <= 0.01 * want * (1 + 1e-9)


def test_size_is_bounded_by_the_value_range_not_the_count():
    rng = np.random.default_rng(0)
    h = LatencyHistogram(accuracy=0.01)
    for _ in range(20):
        h.add_many(rng.lognormal(4.0, 1.5, 10_000))  # 200,000 latencies
    assert h.n == 200_000
    assert len(h.counts) < 800
    p50, p99 = h.quantiles([50, 99])
    assert p50 == pytest.approx(np.exp(4.0), rel=0.05)


def test_zero_and_negative_latencies_count_as_zero():
    h = LatencyHistogram()
    h.add_many([-5.0, 0.0, 10.0])
    assert h.quantiles([0, 50, 100]) == [0.0, 0.0, pytest.approx(10.0, rel=0.01)]
    assert LatencyHistogram().quantiles([50]) == [None]


def test_merge_equals_adding_everything():
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    a.add_many([1.0, 2.0, 3.0])
    b.add_many([100.0, 0.0])
    both.add_many([1.0, 2.0, 3.0, 100.0, 0.0])
    a.merge(b)
    assert (a.counts, a.zeros, a.n) == (both.counts, both.zeros, both.n)
    with pytest.raises(ValueError):
        a.merge(LatencyHistogram(accuracy=0.02))
