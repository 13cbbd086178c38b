"""Intake on the in-memory twins of Slack and RabbitMQ, with the real SQLite event store: a task
is validated and checked against the budgets before it is recorded; what is refused is neither
recorded, posted nor queued, and the same request delivered twice is one task."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.messages import TASKS, TaskMessage
from core.domain.task import TaskStatus
from core.errors import InvalidInput
from core.usecases.budgets import Budgets
from core.usecases.intake import Intake, TaskRequest
from core.usecases.relay import OutboxRelay
from tests.twins.polling import until

OWNER, OTHER = "U0OWNER", "U0OTHER"
CHANNEL = "C0GENERAL"
MAX_CHARS = 100
USER_DAILY, CHANNEL_DAILY = 1.0, 50.0


@pytest.fixture
def intake(store, slack, broker) -> Iterator[Intake]:
    # One relay thread: tasks are dispatched in the order they were submitted, so once a later
    # task is queued, anything an earlier submit handed to the relay has been dispatched too.
    relay = OutboxRelay(store, slack, broker, TASKS, threads=1, slack_patience=60.0)
    yield Intake(store, relay, MAX_CHARS, budgets=Budgets(store, USER_DAILY, CHANNEL_DAILY))
    relay.close()


def request(text: str = "write the release notes", user: str = OWNER, key: str = "") -> TaskRequest:
    return TaskRequest(user, CHANNEL, text, response_url="https://hooks.example/r/1", key=key)


def queued(store: SqliteEventStore, task_id: str):
    return until(lambda: (t := store.task(task_id)) and t.status is TaskStatus.QUEUED and t)


def spend(store: SqliteEventStore, user: str, usd: float) -> None:
    """A task of `user`'s answered today at a cost of `usd`, as the workers record it."""
    task_id = f"spent{user.lower()}"
    submitted = {"user": user, "channel": CHANNEL, "prompt": "earlier work"}
    store.append(task_id, events.SUBMITTED, submitted, f"{task_id}:submitted")
    store.append(task_id, events.POSTED, {"thread_ts": "1699999999.000001"}, f"{task_id}:posted")
    store.append(task_id, events.QUEUED, {}, f"{task_id}:queued:0")
    store.append(task_id, events.STARTED, {"generation": 0, "delivery": 1}, f"{task_id}:start")
    usage = {"input_tokens": 1_000, "output_tokens": 2_000}
    completed = {"model": "claude-x", "usage": usage, "claude_ms": 10.0, "cost_usd": usd}
    store.append(task_id, events.COMPLETED, completed, f"{task_id}:completed:0")


def refusal(intake: Intake, req: TaskRequest) -> str:
    with pytest.raises(InvalidInput) as refused:
        intake.submit(req)
    return str(refused.value)


def only_this_was_done(store, slack, broker, intake, task_id: str, user: str = OWNER) -> None:
    """Once `task_id` (submitted after the refusals) is queued, it is all there is: the refused
    requests left no task, no parent message and no queue message behind."""
    queued(store, task_id)
    assert [t.id for t in store.recent(10, user=user)] == [task_id]
    assert [TaskMessage.decode(p.body).task_id for p in broker.ready(TASKS)] == [task_id]
    [parent] = slack.messages(CHANNEL)
    assert parent["metadata"]["event_payload"]["task_id"] == task_id


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00"])
def test_an_empty_task_is_refused_with_what_to_write_and_nothing_is_recorded(
    store, slack, broker, intake, text
):
    reason = refusal(intake, request(text))

    assert "Tell me what to do" in reason
    assert "/aico task" in reason
    assert store.recent(10) == []
    task = intake.submit(request("a task that is fine"))
    only_this_was_done(store, slack, broker, intake, task.id)


def test_an_over_long_task_is_refused_with_its_length_and_the_limit(store, slack, broker, intake):
    reason = refusal(intake, request("x" * (MAX_CHARS + 1)))

    assert f"That task is {MAX_CHARS + 1:,} characters; the limit is {MAX_CHARS:,}." in reason
    assert store.recent(10) == []
    exactly = intake.submit(request("y" * MAX_CHARS))  # at the limit is fine
    assert exactly.prompt == "y" * MAX_CHARS
    only_this_was_done(store, slack, broker, intake, exactly.id)


def test_a_task_is_recorded_before_submit_returns(store, intake):
    task = intake.submit(request("  summarise the incident  "))

    recorded = store.task(task.id)
    assert recorded is not None
    assert (recorded.user, recorded.channel, recorded.prompt) == (
        OWNER,
        CHANNEL,
        "summarise the incident",
    )
    assert recorded.response_url == "https://hooks.example/r/1"


def test_the_same_request_key_twice_is_one_task(store, slack, broker, intake):
    first = intake.submit(request("deploy notes", key="trigger-1"))
    again = intake.submit(request("deploy notes", key="trigger-1"))

    assert again.id == first.id
    queued(store, first.id)
    after_queued = intake.submit(request("deploy notes", key="trigger-1"))
    assert after_queued.id == first.id
    other = intake.submit(request("deploy notes", key="trigger-2"))  # a new delivery: new task
    assert other.id != first.id
    queued(store, other.id)

    assert sorted(t.id for t in store.recent(10)) == sorted([first.id, other.id])
    ids = [p.message_id for p in broker.ready(TASKS)]
    assert sorted(ids) == sorted([first.id, other.id])
    posted = [m["metadata"]["event_payload"]["task_id"] for m in slack.messages(CHANNEL)]
    assert sorted(posted) == sorted([first.id, other.id])


def test_a_user_over_budget_is_refused_with_the_figures(store, slack, broker, intake):
    spend(store, OWNER, 1.5)

    reason = refusal(intake, request("one more"))

    assert "Your daily budget is spent: $1.50 of $1.00 today (UTC)." in reason
    assert f"/aico budget user <@{OWNER}>" in reason
    assert [t.id for t in store.recent(10, user=OWNER)] == [f"spent{OWNER.lower()}"]
    other = intake.submit(request("mine is fine", user=OTHER))  # the channel is within budget
    only_this_was_done(store, slack, broker, intake, other.id, user=OTHER)
