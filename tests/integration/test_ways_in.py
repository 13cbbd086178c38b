"""More ways in: an @mention of aico in a channel, and a direct message to it, are tasks like
`/aico task`, answered in that message's own thread with nothing else posted; Slack delivering
the message again (a retry, or as both a `message` and an `app_mention`) makes one task."""

from __future__ import annotations

import json

import pytest

from tests.integration.stack import Stack, fresh_vhost
from tests.integration.test_conversations import reply_event, send
from tests.integration.test_e2e import CHANNEL

pytestmark = pytest.mark.integration

OWNER = "U0OWNER"
DM = "D0OWNERDM"


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude):
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude).start()
    yield running
    running.stop()


def message_event(message: dict, channel: str, kind: str, channel_type: str, **more) -> dict:
    """The Events API delivery of `message` (as the fake holds it) as Slack sends it."""
    body = reply_event(message.get("thread_ts", ""), message["text"], kind=kind, **more)
    event = body["event"]
    event.update(ts=message["ts"], event_ts=message["ts"], channel=channel)
    event["channel_type"] = channel_type
    if not message.get("thread_ts"):
        event.pop("thread_ts")
    return body


def answers(slack, channel: str, thread_ts: str) -> list[dict]:
    """aico's messages in the thread (the user's own message is its parent)."""
    return [m for m in slack.replies(channel, thread_ts) if m.get("bot_id")]


def test_a_mention_is_answered_once_in_its_own_thread_with_no_parent_post(stack, slack, claude):
    asked = slack.add_message(CHANNEL, "<@U0AICO> summarise the release plan", user=OWNER)
    mention = message_event(asked, CHANNEL, "app_mention", "channel", event_id="EvMention1")

    # When Slack delivers the mention, then retries it, and also sends it as a message event
    send(stack, mention)
    send(stack, mention, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    send(stack, message_event(asked, CHANNEL, "message", "channel", event_id="EvMessage1"))

    # Then one answer comes, in the mention's own thread, and nothing else is posted
    done = slack.wait_for(
        lambda: [m for m in answers(slack, CHANNEL, asked["ts"]) if "Answer to" in json.dumps(m)],
        20,
    )
    assert len(done) == 1
    assert "Answer to: summarise the release plan" in json.dumps(done[0]["blocks"])
    top_level = [m for m in slack.messages(CHANNEL) if m.get("bot_id")]
    assert top_level == []
    assert claude.prompts() == ["summarise the release plan"]


def test_a_direct_message_is_a_task_answered_in_the_dm(stack, slack, claude):
    asked = slack.add_message(DM, "draft a reply to the customer", user=OWNER)

    send(stack, message_event(asked, DM, "message", "im", event_id="EvDm1"))

    done = slack.wait_for(
        lambda: [m for m in answers(slack, DM, asked["ts"]) if "Answer to" in json.dumps(m)], 20
    )
    assert len(done) == 1 and claude.prompts() == ["draft a reply to the customer"]


def test_a_mention_in_someone_elses_thread_is_answered_there_and_plain_replies_are_not(
    stack, slack, claude
):
    human = slack.add_message(CHANNEL, "a thread of people")
    chat = slack.add_message(CHANNEL, "chatting among ourselves", thread_ts=human["ts"])
    send(stack, message_event(chat, CHANNEL, "message", "channel"))
    mention = slack.add_message(
        CHANNEL, "<@U0AICO> what did we decide?", user=OWNER, thread_ts=human["ts"]
    )

    send(stack, message_event(mention, CHANNEL, "app_mention", "channel"))

    done = slack.wait_for(
        lambda: [m for m in answers(slack, CHANNEL, human["ts"]) if "Answer to" in json.dumps(m)],
        20,
    )
    assert len(done) == 1 and claude.prompts() == ["what did we decide?"]


def test_an_empty_mention_gets_a_clear_answer_and_makes_no_task(stack, slack, claude):
    asked = slack.add_message(CHANNEL, "<@U0AICO>", user=OWNER)

    send(stack, message_event(asked, CHANNEL, "app_mention", "channel"))

    told = slack.wait_for(lambda: slack.ephemerals(CHANNEL), 10)
    assert told[0]["user"] == OWNER and "Tell me what to do" in told[0]["text"]
    assert claude.calls == []
