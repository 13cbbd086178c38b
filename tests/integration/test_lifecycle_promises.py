"""Promises of the README about a task's life that only the whole stack can keep:

- a cancelled queued task never reaches Claude;
- a bot killed (kill -9) after it recorded a task but before the task was queued queues it once
  when it starts again, and posts its parent message once;
- wrong AMQP credentials stop every process with a clear message, instead of a reconnect loop.

Each test looks at what a user sees in the fake Slack, what the fake Claude received and what the
event store recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from aico.fakes.anthropic import FakeClaude
from aico.procfile import read_procfile
from aico.rabbit_node import RabbitNode, RabbitNodeError
from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.events import TaskView
from core.domain.messages import TASKS
from core.domain.task import TaskStatus
from core.errors import CONFIG_ERROR
from tests.integration.stack import Stack, fresh_vhost, wait_until
from tests.integration.test_e2e import CHANNEL, parent_of, task_id_of, wait_for_answer

# -- helpers ----------------------------------------------------------------------------------


def recorded(stack: Stack, task_id: str) -> tuple[TaskView | None, list[events.Event]]:
    """The task as the stack's event store holds it, and its events."""
    store = SqliteEventStore(Path(stack.env["AICO_DATA_DIR"]) / "aico.db")
    try:
        return store.task(task_id), store.events(task_id)
    finally:
        store.close()


def last_user_text(body: dict) -> str:
    """The prompt a Claude request carries: its last user message."""
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    return content if isinstance(content, str) else content[-1].get("text", "")


def requests_for(claude: FakeClaude, prompt: str) -> list:
    """Every request that reached the fake Claude for `prompt`, answered or not."""
    return [c for c in claude.calls if last_user_text(c.body) == prompt]


def ack_text(result: tuple[int, str, float]) -> str:
    """What the person who typed a command sees (the ack is JSON or plain text)."""
    status, body, _ = result
    assert status == 200, (status, body)
    return json.loads(body)["text"] if body.startswith("{") else body


def submit(stack: Stack, prompt: str) -> str:
    status, body, _ = stack.command(f"task {prompt}")
    assert status == 200, (status, body)
    return task_id_of(body)


# -- 1. a cancelled queued task never reaches Claude ------------------------------------------

HOLD = "hold the only slot"
CANCELLED = "cancel me before I start"
AFTER = "come after the cancelled one"


@pytest.fixture
def one_slot(rabbit, tmp_path, slack, claude) -> Iterator[Stack]:
    """One task worker that asks Claude one thing at a time."""
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, AICO_TASK_CONCURRENCY="1").start()
    yield running
    running.stop()


def test_a_task_cancelled_while_queued_never_reaches_claude(one_slot, slack, claude):
    # Given the only task worker slot busy: Claude holds the first task until the test says
    release = threading.Event()

    def answer(body: dict) -> str:
        prompt = last_user_text(body)
        if prompt == HOLD:
            release.wait(60)
        return f"Answer to: {prompt}"

    claude.responder = answer
    try:
        first = submit(one_slot, HOLD)
        claude.wait_for(lambda fake: fake.in_flight == 1, timeout=30)

        # And two more tasks queued behind it
        doomed = submit(one_slot, CANCELLED)
        later = submit(one_slot, AFTER)
        for task_id in (doomed, later):
            wait_until(lambda t=task_id: recorded(one_slot, t)[0].status is TaskStatus.QUEUED)

        # When its owner cancels the second while it waits in the queue
        assert f"Task `{doomed}` is cancelled" in ack_text(one_slot.command(f"cancel {doomed}"))

        # Then it ends "Cancelled" in its thread at once, though the worker is still busy
        parent, replies = wait_for_answer(slack, doomed, status="Cancelled")
        assert [("was cancelled" in r["text"]) for r in replies] == [True]
        assert claude.in_flight == 1, "the first task still holds the only slot"
    finally:
        release.set()

    # And once the slot is free, the first and the third are answered (the third came after the
    # cancelled one in the queue: the worker went past it)...
    wait_for_answer(slack, first, timeout=30)
    wait_for_answer(slack, later, timeout=30)

    # ...but Claude never got a request for the cancelled one, and it never started
    assert requests_for(claude, CANCELLED) == []
    assert sorted(last_user_text(c.body) for c in claude.calls) == sorted([HOLD, AFTER])
    task, history = recorded(one_slot, doomed)
    assert task.status is TaskStatus.CANCELLED and task.attempts == 0
    assert events.STARTED not in [e.type for e in history]
    parent = parent_of(slack, doomed)
    assert "Cancelled" in json.dumps(parent["blocks"])
    assert len(slack.replies(CHANNEL, parent["ts"])) == 1, "still one message in its thread"


# -- 2. a bot killed between recording a task and queueing it ---------------------------------


@pytest.fixture
def own_rabbit() -> Iterator[RabbitNode]:
    """A RabbitMQ node of this test's own: it is stopped while the session's node serves others.
    (Its directory comes from `tempfile`: the `rabbitmq` user must reach it.)"""
    base_dir = Path(tempfile.mkdtemp(prefix="aico-rabbit-own-"))
    node = RabbitNode(base_dir)
    try:
        node.start()
    except RabbitNodeError as err:
        shutil.rmtree(base_dir, ignore_errors=True)
        pytest.fail(f"a private RabbitMQ node did not start: {err}", pytrace=False)
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


def tasks_waiting(rabbit: RabbitNode) -> int:
    """Messages in aico.tasks now, as the queue itself counts them (a passive declare;
    `rabbitmqctl list_queues` shows a quorum queue's counters some seconds late)."""
    with pika.BlockingConnection(pika.URLParameters(rabbit.url)) as connection:
        declared = connection.channel().queue_declare(TASKS, passive=True)
    return declared.method.message_count


def kill_9(stack: Stack, name: str) -> None:
    process = stack.processes.processes[name]
    process.kill()
    process.wait(10)


def test_a_bot_killed_before_it_queued_a_recorded_task_queues_it_once_at_restart(
    own_rabbit, tmp_path, slack, claude
):
    # Given the whole stack with no task worker yet (so the queue shows what the bot queued)
    stack = Stack(tmp_path, own_rabbit.url, slack, claude, AICO_MIN_WORKERS="0").start()
    try:
        # And the broker down
        own_rabbit.stop_app()
        try:
            # When a task comes: it is acked and recorded, its parent message is posted and says
            # that it waits for the queue
            prompt = "survive a bot crash while the broker is away"
            task_id = submit(stack, prompt)

            def waiting():
                parent = parent_of(slack, task_id)
                return parent and "Waiting for the queue" in json.dumps(parent["blocks"])

            slack.wait_for(waiting, timeout=20)
            task, history = recorded(stack, task_id)
            assert task.status is TaskStatus.SUBMITTED and task.thread_ts
            assert events.QUEUED not in [e.type for e in history]

            # And the bot is killed (kill -9: nothing of what it held in memory survives)
            kill_9(stack, "bot")
        finally:
            own_rabbit.start_app()

        # When the bot starts again
        stack.processes.start("bot")
        stack.wait_healthy(30)

        # Then it queues the task, once: with the bot stopped afterwards, one message waits
        wait_until(lambda: recorded(stack, task_id)[0].status is TaskStatus.QUEUED, 30)
        stack.processes.signal("bot", signal.SIGTERM)
        assert stack.processes.processes["bot"].wait(30) == 0
        assert tasks_waiting(own_rabbit) == 1

        # And a task worker that comes along answers it, once, in the thread of its one parent
        stack.processes.commands["task"] = [sys.executable, "-m", "aico.cli", "worker", "task"]
        stack.processes.start("task")
        parent, replies = wait_for_answer(slack, task_id, timeout=40)
        assert len(slack.messages(CHANNEL)) == 1, "one parent message in the channel"
        assert len(replies) == 1 and f"Answer to: {prompt}" in json.dumps(replies[0]["blocks"])
        assert claude.prompts() == [prompt] and len(requests_for(claude, prompt)) == 1
        task, history = recorded(stack, task_id)
        assert task.status is TaskStatus.DONE and task.attempts == 1
        assert task.thread_ts == parent["ts"]
        assert [e.type for e in history].count(events.POSTED) == 1
        wait_until(lambda: tasks_waiting(own_rabbit) == 0, 20)
    finally:
        stack.stop()


def test_a_bot_killed_after_slack_took_its_parent_post_posts_no_second_parent(
    rabbit, tmp_path, slack, claude
):
    # Given a bot that will be killed the moment Slack has taken a task's parent message, before
    # Slack's answer reaches it (so it never records where the message is)
    stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude).start()
    acked, killed = threading.Event(), threading.Event()

    def kill_on_parent(kind: str, channel: str, message: dict) -> None:
        is_parent = "thread_ts" not in message or message["thread_ts"] == message["ts"]
        if kind == "posted" and is_parent and not killed.is_set():
            acked.wait(10)  # the ack reached the person first
            kill_9(stack, "bot")
            killed.set()

    slack.on_change.append(kill_on_parent)
    try:
        # When a task comes, and the bot dies as Slack takes its parent message
        prompt = "post my parent once, whatever happens"
        task_id = submit(stack, prompt)
        acked.set()
        assert killed.wait(20), "the parent message was never posted"
        task, _ = recorded(stack, task_id)
        assert task.status is TaskStatus.SUBMITTED and not task.thread_ts

        # And the bot starts again
        stack.processes.start("bot")
        stack.wait_healthy(30)

        # Then the task is answered in the thread of the parent Slack took, with no second parent
        parent, replies = wait_for_answer(slack, task_id, timeout=40)
        assert len(slack.messages(CHANNEL)) == 1, "one parent message in the channel"
        assert len(replies) == 1 and f"Answer to: {prompt}" in json.dumps(replies[0]["blocks"])
        assert claude.prompts() == [prompt] and len(requests_for(claude, prompt)) == 1
        task, _ = recorded(stack, task_id)
        assert task.thread_ts == parent["ts"] and task.status is TaskStatus.DONE
    finally:
        stack.stop()


# -- 3. wrong AMQP credentials stop each process ----------------------------------------------

GIVE_UP_AFTER = 20.0  # seconds: several times what a start and one refused login take


def wrong_password(url: str) -> str:
    assert "guest:guest@" in url
    return url.replace("guest:guest@", "guest:not-the-password@")


def run_until_exit(command: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    """Run `command` until it exits (code, output) or GIVE_UP_AFTER passes (None, output); a
    process still running then is killed with its children."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(GIVE_UP_AFTER)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):  # its task workers too (pm)
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        output.seek(0)
        return code, output.read().decode(errors="replace")


PROCFILE = read_procfile()
PROCESSES = {
    "bot": PROCFILE["bot"],
    "pm": PROCFILE["pm"],
    "result": PROCFILE["result"],
    "worker task": [sys.executable, "-m", "aico.cli", "worker", "task"],
}


@pytest.mark.parametrize(
    "name",
    ["bot", "pm", "result", "worker task"],
)
def test_wrong_amqp_credentials_stop_the_process_with_a_clear_message(
    name, rabbit, tmp_path, slack, claude
):
    # Given every setting right but the broker password
    url = wrong_password(fresh_vhost(rabbit))
    env = Stack(tmp_path, url, slack, claude).env

    # When the process starts
    code, output = run_until_exit(PROCESSES[name], env)

    # Then it stops by itself, failing, and says what to fix, without the password
    assert code is not None, f"{name} still running after {GIVE_UP_AFTER}s:\n{output[-3000:]}"
    assert code == CONFIG_ERROR, output[-3000:]
    assert "AICO_AMQP_URL" in output and "Traceback" not in output, output[-3000:]
    assert "not-the-password" not in output
