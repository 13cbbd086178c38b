"""`/aico …` as its listener answers it: called the way Bolt calls it (keyword arguments `ack` and
`command`, the command as Slack sends its fields), on the real core services and a real SQLite
store. What the user sees is the one ack: it carries the answer, and nothing follows it."""

from __future__ import annotations

from typing import Any

import pytest

from aico.fakes.signing import slash_command_fields
from core.domain import events
from core.domain.task import TaskStatus
from core.usecases.intake import TaskRequest
from tests.unit.bot.standins import (
    ADMIN,
    CHANNEL,
    MAX_CHARS,
    OTHER_CHANNEL,
    OWNER,
    RESULTS_QUEUE,
    STRANGER,
    TASKS_QUEUE,
    Answer,
    World,
)


def aico(
    world: World, text: str, user: str = OWNER, channel: str = CHANNEL, **fields: Any
) -> Answer:
    """Run `/aico <text>` as `user` in `channel`; the ack the user was answered with."""
    ack = Answer("ack", world.log, probe=lambda: world.store.recent(5, user=user))
    command = slash_command_fields(text, user_id=user, channel_id=channel, **fields)
    world.app.commands["/aico"](ack=ack, command=command)
    return ack


def text_of(answer: dict[str, Any]) -> str:
    """Everything the user reads in an answer: its text and its sections' text."""
    parts = [answer.get("text") or ""]
    for block in answer.get("blocks") or []:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts.extend(e["text"] for e in block.get("elements", []))
    return "\n".join(parts)


def test_register_wires_the_aico_command_the_buttons_and_the_events(world) -> None:
    assert set(world.app.commands) == {"/aico"}
    assert set(world.app.actions) == {
        "aico_cancel",
        "aico_retry",
        "aico_admin_retry",
        "aico_home_scale_up",
        "aico_home_scale_down",
        "aico_home_scale_auto",
        "aico_home_recover",
        "aico_home_retry",
        "aico_home_refresh",
        "aico_change_approve",
        "aico_change_reject",
        "aico_make_change",
        "aico_feedback",
        "aico_project_confirm",
        "aico_project_stop",
        "aico_project_retry",
        "aico_plan_it",
    }
    assert set(world.app.events) == {
        "message",
        "app_mention",
        "app_home_opened",
        "agent_session_stopped",
    }


# --------------------------------------------------------------------------- task


def test_a_task_is_recorded_then_acked_with_its_id(world) -> None:
    # When a user asks for a task
    ack = aico(world, "task write the release notes", trigger_id="111.222.abc")

    # Then the one ack tells them its id and where the answer will come, only to them
    answer = ack.only()
    [task] = world.store.recent(5, user=OWNER)
    assert answer["response_type"] == "ephemeral"
    assert answer["text"] == (
        f":inbox_tray: Task `{task.id}` received. It is posted in this channel; "
        "progress and the answer will appear in that message's thread."
    )
    # and the task was in the store before the ack went out (nothing acked is lost)
    assert [t.id for t in ack.seen[0]] == [task.id]
    assert (task.prompt, task.user, task.channel) == ("write the release notes", OWNER, CHANNEL)
    # and the ack is the last thing the listener did
    assert world.log.names()[-1] == "ack"


def test_the_intake_is_asked_with_who_where_what_and_the_delivery_key(world) -> None:
    url = "https://hooks.slack.com/commands/T0AICO/1/abc"
    aico(world, "task  tidy\nthe docs ", trigger_id="111.222.abc", response_url=url)

    [call] = world.log.named("intake.submit")
    assert call.args == (
        TaskRequest(
            user=OWNER, channel=CHANNEL, text="tidy\nthe docs", response_url=url, key="111.222.abc"
        ),
    )


def test_the_ack_does_not_wait_for_the_parent_message_to_be_posted(world) -> None:
    # Given Slack holds every chat.postMessage
    world.slack.hold()

    # When a task comes in, Then it is acked while its parent message is still being posted
    ack = aico(world, "task summarise the incident")
    assert ack.only()["text"].startswith(":inbox_tray: Task ")
    assert world.slack.of("post") == []

    # And once Slack answers, the parent message is posted in the channel and the task queued
    world.slack.release()
    [(channel, text, _, thread_ts, metadata, _)] = world.slack.wait_for("post")
    [task] = world.store.recent(5, user=OWNER)
    assert (channel, thread_ts) == (CHANNEL, None)
    assert text.startswith(f"Task {task.id} from <@{OWNER}>")
    assert metadata["event_payload"] == {"task_id": task.id}
    assert world.broker.wait_for("publish")[0][2] == task.id


def test_a_delivery_of_the_same_command_again_acks_the_same_task(world) -> None:
    # Given Slack delivers one `/aico task` twice (the same trigger_id)
    first = aico(world, "task one thing", trigger_id="111.222.same").only()["text"]
    again = aico(world, "task one thing", trigger_id="111.222.same").only()["text"]

    # Then one task exists, and both acks name it
    [task] = world.store.recent(5, user=OWNER)
    assert task.id in first
    assert again == first


@pytest.mark.parametrize("text", ["task", "task    ", "task \n\t ", "TASK"])
def test_an_empty_task_says_what_to_type_and_records_nothing(world, text: str) -> None:
    ack = aico(world, text)
    assert ack.only() == {
        "text": ":warning: Tell me what to do: `/aico task &lt;what to do&gt;`.",
        "response_type": "ephemeral",
    }
    assert world.store.recent(5) == []


def test_a_task_over_the_limit_says_how_long_it_was_and_records_nothing(world) -> None:
    ack = aico(world, "task " + "x" * (MAX_CHARS + 1))
    assert ack.only()["text"] == (
        f":warning: That task is {MAX_CHARS + 1:,} characters; the limit is {MAX_CHARS:,}. "
        "Shorten it, or put the details in a file or a repository and point me at it."
    )
    assert world.store.recent(5) == []
    assert world.slack.calls == []


def test_a_task_exactly_at_the_limit_is_taken(world) -> None:
    ack = aico(world, "task " + "x" * MAX_CHARS)
    assert ack.only()["text"].startswith(":inbox_tray: Task ")


def test_a_user_whose_budget_is_spent_is_told_the_figures_and_who_can_raise_it(world) -> None:
    # Given the user spent $6 today against a $5 daily budget
    world.task(until=events.COMPLETED, cost=6.0)

    # When they ask for another task
    ack = aico(world, "task one more")

    # Then they are refused with the figures, and nothing new is recorded
    assert ack.only()["text"] == (
        ":warning: Your daily budget is spent: $6.00 of $5.00 today (UTC). It resets at "
        "midnight UTC; an admin can raise it for today with "
        f"`/aico budget user <@{OWNER}> <usd>`."
    )
    assert len(world.store.recent(5, user=OWNER)) == 1


# --------------------------------------------------------------------------- help and unknown


@pytest.mark.parametrize("text", ["", "help", "HELP", "  help  me  "])
def test_help_lists_the_verbs_and_the_task_limit(world, text: str) -> None:
    answer = aico(world, text).only()
    assert answer["response_type"] == "ephemeral"
    shown = text_of(answer)
    assert f"up to {MAX_CHARS:,} characters" in shown
    for verb in ("task", "status", "history", "show", "cancel", "retry", "budget", "help"):
        assert f"`/aico {verb}" in shown
    assert "I don't know" not in shown


def test_an_unknown_verb_is_named_before_the_help(world) -> None:
    answer = aico(world, "frobnicate the widgets").only()
    assert answer["text"].startswith("I don't know `frobnicate`.\n\n*aico* hands tasks to Claude")
    assert answer["blocks"][0]["text"]["text"] == answer["text"]
    assert world.store.recent(5) == []


def test_an_unknown_verb_cannot_ping_the_channel(world) -> None:
    answer = aico(world, "<!channel> hello").only()
    assert answer["text"].startswith("I don't know `&lt;!channel&gt;`.")


# --------------------------------------------------------------------------- status


def test_status_shows_the_queues_workers_and_todays_spend(world) -> None:
    world.task(until=events.COMPLETED, cost=0.25)

    answer = aico(world, "status").only()

    assert answer["response_type"] == "ephemeral"
    shown = text_of(answer)
    assert "*aico status*" in shown
    assert "tasks: 3 waiting, 2 consumer(s) · results: 0 waiting, 1 consumer(s)" in shown
    assert ":warning: no task worker has reported in the last 15 s" in shown
    assert "1 done, 0 failed, 0 cancelled" in shown
    assert f"<@{OWNER}> $0.2500 (1)" in shown
    assert world.log.named("status.report")


def test_status_says_so_when_the_broker_cannot_be_read(world, monkeypatch) -> None:
    from core.errors import BrokerUnavailable

    def unreachable(queue: str) -> tuple[int, int]:
        raise BrokerUnavailable("connection refused")

    monkeypatch.setattr(world.services.status._real, "depth", unreachable)
    shown = text_of(aico(world, "status").only())
    assert ":warning: RabbitMQ cannot be read: connection refused" in shown


# --------------------------------------------------------------------------- history and show


def test_history_with_no_tasks_says_so(world) -> None:
    assert aico(world, "history").only() == {
        "text": "No tasks yet for you.",
        "response_type": "ephemeral",
    }


def test_history_lists_the_users_own_tasks_and_asks_the_store_for_ten(world) -> None:
    mine = world.task(prompt="my first")
    theirs = world.task(user=STRANGER, prompt="their task")

    answer = aico(world, "history").only()

    shown = text_of(answer)
    assert answer["text"] == "Latest tasks for you"
    assert mine.id in shown and "my first" in shown
    assert theirs.id not in shown
    assert "Today (UTC), you:" in shown
    [call] = world.log.named("tasks.recent")
    assert call.args == (10,) and call.kwargs == {"user": OWNER}


def test_history_channel_n_lists_this_channels_tasks(world) -> None:
    mine = world.task(prompt="my first")
    theirs = world.task(user=STRANGER, prompt="their task")
    elsewhere = world.task(channel=OTHER_CHANNEL, prompt="elsewhere")

    answer = aico(world, "history channel 3").only()

    shown = text_of(answer)
    assert answer["text"] == "Latest tasks for this channel"
    assert mine.id in shown and theirs.id in shown
    assert elsewhere.id not in shown
    [call] = world.log.named("tasks.recent")
    assert call.args == (3,) and call.kwargs == {"channel": CHANNEL}


@pytest.mark.parametrize(
    ("args", "told"),
    [
        ("0", "Ask for 1 to 50 tasks."),
        ("100", "Ask for 1 to 50 tasks."),
        (
            "lots",
            "Use `/aico history [n]` for yours, `/aico history channel [n]` for this channel's.",
        ),
    ],
)
def test_history_arguments_it_cannot_use_are_explained(world, args: str, told: str) -> None:
    assert aico(world, f"history {args}").only() == {
        "text": f":warning: {told}",
        "response_type": "ephemeral",
    }
    assert world.log.named("tasks.recent") == []


def test_show_gives_the_tasks_timeline_even_typed_in_capitals_and_backticks(world) -> None:
    task = world.task(until=events.FAILED)

    answer = aico(world, f"show `{task.id.upper()}`").only()

    shown = text_of(answer)
    assert answer["text"] == f"Task {task.id}: failed"
    assert f"*Task `{task.id}`* from <@{OWNER}> in <#{CHANNEL}>" in shown
    for line in (
        "submitted",
        "parent message posted",
        "queued",
        "attempt started (delivery 1) on host-1",
    ):
        assert line in shown
    assert "failed: Claude is overloaded" in shown


@pytest.mark.parametrize(
    ("args", "named"), [("nope", "nope"), ("NoPe", "nope"), ("", "?"), ("<@U1>", "&lt;@u1&gt;")]
)
def test_show_of_an_unknown_task_points_to_history(world, args: str, named: str) -> None:
    # The id is looked for (and echoed) in lower case, escaped so it cannot ping anyone.
    assert aico(world, f"show {args}").only() == {
        "text": f":warning: There is no task `{named}`. `/aico history` lists yours.",
        "response_type": "ephemeral",
    }


# --------------------------------------------------------------------------- cancel and retry


def test_the_owner_cancels_a_queued_task_and_its_thread_is_told(world) -> None:
    task = world.task()

    ack = aico(world, f"cancel {task.id}")

    assert ack.only()["text"] == (
        f":no_entry_sign: Task `{task.id}` is cancelled. Its thread says so too."
    )
    [call] = world.log.named("control.cancel")
    assert call.args == (task.id, OWNER)
    assert world.store.task(task.id).status is TaskStatus.CANCELLED
    assert world.broker.published_to(RESULTS_QUEUE) == [f"{task.id}:cancelled"]


def test_someone_else_cannot_cancel_a_task(world) -> None:
    task = world.task()

    text = aico(world, f"cancel {task.id}", user=STRANGER).only()["text"]

    assert text == (
        f":warning: Only <@{OWNER}>, who asked for task `{task.id}`, or an admin can cancel it."
    )
    assert world.store.task(task.id).status is TaskStatus.QUEUED


def test_an_admin_can_cancel_anyones_task(world) -> None:
    task = world.task()
    text = aico(world, f"cancel {task.id}", user=ADMIN).only()["text"]
    assert text.startswith(f":no_entry_sign: Task `{task.id}` is cancelled.")
    assert world.store.task(task.id).cancelled_by == ADMIN


def test_cancelling_a_finished_task_says_it_is_finished(world) -> None:
    task = world.task(until=events.COMPLETED)
    text = aico(world, f"cancel {task.id}").only()["text"]
    assert text == f":warning: Task `{task.id}` is already done."


@pytest.mark.parametrize("verb", ["cancel", "retry"])
@pytest.mark.parametrize(("args", "named"), [("", "?"), ("zzzz", "zzzz"), ("a b", "a b")])
def test_cancel_or_retry_of_no_such_task(world, verb: str, args: str, named: str) -> None:
    text = aico(world, f"{verb} {args}").only()["text"]
    assert text == f":warning: There is no task `{named}`. `/aico history` lists yours."


def test_a_failed_task_is_retried_and_queued_again(world) -> None:
    task = world.task(until=events.FAILED)

    text = aico(world, f"retry {task.id}").only()["text"]

    assert text == (
        f":repeat: Task `{task.id}` is queued again (retry 1). The new answer comes in its thread."
    )
    assert world.broker.wait_for("publish")[0][:1] == (TASKS_QUEUE,)
    assert world.store.task(task.id).generation == 1


def test_a_queued_task_cannot_be_retried(world) -> None:
    task = world.task()
    text = aico(world, f"retry {task.id}").only()["text"]
    assert text == (
        f":warning: Task `{task.id}` is queued: only a failed or cancelled task can be retried."
    )


# --------------------------------------------------------------------------- budget


def test_budget_shows_where_the_user_and_the_channel_stand(world) -> None:
    world.task(until=events.COMPLETED, cost=1.5)

    answer = aico(world, "budget").only()

    assert answer == {
        "text": (
            "*Budgets*\n"
            f"• <@{OWNER}>: $1.50 of $5.00 today (UTC)\n"
            f"• <#{CHANNEL}>: $1.50 of $50.00 today (UTC)"
        ),
        "response_type": "ephemeral",
    }


def test_an_admin_raises_a_users_budget_named_by_mention(world) -> None:
    # Given the owner has spent their budget
    world.task(until=events.COMPLETED, cost=6.0)

    # When an admin raises it for today, naming them as Slack escapes a mention
    ack = aico(world, f"budget user <@{OWNER}|ada> 20", user=ADMIN)

    # Then the admin sees the new standing, and the owner may ask again
    assert ack.only()["text"] == f"*Budgets*\n• <@{OWNER}>: $6.00 of $20.00 today (UTC)"
    [call] = world.log.named("budgets.raise_today")
    assert call.args == ("user", OWNER, 20.0) and call.kwargs == {"by": ADMIN}
    assert aico(world, "task one more").only()["text"].startswith(":inbox_tray: Task ")


def test_an_admin_raises_this_channels_budget(world) -> None:
    text = aico(world, "budget channel $75", user=ADMIN).only()["text"]
    assert text == f"*Budgets*\n• <#{CHANNEL}>: $0.0000 of $75.00 today (UTC)"
    [call] = world.log.named("budgets.raise_today")
    assert call.args == ("channel", CHANNEL, 75.0)


@pytest.mark.parametrize("args", ["user U0OTHER 20", "channel 75"])
def test_a_non_admin_cannot_change_a_budget(world, args: str) -> None:
    text = aico(world, f"budget {args}").only()["text"]
    assert text == ":warning: Only admins (`AICO_ADMINS`) can change budgets."
    assert world.log.named("budgets.raise_today") == []
    assert world.budgets.limits("U0OTHER", CHANNEL)[1].usd == 50.0


@pytest.mark.parametrize(
    ("args", "told"),
    [
        ("user", "Use `/aico budget` to see"),
        ("channel lots", "`lots` is not an amount in US dollars."),
        ("channel 0", "A budget is a positive amount of US dollars, like `25`."),
    ],
)
def test_an_admins_budget_change_it_cannot_read_is_explained(world, args, told) -> None:
    text = aico(world, f"budget {args}", user=ADMIN).only()["text"]
    assert text.startswith(f":warning: {told}")
    assert world.log.named("budgets.raise_today") == []


def test_budget_where_budgets_are_not_kept(world) -> None:
    app = world.with_services(budgets=None)
    ack = Answer("ack", world.log)
    app.commands["/aico"](ack=ack, command=slash_command_fields("budget", user_id=ADMIN))
    assert ack.only()["text"] == ":warning: Budgets are not kept here."


# --------------------------------------------------------------------------- scale


def test_an_admin_pins_the_pool_and_hands_it_back_to_the_policy(world) -> None:
    from core.domain import pool

    # Given a pm that runs 1 to 5 task workers
    beat = {"kind": "pm", "pm": "h1:1", "min": 1, "max": 5, "workers": 1}
    world.store.heartbeat("pm:h1:1", beat)

    # When an admin pins the pool to 3
    text = aico(world, "scale 3", user=ADMIN).only()["text"]

    # Then the pin is an event the pm follows, and the admin is told so
    assert world.store.latest(pool.PIN).data == {"workers": 3, "by": ADMIN}
    assert text.startswith("The pool is pinned to 3 task worker(s): the pm applies it")

    # And beyond the hosts' bounds the admin is told what will run
    text = aico(world, "scale 9", user=ADMIN).only()["text"]
    assert "the hosts allow 1 to 5" in text and "so 5 will run" in text

    # And `auto` hands it back
    assert aico(world, "scale auto", user=ADMIN).only()["text"] == (
        "The pool follows the scaling policy again."
    )
    assert world.store.latest(pool.PIN).type == pool.UNPINNED


def test_a_non_admin_cannot_scale_the_pool(world) -> None:
    from core.domain import pool

    text = aico(world, "scale 4").only()["text"]

    assert text == ":warning: Only admins (`AICO_ADMINS`) can scale the pool."
    assert world.store.latest(pool.PIN) is None


@pytest.mark.parametrize("args", ["", "lots", "-1", "2.5", "1001"])
def test_a_scale_that_is_not_a_count_gets_a_clear_answer(world, args: str) -> None:
    from core.domain import pool

    text = aico(world, f"scale {args}", user=ADMIN).only()["text"]

    assert text.startswith(":warning:") and ("/aico scale" in text or "0 to 1000" in text)
    assert world.store.latest(pool.PIN) is None


def test_status_shows_the_pool_its_target_and_last_decision(world) -> None:
    from core.domain import pool

    beat = {"kind": "pm", "pm": "h1:1", "min": 1, "max": 5, "workers": 2, "leader": True}
    world.store.heartbeat("pm:h1:1", beat)
    data = {"target": 2, "current": 1, "policy": "aico", "reason": "burst of 12 queued"}
    world.store.record(pool.DECISION, pool.SCALED, data)

    shown = text_of(aico(world, "status").only())

    assert "h1:1 (leader) runs 2" in shown
    assert "Target 2 task worker(s) (aico)" in shown and "1 → 2, burst of 12 queued" in shown


# --------------------------------------------------------------------------- recover


def test_recover_is_for_admins_and_is_asked_of_the_elected_pm(world) -> None:
    from core.usecases.operations import ASKED, REQUESTS

    refused = aico(world, "recover").only()["text"]
    assert refused == ":warning: Only admins (`AICO_ADMINS`) can run the recovery."
    assert world.store.latest(REQUESTS) is None

    told = aico(world, "recover", user=ADMIN).only()["text"]

    assert told.startswith("Running the health checks, the recovery sweep")
    asked = world.store.latest(REQUESTS)
    assert (asked.type, asked.data["by"]) == (ASKED, ADMIN)
