"""Slack's stop button on an agent session, called the way Bolt calls the listener (keyword
argument `event`, shaped as Slack's `agent_session_stopped`): the thread's running task is
cancelled as `/aico cancel` cancels it, for its requester or an admin only."""

from __future__ import annotations

from typing import Any

from core.domain import events
from core.domain.task import TaskStatus
from tests.unit.bot.standins import ADMIN, OWNER, RESULTS_QUEUE, STRANGER, World


def stopped(world: World, channel: str, thread_ts: str, user: str) -> None:
    event: dict[str, Any] = {
        "type": "agent_session_stopped",
        "user": user,
        "channel": channel,
        "thread_ts": thread_ts,
        "streaming_message_ts": ["1700000001.000100"],
        "event_ts": "1700000001.000200",
    }
    world.app.events["agent_session_stopped"](event=event)


def test_the_requester_pressing_stop_cancels_the_running_task(world) -> None:
    task = world.task()

    stopped(world, task.channel, task.thread_ts, OWNER)

    assert world.store.task(task.id).status is TaskStatus.CANCELLED
    assert world.store.task(task.id).cancelled_by == OWNER
    assert world.broker.published_to(RESULTS_QUEUE) == [f"{task.id}:cancelled"]
    [call] = world.log.named("control.cancel")
    assert call.args == (task.id, OWNER)


def test_an_admin_may_stop_anyones_task(world) -> None:
    task = world.task()

    stopped(world, task.channel, task.thread_ts, ADMIN)

    assert world.store.task(task.id).status is TaskStatus.CANCELLED


def test_anyone_else_is_told_who_may_and_the_task_goes_on(world) -> None:
    task = world.task()

    stopped(world, task.channel, task.thread_ts, STRANGER)

    assert world.store.task(task.id).status is TaskStatus.QUEUED
    [(channel, user, text, thread_ts)] = world.slack.of("tell")
    assert (channel, user, thread_ts) == (task.channel, STRANGER, task.thread_ts)
    assert f"Only <@{OWNER}>" in text
    assert world.broker.published_to(RESULTS_QUEUE) == []


def test_the_latest_unfinished_turn_of_the_thread_is_the_one_stopped(world) -> None:
    first = world.task(until=events.COMPLETED)
    turn_id = "t900000001"
    turn = {
        "user": OWNER,
        "channel": first.channel,
        "prompt": "and now shorter",
        "thread_ts": first.thread_ts,
        "conversation": first.id,
    }
    world.store.append(turn_id, events.SUBMITTED, turn, f"{turn_id}:submitted")
    world.store.append(turn_id, events.QUEUED, {}, f"{turn_id}:queued:0")

    stopped(world, first.channel, first.thread_ts, OWNER)

    assert world.store.task(turn_id).status is TaskStatus.CANCELLED
    assert world.store.task(first.id).status is TaskStatus.DONE


def test_a_thread_with_nothing_running_is_left_alone(world) -> None:
    done = world.task(until=events.COMPLETED)

    stopped(world, done.channel, done.thread_ts, OWNER)
    stopped(world, done.channel, "1699999999.999999", OWNER)

    assert world.log.named("control.cancel") == []
    assert world.slack.of("tell") == []
