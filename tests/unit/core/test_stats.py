"""Counters and their reading: percentiles within the bucket width, a task counted once."""

from __future__ import annotations

import random

import pytest

from core.domain import events
from core.domain.events import Event, fold
from core.domain.stats import Summary, bucket, bucket_seconds, count_for


def test_a_percentile_read_from_buckets_is_within_ten_percent():
    durations = [random.uniform(0.2, 30.0) for _ in range(5000)]
    summary = Summary()
    for d in durations:
        summary.add("done", bucket(d), 1, 0, 0, 0.0)

    exact = sorted(durations)
    for q in (0.5, 0.95):
        true = exact[int(q * len(exact)) - 1]
        assert true <= summary.percentile(q) <= true * 1.1 + 0.01


def test_a_bucket_holds_its_durations():
    for seconds in (0.0, 0.01, 0.5, 3.0, 600.0):
        assert seconds <= bucket_seconds(bucket(seconds)) <= max(seconds, 0.01) * 1.1 + 1e-9


def test_no_finished_task_means_no_rate_and_no_percentile():
    assert Summary().success_rate is None and Summary().percentile(0.5) is None


def test_a_task_is_counted_when_it_ends_and_never_again():
    history = [
        Event("t", events.SUBMITTED, {"user": "U", "channel": "C", "prompt": "p"}, 100.0, 1),
        Event("t", events.COMPLETED, {"usage": {"output_tokens": 3}, "cost_usd": 0.5}, 104.0, 2),
        Event("t", events.STARTED, {}, 105.0, 3),
    ]
    views = [fold(history[: n + 1]) for n in range(3)]

    assert count_for(None, views[0]) is None
    count = count_for(views[0], views[1])
    assert (count.outcome, count.tokens_out, count.cost) == ("done", 3, 0.5)
    assert count.bucket == bucket(4.0)
    assert count_for(views[1], views[2]) is None


@pytest.mark.parametrize(("done", "failed", "rate"), [(3, 1, 0.75), (0, 2, 0.0), (5, 0, 1.0)])
def test_the_success_rate_leaves_cancelled_tasks_out(done, failed, rate):
    summary = Summary()
    summary.add("done", 0, done, 0, 0, 0.0)
    summary.add("failed", 0, failed, 0, 0, 0.0)
    summary.add("cancelled", 0, 7, 0, 0, 0.0)
    assert summary.success_rate == rate
