"""Alerts in the alert channel, live: each fault injected from outside makes exactly one alert
and one recovery notice (the alert itself updated: "resolved after …"), and the system heals
without a person.

Real processes from the Procfile, a real broker (the test's own node, so that it can be stopped),
the fakes of Slack and Claude.
"""

from __future__ import annotations

import json

import psutil
import pytest

from aico.fakes.anthropic import FakeClaude
from aico.fakes.slack import FakeSlack
from tests.integration.stack import BOT_TOKEN, Stack, fresh_vhost, wait_until
from tests.integration.test_e2e import task_id_of, wait_for_answer
from tests.integration.test_lifecycle_promises import own_rabbit  # noqa: F401 (a fixture)

ALERTS = "C0ALERTS1"
FAST = {"AICO_ALERT_CHANNEL": ALERTS, "AICO_CHECK_EVERY": "1"}


def checks_running(slack: FakeSlack) -> bool:
    """The elected pm's checks have run: its auth.test (the bot's own is the first)."""
    return len(slack.calls_to("auth.test")) >= 2


def alerts(slack: FakeSlack, about: str) -> list[dict]:
    return [m for m in slack.messages(ALERTS) if about in m["text"]]


def shown(message: dict) -> str:
    return message["text"] + json.dumps(message.get("blocks"))


@pytest.fixture
def slack():
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        yield fake


def test_a_killed_worker_makes_one_alert_a_respawn_and_one_recovery_notice(rabbit, tmp_path, slack):
    with FakeClaude(latency=0.05) as claude:
        stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **FAST).start()
        try:
            pm = psutil.Process(stack.processes.processes["pm"].pid)

            def worker():
                kids = [p for p in pm.children() if "task" in p.cmdline()]
                return kids[0] if len(kids) == 1 else None

            victim = wait_until(worker, timeout=30)
            wait_until(lambda: checks_running(slack), timeout=30)

            # When the task worker is killed outright
            victim.kill()

            # Then one alert says so, a new worker is started, and one notice says it is back
            died = wait_until(lambda: alerts(slack, "died"), timeout=20)
            back = wait_until(lambda: alerts(slack, "was replaced"), timeout=30)
            assert len(died) == 1 and len(back) == 1
            assert str(victim.pid) in died[0]["text"] and "signal 9" in died[0]["text"]
            wait_until(lambda: "resolved after" in shown(slack.messages(ALERTS)[0]), timeout=10)

            # And the system works on, with nothing more said
            _, body, _ = stack.command("task still there?")
            wait_for_answer(slack, task_id_of(body))
            assert len(alerts(slack, "task worker")) == 2
        finally:
            stack.stop()


def test_a_stopped_broker_makes_one_alert_and_its_return_one_recovery_notice(
    own_rabbit,  # noqa: F811
    tmp_path,
    slack,
):
    with FakeClaude(latency=0.05) as claude:
        stack = Stack(tmp_path, own_rabbit.url, slack, claude, **FAST).start()
        try:
            wait_until(lambda: checks_running(slack), timeout=30)

            # When the broker stops for a while, and comes back
            own_rabbit.stop_app()
            try:
                down = wait_until(lambda: alerts(slack, "broker is down"), timeout=30)
            finally:
                own_rabbit.start_app()
            back = wait_until(lambda: alerts(slack, "broker recovered"), timeout=60)

            # Then one alert, one recovery notice, and the alert says it was resolved (updated
            # just after the notice is posted)
            assert len(down) == 1 and len(back) == 1

            def first() -> dict:
                return next(m for m in slack.messages(ALERTS) if m["ts"] == down[0]["ts"])

            wait_until(lambda: "resolved after" in shown(first()), timeout=10)
            assert len(alerts(slack, "broker is down")) == 1

            # And a task after it is answered as ever
            _, body, _ = stack.command("task after the outage")
            wait_for_answer(slack, task_id_of(body), timeout=60)
            assert len(alerts(slack, "broker")) == 2
        finally:
            stack.stop()


def test_a_dead_lettered_task_makes_one_alert_whose_retry_works_for_admins_only(
    rabbit, tmp_path, slack
):
    admin = "U0ADMIN1"
    settings = {**FAST, "AICO_ADMINS": admin}
    with FakeClaude(latency=0.05) as claude:
        stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **settings).start()
        try:
            wait_until(lambda: checks_running(slack), timeout=30)

            # When Claude refuses a task for good (400): it fails and is dead-lettered
            claude.fail_next(1, status=400)
            _, body, _ = stack.command("task a poison task")
            task_id = task_id_of(body)
            wait_for_answer(slack, task_id, status="Failed")

            # Then one alert names it, with a Retry button
            (alert,) = wait_until(lambda: alerts(slack, task_id), timeout=20)
            assert "dead-lettered" in alert["text"] and "aico_admin_retry" in shown(alert)

            # And the button refuses anyone but an admin, and retries the task for an admin
            (refusal,) = stack.press(ALERTS, alert, "aico_admin_retry", task_id, "U0USER1")
            assert "Only admins" in refusal.payload["text"]
            (retried,) = stack.press(ALERTS, alert, "aico_admin_retry", task_id, admin)
            assert task_id in retried.payload["text"]
            wait_for_answer(slack, task_id)  # Done: answered this time
            assert len(alerts(slack, task_id)) == 1
        finally:
            stack.stop()


def test_recover_by_an_admin_runs_the_checks_and_sweeps_and_reports(rabbit, tmp_path, slack):
    admin = "U0ADMIN1"
    with FakeClaude(latency=0.05) as claude:
        stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **FAST, AICO_ADMINS=admin)
        stack.start()
        try:
            wait_until(lambda: checks_running(slack), timeout=30)
            url = slack.new_response_url(channel="C0CHAN1")

            _, refused, _ = stack.command("recover", response_url=url)
            assert "Only admins" in refused
            status, body, _ = stack.command("recover", user_id=admin, response_url=url)
            assert status == 200 and "report comes here" in body

            (report,) = slack.wait_for(lambda: slack.responses_for(url), 20)
            text = report.payload["text"]
            assert "Recovery report" in text and "Checks: " in text and "Sweep: 0" in text
        finally:
            stack.stop()
