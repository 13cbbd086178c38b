"""Socket Mode: the same `/aico task`, through apps.connections.open -> hello -> envelope -> ack."""

from __future__ import annotations

import json
import time

import pytest

from tests.fakes.anthropic import FakeClaude
from tests.fakes.signing import slash_command_fields
from tests.fakes.slack import FakeSlack
from tests.fakes.socket_mode import FakeSocketMode
from tests.integration.stack import BOT_TOKEN, Stack, fresh_vhost
from tests.integration.test_e2e import CHANNEL, wait_for_answer


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
