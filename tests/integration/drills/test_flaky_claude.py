"""Drills with a flaky Claude: failing before its streams (429, 500, 529) and in their middle (an
overloaded error event, a connection cut) at realistic rates. Every task must still succeed:
answered exactly once in its own thread, none failed for a transient error, and Claude asked no
more often than the written budget (3 requests an attempt, 6 attempts)."""

from __future__ import annotations

from core.domain.messages import DELIVERY_LIMIT
from tests.integration.drills.conftest import assert_nothing_lost_or_twice
from tests.integration.test_processes import task_workers

BUDGET = 3 * (DELIVERY_LIMIT + 1)  # requests to Claude a task may make (README: at most 18)
FLAKY = {"429": 0.08, "529": 0.08, "500": 0.04, "error_event": 0.08, "cut": 0.04}
MILD = {"429": 0.05, "529": 0.05, "500": 0.03, "error_event": 0.05, "cut": 0.03}


def test_a_flaky_claude_before_and_in_the_middle_of_its_streams_fails_no_task(
    ledger, stack, claude
):
    # Given Claude failing about one request in three, before or in the middle of its stream
    claude.latency = 0.2
    claude.flaky(FLAKY, seed=8)

    # When tasks arrive
    ledger.submit(30, "flaky")
    outcomes = ledger.wait_settled(timeout=240)

    # Then every one was answered once, none failed, within the budget of requests
    assert_nothing_lost_or_twice(outcomes, stack, max_calls=BUDGET)
    assert all(o.final == "Done" and o.answers == 1 for o in outcomes), outcomes
    faults = {c.fault for c in claude.calls if c.fault}
    assert {"error_event", "cut"} <= faults, f"the drill broke no stream: {faults}"


def test_soak_a_flaky_claude_while_workers_are_killed_and_the_broker_restarts(
    ledger, stack, claude, rabbit
):
    # Given a flaky Claude, slow enough that calls are in flight when things break
    claude.latency = 0.8
    claude.flaky(MILD, seed=40)

    # When tasks keep arriving while every task worker is killed and then the broker restarts
    ledger.submit(15, "soak-a")
    claude.wait_for(lambda fake: fake.in_flight >= 4, timeout=30)
    for worker in task_workers(stack):
        worker.kill()
    ledger.submit(15, "soak-b")
    claude.wait_for(lambda fake: fake.in_flight >= 4, timeout=60)  # the pm started new ones
    rabbit.stop_app()
    ledger.submit(5, "soak-down")  # acked while the broker is down
    rabbit.start_app()
    ledger.submit(10, "soak-c")
    outcomes = ledger.wait_settled(timeout=300)

    # Then all 45 were answered exactly once in their threads, none failed, within the budget
    assert len(outcomes) == 45
    assert_nothing_lost_or_twice(outcomes, stack, max_calls=BUDGET)
    assert all(o.final == "Done" for o in outcomes), [o for o in outcomes if o.final != "Done"]
