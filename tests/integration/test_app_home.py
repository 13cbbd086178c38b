"""The App Home tab, live: the whole stack from the Procfile, a real broker, the fakes of Slack and
Claude. Slack's `app_home_opened` event and the Home's button clicks are sent to the bot as Slack
sends them; what each user sees is the view the fake Slack holds for them (views.publish)."""

from __future__ import annotations

import json

from aico.fakes.anthropic import FakeClaude
from aico.fakes.slack import FakeSlack
from core.domain import pool
from core.slack import home
from tests.integration.drills.conftest import event_store
from tests.integration.stack import Stack, fresh_vhost, wait_until
from tests.integration.test_alerts import FAST, alerts, checks_running
from tests.integration.test_e2e import task_id_of, wait_for_answer

ADMIN, USER, OTHER = "U0ADMIN1", "U0USER1", "U0USER2"


def open_home(stack: Stack, user: str, n: int) -> None:
    body = {
        "type": "event_callback",
        "team_id": "T0AICO",
        "api_app_id": "A0AICO",
        "event_id": f"Ev0HOME{n:04d}",
        "event_time": 1700000200 + n,
        "event": {"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "home",
                  "event_ts": f"1700000200.{n:06d}"},
    }  # fmt: skip
    status, _, elapsed = stack.sender.event(body)
    assert status == 200 and elapsed < 3.0


def press(stack: Stack, user: str, action_id: str, value: str) -> None:
    """A click on a button of the user's Home: no response_url, as Slack sends it."""
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "api_app_id": "A0AICO",
        "team": {"id": "T0AICO"},
        "container": {"type": "view", "view_id": "V0HOME"},
        "view": {"id": "V0HOME", "type": "home", "callback_id": "aico_home"},
        "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": action_id, "value": value}],
    }
    status, _, elapsed = stack.sender.action(payload)
    assert status == 200 and elapsed < 3.0


def published(slack: FakeSlack, user: str, count: int = 1) -> str:
    """The text of the user's Home once `count` views were published for them."""
    slack.wait_for(lambda: len(slack.published_views(user)) >= count, 20)
    view = slack.home_view(user)
    assert view is not None and view["type"] == "home" and len(view["blocks"]) <= 100
    return json.dumps(view["blocks"], ensure_ascii=False)


def retry_buttons(slack: FakeSlack, user: str) -> list[str]:
    view = slack.home_view(user) or {"blocks": []}
    return [
        b["accessory"]["value"]
        for b in view["blocks"]
        if (b.get("accessory") or {}).get("action_id") == home.RETRY_ACTION
    ]


def test_an_admin_sees_the_queues_and_a_retry_for_a_dead_letter_others_their_own_tasks(
    rabbit, tmp_path, slack
) -> None:
    with FakeClaude(latency=0.05) as claude:
        settings = {**FAST, "AICO_ADMINS": ADMIN}
        stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **settings).start()
        try:
            wait_until(lambda: checks_running(slack), timeout=30)

            # Given a task Claude refuses for good (dead-lettered, alerted) and another user's task
            claude.fail_next(1, status=400)
            _, body, _ = stack.command("task a poison task", user_id=USER)
            poison = task_id_of(body)
            wait_for_answer(slack, poison, status="Failed")
            wait_until(lambda: alerts(slack, poison), timeout=20)
            _, body, _ = stack.command("task my own work", user_id=OTHER)
            mine = task_id_of(body)
            wait_for_answer(slack, mine)

            # When the admin opens the Home tab
            open_home(stack, ADMIN, 1)

            # Then the ops console shows the queues and the dead letter, with a Retry for it
            shown = published(slack, ADMIN)
            assert "tasks: " in shown and "consumer(s)" in shown
            assert "dead-lettered" in shown and poison in shown
            assert retry_buttons(slack, ADMIN) == [poison]

            # And its Retry retries the task, and the Home is published again saying so
            press(stack, ADMIN, home.RETRY_ACTION, poison)
            assert poison in published(slack, ADMIN, count=2)
            wait_for_answer(slack, poison)  # Done: answered this time

            # When another user opens it, they see their own task only, and no admin button
            open_home(stack, OTHER, 2)
            shown = published(slack, OTHER)
            assert mine in shown and poison not in shown
            assert home.SCALE_UP_ACTION not in shown and "Queues" not in shown
        finally:
            stack.stop()


def test_the_scale_button_pins_the_pool_for_an_admin_and_is_refused_to_anyone_else(
    rabbit, tmp_path, slack
) -> None:
    with FakeClaude(latency=0.05) as claude:
        settings = {"AICO_ADMINS": ADMIN, "AICO_MAX_WORKERS": "3"}
        stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **settings).start()
        try:

            def decided() -> pool.Record | None:
                with event_store(stack) as store:
                    return store.latest(pool.DECISION)

            def pinned() -> pool.Record | None:
                with event_store(stack) as store:
                    return store.latest(pool.PIN)

            target = int(wait_until(decided, timeout=30).data["target"])

            # When a user who is not an admin presses Scale +1 (a forged click: their Home has
            # no such button): refused, on their Home, and nothing pinned
            press(stack, OTHER, home.SCALE_UP_ACTION, "+1")
            assert "Only admins" in published(slack, OTHER)
            assert pinned() is None

            # When the admin presses it: the pool is pinned to one more than the policy wanted
            press(stack, ADMIN, home.SCALE_UP_ACTION, "+1")
            assert "pinned to" in published(slack, ADMIN)
            pin = pinned()
            assert pin is not None and pin.type == pool.PINNED
            assert pin.data == {"workers": target + 1, "by": ADMIN}
        finally:
            stack.stop()
