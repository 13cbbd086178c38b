"""Cancel and retry, by command and by the buttons on a task's message: only the requester or an
admin may; a cancelled task's answer never shows; a retried task is answered in the same thread."""

from __future__ import annotations

import json

import pytest

from aico.fakes.anthropic import CLIENT_GONE
from core.adapters.sqlite_store import SqliteEventStore
from core.domain.task import TaskStatus
from tests.integration.stack import Stack, fresh_vhost
from tests.integration.test_e2e import CHANNEL, parent_of, task_id_of, wait_for_answer

OWNER, STRANGER, ADMIN = "U0OWNER", "U0STRANGER", "U0ADMIN"


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude):
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, AICO_ADMINS=ADMIN).start()
    yield running
    running.stop()


def ack_text(result: tuple[int, str, float]) -> str:
    status, body, _ = result
    assert status == 200
    return json.loads(body)["text"] if body.startswith("{") else body


def stored(stack, task_id: str):
    store = SqliteEventStore(stack.workdir / "data" / "aico.db")
    try:
        return store.task(task_id)
    finally:
        store.close()


def submit(stack, text: str) -> str:
    return task_id_of(stack.command(f"task {text}", user_id=OWNER)[1])


def test_cancelling_a_running_task_stops_claude_and_drops_its_answer(stack, slack, claude):
    # Given a task Claude is writing a long answer for
    claude.latency = 8.0
    claude.responder = lambda request: " ".join(f"word{i}" for i in range(400))
    task_id = submit(stack, "slow work")
    claude.wait_for(lambda fake: fake.in_flight == 1, timeout=20)

    # When its owner cancels it
    told = ack_text(stack.command(f"cancel {task_id}", user_id=OWNER))

    # Then it ends cancelled, in the thread and on its message, and the answer never shows
    assert f"Task `{task_id}` is cancelled" in told
    parent, _ = wait_for_answer(slack, task_id, status="Cancelled")
    claude.wait_for(lambda fake: fake.in_flight == 0, timeout=20)
    assert f"by <@{OWNER}>" in json.dumps(parent["blocks"])
    assert "aico_retry" in json.dumps(parent["blocks"]), "a Retry button instead of Cancel"
    texts = [r["text"] for r in slack.replies(CHANNEL, parent["ts"])]
    assert len(texts) == 1 and "was cancelled" in texts[0], texts
    assert stored(stack, task_id).status is TaskStatus.CANCELLED
    assert [c.status for c in claude.calls] == [CLIENT_GONE], "the worker hung up on Claude"


def test_only_the_owner_or_an_admin_may_cancel(stack, slack, claude):
    claude.latency = 2.0
    task_id = submit(stack, "mine")

    refused = ack_text(stack.command(f"cancel {task_id}", user_id=STRANGER))
    assert f"Only <@{OWNER}>" in refused
    assert "is cancelled" in ack_text(stack.command(f"cancel {task_id}", user_id=ADMIN))
    wait_for_answer(slack, task_id, status="Cancelled")


def test_a_failed_task_retried_is_answered_in_the_same_thread(stack, slack, claude):
    # Given a task Claude refused
    claude.fail_next(count=1, status=400)
    task_id = submit(stack, "try again later")
    wait_for_answer(slack, task_id, status="Failed")

    # When its owner retries it
    told = ack_text(stack.command(f"retry {task_id}", user_id=OWNER))

    # Then it is answered in a new result message under the same parent
    assert "queued again (retry 1)" in told
    _, replies = wait_for_answer(slack, task_id, status="Done")
    assert [("failed" in r["text"], "Answer to" in r["text"]) for r in replies] == [
        (True, False),
        (False, True),
    ]
    assert stored(stack, task_id).generation == 1


def test_a_task_that_is_done_cannot_be_retried_or_cancelled(stack, slack):
    task_id = submit(stack, "quick")
    wait_for_answer(slack, task_id)

    assert "only a failed or cancelled task" in ack_text(
        stack.command(f"retry {task_id}", user_id=OWNER)
    )
    assert "already done" in ack_text(stack.command(f"cancel {task_id}", user_id=OWNER))
    assert "There is no task" in ack_text(stack.command("cancel nosuchtask", user_id=OWNER))


def click(stack, slack, task_id: str, action_id: str, user: str) -> list:
    """Press a button on the task's parent message, as Slack would send it."""
    parent = parent_of(slack, task_id)
    return stack.press(CHANNEL, parent, action_id, task_id, user, block_id=f"task:{task_id}")


def test_the_buttons_cancel_and_retry_for_their_owner_only(stack, slack, claude):
    claude.latency = 2.0
    task_id = submit(stack, "button work")
    slack.wait_for(lambda: "aico_cancel" in json.dumps(parent_of(slack, task_id) or {}), 10)

    (refusal,) = click(stack, slack, task_id, "aico_cancel", STRANGER)
    assert f"Only <@{OWNER}>" in refusal.payload["text"]
    (done,) = click(stack, slack, task_id, "aico_cancel", OWNER)
    assert "is cancelled" in done.payload["text"]
    wait_for_answer(slack, task_id, status="Cancelled")

    claude.latency = 0
    (again,) = click(stack, slack, task_id, "aico_retry", OWNER)
    assert "queued again" in again.payload["text"]
    wait_for_answer(slack, task_id, status="Done", timeout=30)


def test_a_stranger_may_not_retry_a_failed_task_by_command_or_button(stack, slack, claude):
    # Given a task Claude refused
    claude.fail_next(count=1, status=400)
    task_id = submit(stack, "refused work")
    wait_for_answer(slack, task_id, status="Failed")

    # When someone else retries it, by command and with the Retry button
    refused = ack_text(stack.command(f"retry {task_id}", user_id=STRANGER))
    (clicked,) = click(stack, slack, task_id, "aico_retry", STRANGER)

    # Then both are told who can, and the task stays failed: nothing was queued again
    for told in (refused, clicked.payload["text"]):
        assert f"Only <@{OWNER}>, who asked for task `{task_id}`, or an admin can retry it" in told
    task = stored(stack, task_id)
    assert (task.status, task.generation) == (TaskStatus.FAILED, 0)
    assert "Failed" in json.dumps(parent_of(slack, task_id)["blocks"])

    # And when an admin retries it, Claude is asked once more: once in all for the three retries
    assert "queued again (retry 1)" in ack_text(stack.command(f"retry {task_id}", user_id=ADMIN))
    _, replies = wait_for_answer(slack, task_id, status="Done")
    assert len(claude.calls) == 2 and stored(stack, task_id).generation == 1
    assert "Answer to: refused work" in json.dumps(replies[-1]["blocks"])
