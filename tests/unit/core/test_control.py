"""Cancel and retry on the in-memory twins of Slack and RabbitMQ, with the real SQLite event
store: only a task's requester or an admin may; a cancel ends the task and tells the result
worker; a retry reopens a failed task as a new generation, queued once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.messages import RESULTS, TASKS, ResultMessage, TaskMessage
from core.domain.task import TaskStatus
from core.errors import InvalidInput
from core.usecases.control import TaskControl
from core.usecases.intake import Intake, TaskRequest
from core.usecases.relay import OutboxRelay
from tests.twins.broker import MemoryBroker
from tests.twins.polling import WAIT, until

OWNER, STRANGER, ADMIN = "U0OWNER", "U0STRANGER", "U0ADMIN"
CHANNEL = "C0GENERAL"


@pytest.fixture
def intake(store, slack, broker) -> Iterator[Intake]:
    relay = OutboxRelay(store, slack, broker, TASKS, threads=2, slack_patience=60.0)
    yield Intake(store, relay, 1_000)
    relay.close()


@pytest.fixture
def control(store, intake, broker) -> TaskControl:
    return TaskControl(store, intake, broker, RESULTS, frozenset({ADMIN}))


def status_is(store: SqliteEventStore, task_id: str, status: TaskStatus):
    return until(lambda: (t := store.task(task_id)) and t.status is status and t)


def queued_task(store, intake, prompt: str = "write the release notes"):
    task = intake.submit(TaskRequest(OWNER, CHANNEL, prompt))
    return status_is(store, task.id, TaskStatus.QUEUED)


def results(broker: MemoryBroker) -> list[ResultMessage]:
    return [ResultMessage.decode(p.body) for p in broker.ready(RESULTS)]


def generations(broker: MemoryBroker, task_id: str) -> list[int]:
    return [
        TaskMessage.decode(p.body).generation
        for p in broker.ready(TASKS)
        if p.message_id == task_id
    ]


def test_the_requester_cancels_a_queued_task(store, broker, intake, control):
    task = queued_task(store, intake)

    view = control.cancel(task.id, OWNER)

    assert view.status is TaskStatus.CANCELLED
    assert view.cancelled_by == OWNER
    assert store.task(task.id).status is TaskStatus.CANCELLED
    [report] = broker.wait_for(lambda: results(broker), WAIT)
    assert (report.task_id, report.event) == (task.id, "cancelled")
    assert (report.channel, report.thread_ts) == (CHANNEL, task.thread_ts)
    assert [p.message_id for p in broker.ready(RESULTS)] == [f"{task.id}:cancelled"]

    with pytest.raises(InvalidInput, match="already cancelled"):
        control.cancel(task.id, OWNER)


def test_a_stranger_is_refused_naming_who_can_and_an_admin_may(store, broker, intake, control):
    task = queued_task(store, intake)

    with pytest.raises(InvalidInput) as refused:
        control.cancel(task.id, STRANGER)

    assert str(refused.value) == (
        f"Only <@{OWNER}>, who asked for task `{task.id}`, or an admin can cancel it."
    )
    assert store.task(task.id).status is TaskStatus.QUEUED

    view = control.cancel(task.id, ADMIN)

    assert view.status is TaskStatus.CANCELLED
    assert view.cancelled_by == ADMIN
    # The broker's link carries publishes out in order: a cancel the stranger had got through
    # would be here before the admin's.
    [report] = broker.wait_for(lambda: results(broker), WAIT)
    assert report.event == "cancelled"
    assert len(broker.ready(RESULTS)) == 1


def test_a_task_that_does_not_exist_is_named_in_the_refusal(control):
    with pytest.raises(InvalidInput, match="There is no task `nosuchtask`"):
        control.cancel(" nosuchtask ", OWNER)


def test_retry_of_a_failed_task_makes_a_new_generation_queued_once(
    store, slack, broker, intake, control
):
    task = queued_task(store, intake)
    started = {"worker": "host-1", "delivery": 1, "generation": 0}
    store.append(task.id, events.STARTED, started, f"{task.id}:start:0:0")
    failed = store.append(
        task.id, events.FAILED, {"error": "Claude is overloaded"}, f"{task.id}:failed:0"
    )
    assert failed.status is TaskStatus.FAILED

    with pytest.raises(InvalidInput) as refused:
        control.retry(task.id, STRANGER)
    assert f"Only <@{OWNER}>" in str(refused.value)

    view = control.retry(task.id, OWNER)

    assert view.generation == 1
    again = status_is(store, task.id, TaskStatus.QUEUED)
    assert again.generation == 1
    assert again.thread_ts == task.thread_ts  # answered in the same thread
    assert generations(broker, task.id) == [0, 1]  # the first copy was never consumed here
    [body] = [
        TaskMessage.decode(p.body)
        for p in broker.ready(TASKS)
        if TaskMessage.decode(p.body).generation == 1
    ]
    assert (body.prompt, body.thread_ts) == ("write the release notes", task.thread_ts)
    [parent] = slack.messages(CHANNEL)  # the same parent message, not a new one
    assert parent["ts"] == task.thread_ts

    with pytest.raises(InvalidInput, match="only a failed or cancelled task can be retried"):
        control.retry(task.id, OWNER)
    assert generations(broker, task.id) == [0, 1]


def test_retry_of_a_cancelled_task_by_an_admin(store, broker, intake, control):
    task = queued_task(store, intake)
    control.cancel(task.id, OWNER)

    view = control.retry(task.id, ADMIN)

    assert view.generation == 1
    assert status_is(store, task.id, TaskStatus.QUEUED).cancelled_by == ""
    until(lambda: generations(broker, task.id) == [0, 1])


def test_an_unknown_id_typed_in_backticks_is_named_once_in_the_refusal(control):
    with pytest.raises(InvalidInput) as refused:
        control.cancel(" `NoSuchTask` ", "U0OWNER")
    assert "There is no task `NoSuchTask`." in str(refused.value)
