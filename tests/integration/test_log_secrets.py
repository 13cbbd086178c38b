"""No log line of any process holds a configured secret (the bot token, the app token, the
signing secret, the Claude API key, the broker's and the database's passwords) or a whole
prompt, even at DEBUG, through a task's whole life, a failure and a forged request."""

from __future__ import annotations

import secrets

import pytest

from aico.fakes.anthropic import FakeClaude
from aico.fakes.signing import slash_command_body
from aico.fakes.slack import FakeSlack
from tests.integration.drills.conftest import Ledger
from tests.integration.stack import Stack, fresh_vhost


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_no_process_logs_a_secret_or_a_whole_prompt(rabbit, tmp_path, level):
    token, key, secret = (
        f"xoxb-{secrets.token_hex(12)}",
        f"sk-ant-{secrets.token_hex(16)}",
        secrets.token_hex(16),
    )
    prompt = "summarise this: " + " ".join(secrets.token_hex(4) for _ in range(60))
    with FakeSlack(bot_token=token) as slack, FakeClaude(api_key=key) as claude:
        settings = {
            "AICO_LOG_LEVEL": level,
            "SLACK_BOT_TOKEN": token,
            "ANTHROPIC_API_KEY": key,
            "SLACK_SIGNING_SECRET": secret,
        }
        stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **settings)
        stack.sender.secret = secret
        stack.start()
        try:
            ledger = Ledger(stack, slack, claude)
            ledger.submit(1, prompt)
            claude.fail_next(1, status=400)  # a failure is logged too
            ledger.submit(1, "this one fails")
            ledger.wait_settled(timeout=30)
            body = slash_command_body("task forged", response_url=slack.new_response_url())
            status, _, _ = stack.sender.post(body, headers={"X-Slack-Signature": "v0=" + "0" * 64})
            assert status == 401
        finally:
            stack.stop()
        logs = {name: stack.processes.log(name) for name in stack.processes.commands}
    assert all(logs.values()), "every process logged something"
    for name, text in logs.items():
        for value in (token, key, secret, prompt):
            assert value not in text, f"the {name} log holds a secret or a whole prompt"
