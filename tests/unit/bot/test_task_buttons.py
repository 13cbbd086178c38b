"""The Cancel and Retry buttons on a task's parent message, called the way Bolt calls their
listener (keyword arguments `ack`, `body`, `action`, `respond`; the body shaped as Slack's
block_actions payload). The click is acked at once, then the one service call, then the user is
told, only them, without replacing the task's message."""

from __future__ import annotations

from typing import Any

from core.domain import events
from core.domain.task import TaskStatus
from tests.unit.bot.standins import (
    ADMIN,
    CHANNEL,
    OWNER,
    RESULTS_QUEUE,
    STRANGER,
    TASKS_QUEUE,
    Answer,
    World,
)

CANCEL, RETRY = "aico_cancel", "aico_retry"


def click(world: World, action_id: str, task_id: str, user: str = OWNER) -> Answer:
    """`user` clicks the button `action_id` of task `task_id`; what they were told."""
    action = {
        "type": "button",
        "action_id": action_id,
        "block_id": "task",
        "text": {"type": "plain_text", "text": "Cancel" if action_id == CANCEL else "Retry"},
        "value": task_id,
        "action_ts": "1700000001.000200",
    }
    body: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "team_id": "T0AICO"},
        "api_app_id": "A0AICO",
        "container": {"type": "message", "message_ts": "1699999999.000001", "channel_id": CHANNEL},
        "channel": {"id": CHANNEL},
        "trigger_id": "4916855695380.xxx.yyy",
        "response_url": "https://hooks.slack.com/actions/T0AICO/111/random-value",
        "actions": [action],
    }
    ack, respond = Answer("ack", world.log), Answer("respond", world.log)
    world.app.actions[action_id](ack=ack, body=body, action=action, respond=respond)
    assert ack.only() == {}, "a click is acked empty: the answer comes with respond"
    return respond


def told(respond: Answer) -> str:
    answer = respond.only()
    assert answer["response_type"] == "ephemeral"
    assert answer["replace_original"] is False  # the task's message and its buttons stay
    return answer["text"]


def test_the_click_is_acked_before_the_task_is_touched(world) -> None:
    task = world.task()

    click(world, CANCEL, task.id)

    assert world.log.names() == ["ack", "control.cancel", "respond"]


def test_the_owner_cancels_with_the_button(world) -> None:
    task = world.task()

    respond = click(world, CANCEL, task.id)

    assert told(respond) == (
        f":no_entry_sign: Task `{task.id}` is cancelled. Its thread says so too."
    )
    [call] = world.log.named("control.cancel")
    assert call.args == (task.id, OWNER)
    assert world.store.task(task.id).status is TaskStatus.CANCELLED
    assert world.broker.published_to(RESULTS_QUEUE) == [f"{task.id}:cancelled"]


def test_someone_elses_click_is_refused_and_the_task_runs_on(world) -> None:
    task = world.task()

    respond = click(world, CANCEL, task.id, user=STRANGER)

    assert told(respond) == (
        f":warning: Only <@{OWNER}>, who asked for task `{task.id}`, or an admin can cancel it."
    )
    assert world.store.task(task.id).status is TaskStatus.QUEUED
    assert world.broker.of("publish") == []


def test_a_second_click_on_cancel_says_it_is_already_cancelled(world) -> None:
    task = world.task()
    click(world, CANCEL, task.id)

    respond = click(world, CANCEL, task.id)

    assert told(respond) == f":warning: Task `{task.id}` is already cancelled."


def test_an_admin_retries_someone_elses_failed_task(world) -> None:
    task = world.task(until=events.FAILED)

    respond = click(world, RETRY, task.id, user=ADMIN)

    assert told(respond) == (
        f":repeat: Task `{task.id}` is queued again (retry 1). The new answer comes in its thread."
    )
    [call] = world.log.named("control.retry")
    assert call.args == (task.id, ADMIN)
    [(queue, _, message_id)] = world.broker.wait_for("publish")
    assert (queue, message_id) == (TASKS_QUEUE, task.id)


def test_retry_of_a_task_that_is_done_is_refused(world) -> None:
    task = world.task(until=events.COMPLETED)

    respond = click(world, RETRY, task.id)

    assert told(respond) == (
        f":warning: Task `{task.id}` is done: only a failed or cancelled task can be retried."
    )
    assert world.store.task(task.id).generation == 0


def test_a_button_of_a_task_the_store_does_not_know(world) -> None:
    # Given a button whose task is gone (another deployment's message, a wiped store)
    respond = click(world, CANCEL, "0123456789")
    assert told(respond) == (
        ":warning: There is no task `0123456789`. `/aico history` lists yours."
    )
