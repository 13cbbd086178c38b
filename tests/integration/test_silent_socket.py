"""A Socket Mode socket gone silent, found end to end: Slack keeps answering the bot's pings but
routes no event to its connection any more. The bot's canary (its own post in the alert
channel, which Slack sends back over the socket) stops coming back: one alert in the alert
channel, a new connection, the bot answering again, and one recovery notice.

Real processes from the Procfile, a real broker, the fakes of Slack (its posts delivered back as
`message` events) and of the Socket Mode server (the fault injected from outside: go_deaf).
"""

from __future__ import annotations

import pytest

from aico.fakes.anthropic import FakeClaude
from aico.fakes.slack import FakeSlack
from aico.fakes.socket_mode import FakeSocketMode
from tests.integration.stack import BOT_TOKEN, Stack, fresh_vhost
from tests.integration.test_alerts import ALERTS, alerts, shown
from tests.integration.test_socket_mode import answered_once, ask

CANARY = "aico canary (ignore me)"
SILENT, BACK = "went silent", "delivers events again"
FAST = {
    "AICO_ALERT_CHANNEL": ALERTS,
    "AICO_CHECK_EVERY": "1",
    "AICO_CANARY_EVERY": "3",
    "AICO_CANARY_WAIT": "3",
}


@pytest.fixture
def canary_stack(rabbit, tmp_path):
    with (
        FakeSlack(bot_token=BOT_TOKEN) as slack,
        FakeClaude(latency=0.05) as claude,
        FakeSocketMode() as sm,
    ):
        sm.attach(slack)  # the bot's own posts come back to it over the socket
        stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, socket_mode_url=sm.url, **FAST)
        stack.env.pop("SLACK_SIGNING_SECRET")  # Socket Mode needs no signing secret
        stack.start()
        try:
            sm.wait_connected(timeout=30)
            yield stack, slack, claude, sm
        finally:
            codes = stack.stop()
            assert all(code == 0 for code in codes.values()), f"{codes}\n{stack.logs()}"


def canaries(slack: FakeSlack) -> list[dict]:
    return [m for m in slack.messages(ALERTS) if m["text"] == CANARY]


def deletes(slack: FakeSlack) -> int:
    return len(slack.calls_to("chat.delete"))


def test_a_silent_socket_makes_one_alert_a_new_connection_and_one_recovery_notice(canary_stack):
    _, slack, claude, sm = canary_stack
    # Given the canary comes back over the socket, and is cleared away
    slack.wait_for(lambda: deletes(slack) >= 1, timeout=30)
    assert alerts(slack, SILENT) == []

    # When Slack's side stops routing events to the bot's socket, pongs still flowing
    assert sm.go_deaf() == 1

    # Then one alert says so, the bot opens a new connection, and one notice says it is back
    alert = slack.wait_for(lambda: alerts(slack, SILENT), timeout=60)
    sm.wait_for(lambda: sm.connects == 2 and sm.live_connections == 1, timeout=30)
    notice = slack.wait_for(lambda: alerts(slack, BACK), timeout=60)
    assert len(alert) == 1 and len(notice) == 1
    slack.wait_for(lambda: "resolved after" in shown(alerts(slack, SILENT)[0]), timeout=10)
    assert sm.deaf_connections == 0, "the silent connection was closed"

    # And a slash command on the new connection is acked and answered, once
    task_id, envelope_id = ask(slack, sm, "after the silence")
    answered_once(slack, sm, task_id, envelope_id)
    assert claude.prompts() == ["after the silence"]

    # And while the canary goes on coming back, nothing more is said
    seen = deletes(slack)
    slack.wait_for(lambda: deletes(slack) >= seen + 2, timeout=30)
    assert len(alerts(slack, SILENT)) == 1 and len(alerts(slack, BACK)) == 1
    assert len(canaries(slack)) <= 1, "every canary but the latest is deleted"
    assert sm.connects == 2
