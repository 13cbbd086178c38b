"""RabbitMQ's own delivery limit: a task whose task worker is killed (kill -9) on every attempt is
dead-lettered by the broker after its 6th delivery, and aico fails it in its thread with that
reason. No dead letter is made by the test: the quorum queue's `x-delivery-limit` does it."""

from __future__ import annotations

import json

import psutil
import pytest

from aico.fakes.anthropic import FakeClaude
from core.domain import events
from core.domain.messages import DELIVERY_LIMIT
from core.domain.task import TaskStatus
from tests.integration.drills.conftest import Ledger, event_store
from tests.integration.drills.test_drills import dead_letters
from tests.integration.stack import Stack, fresh_vhost, wait_until
from tests.integration.test_e2e import CHANNEL, parent_of
from tests.integration.test_processes import task_workers

pytestmark = pytest.mark.drill  # (the drills' conftest marks this folder too)

DELIVERIES = DELIVERY_LIMIT + 1  # the first delivery and DELIVERY_LIMIT redeliveries


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude):
    """One task worker: each delivery of the task goes to the only live one."""
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, AICO_MIN_WORKERS="1").start()
    yield running
    running.stop()


def arrived(claude: FakeClaude) -> int:
    """Requests that reached Claude: the ones it holds, and the ones that ended (a request whose
    client was killed while the fake read it ends at once, as 499)."""
    return claude.in_flight + len(claude.calls)


def the_live_worker(stack: Stack, killed: set[int]) -> psutil.Process | None:
    alive = [w for w in task_workers(stack) if w.pid not in killed]
    return alive[0] if len(alive) == 1 else None


def test_a_task_whose_workers_die_on_every_attempt_is_failed_by_the_delivery_limit(
    stack, slack, claude, rabbit
):
    # Given Claude holding every request: each delivery of the task stays in flight
    claude.hang_next(count=10 * DELIVERIES, seconds=600)
    ledger = Ledger(stack, slack, claude)
    (task_id,) = ledger.submit(1, "doomed by crashes")

    # When the task worker is killed with kill -9 while it asks Claude, on every attempt (the pm
    # starts a new one each time, and the broker delivers the task to it again)
    killed: set[int] = set()
    for attempt in range(1, DELIVERIES + 1):
        claude.wait_for(lambda fake, n=attempt: arrived(fake) >= n, timeout=60)
        worker = wait_until(lambda: the_live_worker(stack, killed), timeout=30)
        worker.kill()
        killed.add(worker.pid)

    # Then the broker dead-letters it, and its owner sees it failed, with the reason, in the
    # task's one result message
    (outcome,) = ledger.wait_settled(timeout=60)
    assert (outcome.final, outcome.results) == ("Failed", 1), f"{outcome}\n{stack.logs()}"
    parent = parent_of(slack, task_id)
    (reply,) = slack.replies(CHANNEL, parent["ts"])
    assert f"tried {DELIVERIES} times and no attempt finished" in reply["text"]
    assert "Working on it" not in json.dumps(parent["blocks"])
    wait_until(lambda: dead_letters(rabbit, stack) == 1, timeout=20)

    # And Claude was asked once per delivery, and never answered; the store counts 6 attempts
    assert arrived(claude) == DELIVERIES, "one request per delivery, and no more"
    assert claude.prompts() == []
    with event_store(stack) as store:
        task = store.task(task_id)
        types = [e.type for e in store.events(task_id)]
    assert task.status is TaskStatus.FAILED and task.attempts == DELIVERIES
    assert types.count(events.STARTED) == DELIVERIES
    assert "no attempt finished" in task.error
