"""The processes as an operator meets them: start-up errors, supervision, clean shutdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from aico.fakes.anthropic import FakeClaude
from aico.fakes.slack import FakeSlack
from tests.integration.stack import BOT_TOKEN, PROXY_VARS, Stack, fresh_vhost, wait_until
from tests.integration.test_e2e import task_id_of, wait_for_answer


def aico(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aico.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("bot",), ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]),
        (("pm",), ["SLACK_BOT_TOKEN", "ANTHROPIC_API_KEY"]),
        (("worker", "task"), ["ANTHROPIC_API_KEY"]),
        (("worker", "result"), ["SLACK_BOT_TOKEN"]),
    ],
)
def test_missing_settings_stop_the_process_with_one_message_naming_all(args, names):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "ANTHROPIC_", "AICO_")) and k not in PROXY_VARS
    }
    done = aico(*args, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert all(f"{name} is required" in lines[0] for name in names)


def test_a_bad_amqp_url_is_reported_clearly(tmp_path):
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": "k",
        "AICO_AMQP_URL": "http://nope",
        "AICO_DATA_DIR": str(tmp_path),
    }
    done = aico("worker", "task", env=env)
    assert done.returncode == 2
    assert "AICO_AMQP_URL must start with amqp:// or amqps://" in done.stderr


@pytest.fixture
def stack(rabbit, tmp_path):
    with FakeSlack(bot_token=BOT_TOKEN) as slack, FakeClaude(latency=0.05) as claude:
        running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, AICO_MIN_WORKERS="2").start()
        yield running
        running.stop()


def task_workers(stack: Stack) -> list[psutil.Process]:
    pm = psutil.Process(stack.processes.processes["pm"].pid)
    workers = []
    for child in pm.children():
        try:
            if "task" in child.cmdline():
                workers.append(child)
        except psutil.NoSuchProcess:  # a zombie too
            pass  # killed and gone, or not yet reaped by the pm: not a live worker
    return workers


def test_pm_respawns_a_task_worker_killed_with_kill_9(stack):
    workers = wait_until(lambda: len(task_workers(stack)) == 2 and task_workers(stack))
    workers[0].kill()

    def replaced():
        now = task_workers(stack)
        return len(now) == 2 and workers[0].pid not in [p.pid for p in now]

    wait_until(replaced)
    _, body, _ = stack.command("task are you still there?")
    _, replies = wait_for_answer(stack.slack, task_id_of(body))
    assert "Answer to: are you still there?" in json.dumps(replies[0]["blocks"])


def test_sigterm_stops_every_process_cleanly_with_its_workers(stack):
    workers = wait_until(lambda: len(task_workers(stack)) == 2 and task_workers(stack))
    codes = stack.stop()
    assert codes == {"bot": 0, "pm": 0, "result": 0}, stack.logs()
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
