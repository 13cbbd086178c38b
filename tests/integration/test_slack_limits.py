"""Slack's own rate limits, turned on in the fake: a burst of tasks into one channel is paced,
and what Slack still refuses with 429 is waited out, never lost or posted twice."""

from __future__ import annotations

import json

from tests.integration.stack import Stack, fresh_vhost
from tests.integration.test_e2e import CHANNEL, parent_of, task_id_of, wait_for_answer


def test_a_burst_into_one_channel_under_slacks_real_limits_is_answered_once_each(
    rabbit, tmp_path, slack, claude
):
    # Given Slack enforcing its limits (1 post a second per channel, short bursts) and aico's
    # default pacing of one channel
    slack.enforce_rate_limits = True
    settings = {"AICO_SLACK_CHANNEL_RATE": "1", "AICO_SLACK_CHANNEL_BURST": "5"}
    stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **settings).start()
    try:
        # When eight tasks arrive at once in one channel
        ids = [task_id_of(stack.command(f"task burst {i}")[1]) for i in range(8)]
        answers = {task_id: wait_for_answer(slack, task_id, timeout=90)[1] for task_id in ids}
    finally:
        stack.stop()

    # Then each has one parent message and one answer in its thread
    assert len(slack.messages(CHANNEL)) == 8
    for i, task_id in enumerate(ids):
        assert parent_of(slack, task_id) is not None
        (answer,) = answers[task_id]
        assert f"Answer to: burst {i}" in json.dumps(answer["blocks"])
    assert len(claude.prompts()) == 8
