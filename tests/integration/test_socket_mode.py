"""Socket Mode: the same `/aico task`, through apps.connections.open -> hello -> envelope -> ack,
and the bot riding out what Slack's sockets do: refresh requests, sockets gone mute, envelopes
delivered again when their ack did not arrive in time."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from aico.fakes.anthropic import FakeClaude
from aico.fakes.signing import slash_command_fields
from aico.fakes.slack import FakeSlack
from aico.fakes.socket_mode import FakeSocketMode
from tests.integration.stack import BOT_TOKEN, Stack, fresh_vhost
from tests.integration.test_conversations import reply_event
from tests.integration.test_e2e import CHANNEL, wait_for_answer

OWNER = "U0OWNER"


@pytest.fixture
def socket_stack(rabbit, tmp_path):
    with FakeSlack(bot_token=BOT_TOKEN) as slack, FakeClaude() as claude, FakeSocketMode() as sm:
        stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, socket_mode_url=sm.url)
        stack.env.pop("SLACK_SIGNING_SECRET")  # Socket Mode needs no signing secret
        stack.start()
        try:
            sm.wait_connected(timeout=30)
            yield stack, slack, claude, sm
        finally:
            codes = stack.stop()
            assert all(code == 0 for code in codes.values()), f"{codes}\n{stack.logs()}"


def test_a_task_over_socket_mode_is_acked_and_answered_in_its_thread(socket_stack):
    _, slack, claude, sm = socket_stack
    fields = slash_command_fields(
        "task plan the release",
        channel_id=CHANNEL,
        response_url=slack.new_response_url(channel=CHANNEL),
    )

    sent = time.perf_counter()
    ack = sm.send_slash_command(fields, timeout=3)
    assert time.perf_counter() - sent < 3.0

    task_id = ack["text"].split("`")[1]
    parent, replies = wait_for_answer(slack, task_id)
    assert "plan the release" in json.dumps(parent["blocks"])
    assert len(replies) == 1
    assert "Answer to: plan the release" in json.dumps(replies[0]["blocks"])
    assert claude.prompts() == ["plan the release"]
    assert slack.calls_to("apps.connections.open"), "the bot asked Slack for its socket URL"


def test_help_over_socket_mode(socket_stack):
    _, _, _, sm = socket_stack
    ack = sm.send_slash_command(slash_command_fields("help"), timeout=3)
    assert "/aico task &lt;what to do&gt;" in ack["text"]


def ask(slack: FakeSlack, sm: FakeSocketMode, text: str) -> tuple[str, str]:
    """`/aico task <text>` over the socket; (task id, envelope_id of the command)."""
    fields = slash_command_fields(
        f"task {text}",
        channel_id=CHANNEL,
        user_id=OWNER,
        response_url=slack.new_response_url(channel=CHANNEL),
    )
    envelope_id = sm.push_envelope(
        "slash_commands", fields, accepts_response_payload=True, timeout=10
    )
    ack = sm.wait_ack(envelope_id, timeout=10)
    return ack["text"].split("`")[1], envelope_id


def answered_once(slack: FakeSlack, sm: FakeSocketMode, task_id: str, envelope_id: str) -> None:
    _, replies = wait_for_answer(slack, task_id, timeout=30)
    assert len(replies) == 1
    parents = [m for m in slack.messages(CHANNEL) if f"Task {task_id} " in m["text"]]
    assert len(parents) == 1
    assert [f["envelope_id"] for f in sm.frames].count(envelope_id) == 1


def test_a_refresh_request_is_followed_and_the_next_command_answered_once(socket_stack):
    _, slack, claude, sm = socket_stack

    # When Slack asks the bot to move to a new socket (and drops the old one soon after)
    sm.send_disconnect("refresh_requested", close_after=10)

    # Then the bot opens a new connection and leaves the old one
    sm.wait_for(lambda: sm.connects == 2 and sm.connections == 1, timeout=30)
    assert len(slack.calls_to("apps.connections.open")) == 2
    # And a command sent on the new socket is acked and answered, once
    task_id, envelope_id = ask(slack, sm, "after the refresh")
    answered_once(slack, sm, task_id, envelope_id)
    assert claude.prompts() == ["after the refresh"]


def test_a_socket_gone_mute_is_replaced_by_the_bot_itself(socket_stack):
    # slack_sdk's built-in client calls a socket stale after 4 x ping_interval without a pong;
    # the bot pings every 3 s (Bolt's default of 10 s took 40 to 50 s): about 15 s.
    _, slack, claude, sm = socket_stack

    # When the bot's socket stays open but Slack's side goes mute (no pongs, no envelopes)
    assert sm.go_silent() == 1

    # Then the bot notices by itself and connects again
    sm.wait_connects(2, timeout=30)
    # And a command on the new socket makes exactly one task, answered once
    task_id, envelope_id = ask(slack, sm, "after the silence")
    answered_once(slack, sm, task_id, envelope_id)
    assert claude.prompts() == ["after the silence"]


def test_a_reply_delivered_again_after_its_ack_was_lost_makes_one_turn(socket_stack):
    _, slack, claude, sm = socket_stack
    task_id, _ = ask(slack, sm, "name a colour")
    parent, _ = wait_for_answer(slack, task_id, timeout=30)

    # When the requester replies in the thread and the bot's ack of that event is lost, so that
    # Slack delivers the event again (retry_attempt 1) once ack_timeout has passed
    sm.drop_acks(1)
    body = reply_event(parent["ts"], "and one more", user=OWNER)
    envelope_id = sm.push_envelope("events_api", body, retry_attempt=0, retry_reason="")
    sm.wait_ack(envelope_id, timeout=20)
    assert [c["retry_attempt"] for c in sm.copies(envelope_id)][:2] == [0, 1]

    # Then the reply is one turn: one answer in the thread, one Claude call for it
    slack.wait_for(lambda: len(slack.replies(CHANNEL, parent["ts"])) == 2, 30)
    later_id, _ = ask(slack, sm, "a later task")  # by its answer, a second turn would show
    wait_for_answer(slack, later_id, timeout=30)
    assert [c.body["messages"][-1]["content"] for c in claude.calls] == [
        "name a colour",
        "and one more",
        "a later task",
    ]
    assert len(slack.replies(CHANNEL, parent["ts"])) == 2
    assert slack.ephemerals(CHANNEL) == []


def test_in_socket_mode_the_port_still_answers_healthz_and_metrics(socket_stack):
    stack, *_ = socket_stack
    stack.wait_healthy(timeout=15)
    base = f"http://127.0.0.1:{stack.port}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert "aico_workers_live" in text and 'aico_queue_ready{queue="aico.tasks"}' in text
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/slack/events", timeout=5)  # Slack's side is the socket
    assert refused.value.code == 404
