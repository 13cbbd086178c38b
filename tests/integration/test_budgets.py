"""Daily budgets: a user who has spent theirs is refused at intake with the figures, and an
admin can raise it for today."""

from __future__ import annotations

import json

import pytest

from tests.integration.stack import Stack, fresh_vhost
from tests.integration.test_e2e import task_id_of, wait_for_answer

USER, ADMIN = "U0SPENDER", "U0ADMIN"


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude):
    settings = {"AICO_BUDGET_USER_DAILY": "0.0001", "AICO_ADMINS": ADMIN}
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **settings).start()
    yield running
    running.stop()


def said(result) -> str:
    status, body, elapsed = result
    assert status == 200 and elapsed < 3.0
    return json.loads(body)["text"]


def test_a_user_over_budget_is_refused_with_the_figures_until_an_admin_raises_it(stack, slack):
    # Given a user whose first task used up their daily budget
    first = task_id_of(stack.command("task spend it", user_id=USER)[1])
    wait_for_answer(slack, first)

    # When they ask for another
    refused = said(stack.command("task one more", user_id=USER))

    # Then they are refused with what they spent and the limit, and nothing is posted
    assert "Your daily budget is spent: $0.0" in refused and "of $0.0001 today" in refused
    assert len(slack.messages("C0CHAN1")) == 1
    assert ":no_entry: spent" in said(stack.command("budget", user_id=USER))

    # And only an admin can raise it, after which the task goes through
    assert "Only admins" in said(stack.command(f"budget user {USER} 5", user_id=USER))
    raised = said(stack.command(f"budget user <@{USER}|spender> 5", user_id=ADMIN))
    assert "of $5.00 today" in raised
    again = task_id_of(stack.command("task one more", user_id=USER)[1])
    wait_for_answer(slack, again)


def test_a_bad_budget_command_says_how(stack):
    assert "/aico budget user" in said(stack.command("budget user nobody lots", user_id=ADMIN))
    assert "positive amount" in said(stack.command("budget channel -3", user_id=ADMIN))
