"""A reply in a task's thread is the conversation's next turn. The listener is called the way
Bolt calls it (keyword argument `event`, shaped as Slack's `message` and `app_mention` events);
the turn is a task of its own in the real store. Bolt acks events itself."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain import events
from core.domain.events import TaskView
from tests.unit.bot.standins import (
    BOT_USER,
    CHANNEL,
    OWNER,
    STRANGER,
    TASKS_QUEUE,
    World,
    make_world,
)

REPLY_TS = "1700000100.000200"


def reply_event(
    first: TaskView, text: str, user: str = OWNER, ts: str = REPLY_TS, **extra: Any
) -> dict[str, Any]:
    """A person's message in the thread of task `first`, as Slack's `message` event carries it."""
    event = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "thread_ts": first.thread_ts,
        "parent_user_id": BOT_USER,
        "channel": first.channel,
        "event_ts": ts,
        "channel_type": "channel",
    }
    event.update(extra)
    return {k: v for k, v in event.items() if v is not None}


def deliver(world: World, event: dict[str, Any], as_: str = "message") -> None:
    world.app.events[as_](event=event)


def turns(world: World, first: TaskView) -> list[TaskView]:
    return [t for t in world.store.thread(first.channel, first.thread_ts) if t.conversation]


def test_the_owners_reply_becomes_the_next_turn(world) -> None:
    first = world.task(prompt="draft the announcement")

    deliver(world, reply_event(first, "make it shorter"))

    [turn] = turns(world, first)
    assert (turn.prompt, turn.user, turn.conversation) == ("make it shorter", OWNER, first.id)
    assert turn.thread_ts == first.thread_ts
    [call] = world.log.named("conversations.reply")
    assert call.args == (
        CHANNEL,
        first.thread_ts,
        OWNER,
        "make it shorter",
        f"reply:{CHANNEL}:{REPLY_TS}",
    )
    # and the turn is queued, in the same thread (no new parent message)
    [(queue, _, message_id)] = world.broker.wait_for("publish")
    assert (queue, message_id) == (TASKS_QUEUE, turn.id)
    assert world.slack.of("post") == []
    assert world.slack.of("tell") == []


def test_a_retried_delivery_of_the_same_reply_makes_one_turn(world) -> None:
    # Given Slack delivers one reply twice (no ack seen in time), and as an @mention too
    first = world.task()
    event = reply_event(first, f"<@{BOT_USER}> and add a summary")
    deliver(world, event)
    deliver(world, dict(event))
    deliver(world, dict(event, type="app_mention"), as_="app_mention")

    # Then there is one turn
    [turn] = turns(world, first)
    assert turn.prompt == "and add a summary"


def test_two_different_replies_are_two_turns(world) -> None:
    first = world.task()
    deliver(world, reply_event(first, "one", ts="1700000100.000200"))
    deliver(world, reply_event(first, "two", ts="1700000100.000300"))
    assert [t.prompt for t in turns(world, first)] == ["one", "two"]


@pytest.mark.parametrize(
    "text",
    [f"<@{BOT_USER}> go on", f"<@{BOT_USER}|aico>, go on", f"  <@{BOT_USER}>: go on", "go on"],
)
def test_a_leading_mention_of_the_bot_is_not_part_of_the_turn(world, text: str) -> None:
    first = world.task()
    deliver(world, reply_event(first, text), as_="app_mention")
    assert [t.prompt for t in turns(world, first)] == ["go on"]


def test_a_mention_inside_the_reply_is_kept(world) -> None:
    first = world.task()
    deliver(world, reply_event(first, f"ask <@{STRANGER}> too"))
    assert [t.prompt for t in turns(world, first)] == [f"ask <@{STRANGER}> too"]


def test_someone_else_is_told_only_the_owner_continues(world) -> None:
    first = world.task()

    deliver(world, reply_event(first, "me too", user=STRANGER))

    assert turns(world, first) == []
    assert world.slack.of("tell") == [
        (
            CHANNEL,
            STRANGER,
            f":warning: Only <@{OWNER}>, who started this conversation, can continue it. "
            "Start your own with `/aico task`.",
            first.thread_ts,
        )
    ]


def test_anyone_continues_where_conversations_are_open_to_the_channel(tmp_path) -> None:
    world = make_world(tmp_path, open_to_channel=True)
    try:
        first = world.task()
        deliver(world, reply_event(first, "me too", user=STRANGER))
        [turn] = turns(world, first)
        assert turn.user == STRANGER
    finally:
        world.close()


def test_an_empty_reply_is_told_what_to_do(world) -> None:
    first = world.task()

    deliver(world, reply_event(first, f"<@{BOT_USER}>"), as_="app_mention")

    assert turns(world, first) == []
    [(channel, user, text, thread_ts)] = world.slack.of("tell")
    assert (channel, user, thread_ts) == (CHANNEL, OWNER, first.thread_ts)
    assert text == ":warning: Tell me what to do: `/aico task &lt;what to do&gt;`."


def test_a_reply_over_budget_is_told_the_figures(world) -> None:
    first = world.task(until=events.COMPLETED, cost=6.0)

    deliver(world, reply_event(first, "one more"))

    assert turns(world, first) == []
    [(_, _, text, _)] = world.slack.of("tell")
    assert text.startswith(":warning: Your daily budget is spent: $6.00 of $5.00 today (UTC).")


def test_a_refusal_with_no_way_to_tell_is_dropped_quietly(world) -> None:
    first = world.task()
    app = world.with_services(tell=None)
    app.events["message"](event=reply_event(first, "me too", user=STRANGER))
    assert turns(world, first) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"bot_id": "B0AICOBOT"},  # aico's own (or another bot's) message
        {"subtype": "message_changed"},  # an edit
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"user": None},  # no person behind it
        {"thread_ts": None},  # a message in the channel, not in a thread
        {"ts": "THREAD"},  # the thread's first message itself
    ],
)
def test_what_is_not_a_persons_new_reply_is_ignored(world, changes: dict[str, Any]) -> None:
    first = world.task()
    if changes.get("ts") == "THREAD":
        changes = {"ts": first.thread_ts}
    event = reply_event(first, "hello", **{k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        event.pop(key)

    deliver(world, event)

    assert turns(world, first) == []
    assert world.log.named("conversations.reply") == []
    assert world.slack.calls == []


def test_a_broadcast_reply_also_sent_to_the_channel_is_a_turn(world) -> None:
    first = world.task()
    deliver(world, reply_event(first, "ship it", subtype="thread_broadcast"))
    assert [t.prompt for t in turns(world, first)] == ["ship it"]


def test_a_thread_aico_did_not_start_is_ignored(world) -> None:
    first = world.task()
    elsewhere = reply_event(first, "hello", thread_ts="1600000000.000001")

    deliver(world, elsewhere)

    assert world.store.thread(CHANNEL, "1600000000.000001") == []
    assert world.slack.calls == []


def test_no_conversations_here_means_replies_are_ignored(world) -> None:
    first = world.task()
    app = world.with_services(conversations=None)
    app.events["message"](event=reply_event(first, "hello"))
    assert turns(world, first) == []
