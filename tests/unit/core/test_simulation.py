"""The scaler simulator on tiny traces whose figures can be worked out by hand."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from core.adapters.forecaster import regressor
from core.domain.scaling import RATE_WINDOW_S, Decision, Load, make_policy
from core.usecases.forecast import ArrivalForecast
from core.usecases.simulation import simulate


class Scripted:
    """A policy that wants what `want(load)` says, and remembers every load it was shown."""

    name = "scripted"

    def __init__(self, want: Callable[[Load], int] = lambda load: load.workers) -> None:
        self.want = want
        self.loads: list[Load] = []

    def decide(self, load: Load) -> Decision:
        self.loads.append(load)
        return Decision(load.at, self.name, load.workers, self.want(load), "scripted")


def run(trace: Sequence[tuple[float, float]], policy: Scripted | None = None, **kw) -> dict:
    settings = {"slots": 1, "minimum": 1, "startup_s": 0.0, **kw}
    return simulate(trace, policy or Scripted(), **settings)


def test_one_worker_one_slot_serves_first_in_first_out():
    # Given one worker with one slot and three 10 s tasks arriving a second apart
    figures = run([(0.0, 10.0), (1.0, 10.0), (2.0, 10.0)])

    # Then each waits for the one before it: 0, 9 and 18 s
    assert (figures["p50_wait_s"], figures["max_wait_s"]) == (9.0, 18.0)
    assert figures["tasks"] == 3
    # and the worker counts from 0 until the last task ends at 30 s
    assert figures["worker_seconds"] == 30.0
    assert figures["scale_events"] == 0


def test_the_trace_is_taken_in_arrival_order():
    figures = run([(2.0, 10.0), (0.0, 10.0), (1.0, 10.0)])

    assert figures["max_wait_s"] == 18.0


def test_a_new_worker_takes_tasks_only_after_its_start_up():
    # Given one busy slot and a policy that asks for a second worker at once, ready after 5 s
    policy = Scripted(lambda load: 2)

    figures = run([(0.0, 10.0), (0.0, 10.0)], policy, startup_s=5.0)

    # Then the second task starts when the new worker is ready
    assert figures["max_wait_s"] == 5.0
    # and both workers count until the last task ends at 15 s, the new one from when it was asked
    assert figures["worker_seconds"] == 30.0
    assert (figures["scale_events"], figures["peak_workers"]) == (1, 2)


def test_starting_workers_count_in_the_load():
    policy = Scripted(lambda load: 3)

    run([(0.0, 4.0)], policy, startup_s=10.0)

    assert [load.workers for load in policy.loads[:2]] == [1, 3]


def test_draining_never_cuts_a_task():
    # Given two workers of one slot, each with a task, and then a policy that wants one
    policy = Scripted(lambda load: 2 if load.at < 1 else 1)

    figures = run([(0.0, 10.0), (0.5, 20.0)], policy, startup_s=0.0)

    # Then both tasks run to the end: the newer worker (both are as busy) is drained at t=1 and
    # leaves when its 20 s task ends at 20.5; worker 0 stays (the minimum) until the end
    assert figures["max_wait_s"] == 0.0
    assert figures["duration_s"] == 20.5
    assert figures["worker_seconds"] == 20.5 + 20.5


def test_worker_seconds_stop_when_a_drained_worker_leaves():
    # Given a task on worker 0 and an idle second worker that is drained at t=2
    policy = Scripted(lambda load: 2 if load.at < 2 else 1)

    figures = run([(0.0, 10.0)], policy)

    # Then the idle worker leaves at once: 2 s of its life, plus the 10 s of worker 0
    assert figures["worker_seconds"] == 12.0


def test_scale_down_drains_the_idle_worker_first():
    # Given worker 0 idle since its task ended at 10 and worker 1 busy until 11
    policy = Scripted(lambda load: 2 if load.at < 10.5 else 1)

    figures = run([(0.0, 10.0), (1.0, 10.0)], policy)

    # Then worker 0 leaves at 11 (the first tick after 10.5) and worker 1 serves to the end
    assert figures["worker_seconds"] == 11.0 + 11.0


def test_scale_down_cancels_a_starting_worker_first():
    # Given a worker still starting (60 s start-up) when the policy wants one worker again
    policy = Scripted(lambda load: 2 if load.at < 3 else 1)

    figures = run([(0.0, 10.0), (1.0, 10.0)], policy, startup_s=60.0)

    # Then the starting one is cancelled (3 s of start-up counted), the tasks share worker 0
    assert figures["worker_seconds"] == 20.0 + 3.0
    assert figures["max_wait_s"] == 9.0


def test_the_load_is_measured_as_the_pm_measures_it():
    # Given tasks arriving every 10 s for 2 minutes, each taking 3 s
    trace = [(float(t), 3.0) for t in range(0, 120, 10)]
    policy = Scripted()

    run(trace, policy, slots=2)

    # Then at t=100 the rate counts the arrivals of the last minute, the service time is the
    # mean of the tasks finished in it
    at_100 = next(load for load in policy.loads if load.at == 100.0)
    assert at_100.arrival_rate == pytest.approx(6 / RATE_WINDOW_S)
    assert at_100.service_s == pytest.approx(3.0)
    assert (at_100.busy, at_100.queued, at_100.slots) == (1, 0, 2)
    # and before anything finished the service time is unknown
    assert policy.loads[0].service_s == 0.0


def test_the_load_tells_the_policy_the_start_up_time():
    policy = Scripted()

    run([(0.0, 1.0), (5.0, 1.0)], policy, startup_s=30.0)

    assert {load.startup_s for load in policy.loads} == {30.0}


def test_the_forecast_is_trained_on_the_past_only():
    class Recording(ArrivalForecast):
        def __init__(self) -> None:
            super().__init__(regressor)
            self.trainings: list[tuple[float, float]] = []

        def train(self, arrivals, now):
            self.trainings.append((max(arrivals, default=0.0), now))
            return super().train(arrivals, now)

    forecast = Recording()
    trace = [(t * 0.5, 1.0) for t in range(2400)]  # 20 minutes

    simulate(trace, Scripted(), slots=4, minimum=1, startup_s=0.0, forecast=forecast)

    assert len(forecast.trainings) >= 3
    assert all(latest <= now for latest, now in forecast.trainings)


def test_the_same_trace_gives_the_same_figures():
    trace = [((i * 7919) % 3600 / 2, 5.0 + (i * 31) % 20) for i in range(2000)]

    first = simulate(trace, make_policy("aico", 1, 5, 8), 8, 1, 10.0)
    second = simulate(trace, make_policy("aico", 1, 5, 8), 8, 1, 10.0)

    assert first == second


def test_an_empty_trace_has_no_waits():
    figures = run([])

    assert (figures["tasks"], figures["p95_wait_s"], figures["worker_seconds"]) == (0, 0.0, 0.0)
