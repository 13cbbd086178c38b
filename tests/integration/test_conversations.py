"""A reply in a task's thread continues the conversation: Claude gets the earlier turns, the
answer comes in the same thread, and Slack's repeated deliveries make one turn, not two."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.integration.stack import Stack, fresh_vhost
from tests.integration.test_e2e import CHANNEL, task_id_of, wait_for_answer

OWNER, OTHER = "U0OWNER", "U0OTHER"
_ids = itertools.count(1)


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude):
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude).start()
    yield running
    running.stop()


def reply_event(thread_ts: str, text: str, user: str = OWNER, kind: str = "message", **more):
    """An Events API delivery of a message in a thread, as Slack sends it."""
    n = next(_ids)
    ts = more.pop("ts", f"1800000000.{n:06d}")
    event = {
        "type": kind,
        "user": user,
        "text": text,
        "ts": ts,
        "thread_ts": thread_ts,
        "channel": CHANNEL,
        "event_ts": ts,
        "channel_type": "channel",
    }
    return {
        "token": "unused",
        "team_id": "T0AICO",
        "api_app_id": "A0AICO",
        "event": event,
        "type": "event_callback",
        "event_id": more.pop("event_id", f"Ev{n:08d}"),
        "event_time": 1800000000,
    }


def answered_task(stack, slack, text: str) -> dict:
    task_id = task_id_of(stack.command(f"task {text}", user_id=OWNER)[1])
    parent, _ = wait_for_answer(slack, task_id)
    return parent


def send(stack, body: dict, **headers: str) -> None:
    status, _, elapsed = stack.sender.post(
        json.dumps(body).encode(), "application/json", headers=headers or None
    )
    assert status == 200 and elapsed < 3.0


def test_a_reply_in_the_thread_reaches_claude_with_the_earlier_turns(stack, slack, claude):
    # Given a task answered in its thread
    parent = answered_task(stack, slack, "name a colour")

    # When its requester replies in the thread
    send(stack, reply_event(parent["ts"], "and one more"))

    # Then Claude gets the conversation so far, and the answer comes in the same thread
    slack.wait_for(lambda: len(slack.replies(CHANNEL, parent["ts"])) == 2, 20)
    assert claude.calls[-1].body["messages"] == [
        {"role": "user", "content": "name a colour"},
        {"role": "assistant", "content": "Answer to: name a colour"},
        {"role": "user", "content": "and one more"},
    ]
    latest = slack.replies(CHANNEL, parent["ts"])[-1]
    assert "Answer to: and one more" in json.dumps(latest["blocks"])


def test_a_reply_delivered_twice_and_as_a_mention_is_one_turn(stack, slack, claude):
    parent = answered_task(stack, slack, "first")
    body = reply_event(parent["ts"], "<@U0AICO> second", ts="1800000001.000001")

    send(stack, body)
    send(stack, body, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    mention = reply_event(parent["ts"], "<@U0AICO> second", kind="app_mention")
    mention["event"]["ts"] = mention["event"]["event_ts"] = "1800000001.000001"
    send(stack, mention)

    slack.wait_for(lambda: len(slack.replies(CHANNEL, parent["ts"])) == 2, 20)
    assert [c.body["messages"][-1]["content"] for c in claude.calls] == ["first", "second"]


def test_someone_else_is_told_only_the_requester_may_continue(stack, slack, claude):
    parent = answered_task(stack, slack, "mine")

    send(stack, reply_event(parent["ts"], "me too", user=OTHER))

    told = slack.wait_for(lambda: slack.ephemerals(CHANNEL), 10)
    assert told[0]["user"] == OTHER and f"Only <@{OWNER}>" in told[0]["text"]
    assert len(claude.calls) == 1


def test_threads_aico_did_not_start_are_ignored(stack, slack, claude):
    human = slack.add_message(CHANNEL, "a thread of people")
    answered_task(stack, slack, "something else")  # the stack is up and answering

    send(stack, reply_event(human["ts"], "chatting among ourselves"))
    answered_task(stack, slack, "a later task")  # the reply was handled before its ack

    assert [c.body["messages"][-1]["content"] for c in claude.calls] == [
        "something else",
        "a later task",
    ]


@pytest.fixture
def open_stack(rabbit, tmp_path, slack, claude):
    settings = {"AICO_CONVERSATIONS": "channel"}
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **settings).start()
    yield running
    running.stop()


def test_with_conversations_open_to_the_channel_anyone_there_continues_it(
    open_stack, slack, claude
):
    # Given AICO_CONVERSATIONS=channel and a task answered in its thread
    parent = answered_task(open_stack, slack, "name a colour")

    # When someone else in the channel replies in the thread
    send(open_stack, reply_event(parent["ts"], "and a shape?", user=OTHER))

    # Then it is a turn: Claude gets the conversation, the answer comes in the thread
    slack.wait_for(lambda: len(slack.replies(CHANNEL, parent["ts"])) == 2, 20)
    assert claude.calls[-1].body["messages"] == [
        {"role": "user", "content": "name a colour"},
        {"role": "assistant", "content": "Answer to: name a colour"},
        {"role": "user", "content": "and a shape?"},
    ]
    latest = slack.replies(CHANNEL, parent["ts"])[-1]
    assert "Answer to: and a shape?" in json.dumps(latest["blocks"])
    assert slack.ephemerals(CHANNEL) == [], "no one was told they may not"


def test_claude_gets_only_the_latest_20_earlier_turns(stack, slack, claude):
    # Given a conversation of 21 answered turns (the task and 20 replies)
    claude.latency = 0
    parent = answered_task(stack, slack, "turn 0")
    for n in range(1, 21):
        send(stack, reply_event(parent["ts"], f"turn {n}"))
        slack.wait_for(lambda n=n: len(slack.replies(CHANNEL, parent["ts"])) == n + 1, 20)
    assert len(claude.calls[-1].body["messages"]) == 2 * 20 + 1, "20 earlier turns: all sent"

    # When one more reply comes
    send(stack, reply_event(parent["ts"], "turn 21"))
    slack.wait_for(lambda: len(slack.replies(CHANNEL, parent["ts"])) == 22, 20)

    # Then Claude gets the latest 20 earlier turns, in order, and the new one: not the first one
    messages = claude.calls[-1].body["messages"]
    assert len(messages) == 2 * 20 + 1
    assert [m["content"] for m in messages[0::2]] == [f"turn {n}" for n in range(1, 22)]
    assert [m["content"] for m in messages[1::2]] == [f"Answer to: turn {n}" for n in range(1, 21)]
    assert len(claude.calls) == 22
