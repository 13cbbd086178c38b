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


OTHER_USER, OTHER_CHANNEL = "U0NEIGHBOUR", "C0OTHER"


@pytest.fixture
def channel_stack(rabbit, tmp_path, slack, claude):
    settings = {"AICO_BUDGET_CHANNEL_DAILY": "0.0001", "AICO_ADMINS": ADMIN}
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **settings).start()
    yield running
    running.stop()


def test_a_channel_over_budget_refuses_everyone_there_until_an_admin_raises_it(
    channel_stack, slack, claude
):
    stack = channel_stack
    # Given a channel whose daily budget one user's task used up
    first = task_id_of(stack.command("task spend it", user_id=USER)[1])
    wait_for_answer(slack, first)

    # When someone else asks for a task in that channel
    refused = said(stack.command("task my turn", user_id=OTHER_USER))

    # Then they are refused with what the channel spent and its limit; nothing is posted or asked
    assert "This channel's daily budget is spent: $0.0" in refused, refused
    assert "of $0.0001 today" in refused and "/aico budget channel" in refused
    assert len(slack.messages("C0CHAN1")) == 1 and len(claude.calls) == 1
    assert ":no_entry: spent" in said(stack.command("budget", user_id=OTHER_USER))

    # And the same person is served in another channel: the budget is this channel's
    url = slack.new_response_url(channel=OTHER_CHANNEL)
    elsewhere = stack.command(
        "task my turn", user_id=OTHER_USER, channel_id=OTHER_CHANNEL, response_url=url
    )
    task_id = task_id_of(elsewhere[1])
    slack.wait_for(lambda: any(task_id in m["text"] for m in slack.messages(OTHER_CHANNEL)))

    # And once an admin raises the channel's limit for today, the task goes through there
    assert "Only admins" in said(stack.command("budget channel 5", user_id=OTHER_USER))
    raised = said(stack.command("budget channel 5", user_id=ADMIN))
    assert "<#C0CHAN1>" in raised and "of $5.00 today" in raised
    again = task_id_of(stack.command("task my turn", user_id=OTHER_USER)[1])
    wait_for_answer(slack, again)
