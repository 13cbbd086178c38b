"""The configured model, checked before any task is taken: the default is current and priced; a
retired or unknown one stops the task workers and the pm with one message naming current models."""

from __future__ import annotations

import json
import subprocess

import pytest

from aico.procfile import read_procfile
from core.errors import CONFIG_ERROR
from tests.integration.stack import Stack, fresh_vhost
from tests.integration.test_e2e import task_id_of, wait_for_answer


def test_the_default_model_is_current_and_its_receipts_are_priced(rabbit, tmp_path, slack, claude):
    # Given a Claude that has retired the models past their end of life, and AICO_MODEL unset
    assert "claude-sonnet-4-5" in claude.retired
    stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude).start()
    try:
        # When a task is asked for
        task_id = task_id_of(stack.command("task name three queues")[1])
        _, replies = wait_for_answer(slack, task_id)
    finally:
        stack.stop()

    # Then it is answered by the current Sonnet, with a price in dollars on its receipt
    receipt = json.dumps([b for b in replies[0]["blocks"] if b.get("type") == "context"])
    assert "claude-sonnet-5-5" in receipt and "$" in receipt and "cost unknown" not in receipt
    assert [call.body["model"] for call in claude.calls] == ["claude-sonnet-5-5"]


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-sonnet-9-9"])
def test_a_retired_or_unknown_model_stops_the_pm_with_one_clear_message(
    rabbit, tmp_path, slack, claude, model
):
    # Given aico configured with a model Claude no longer serves (or never did)
    stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, AICO_MODEL=model).start()
    try:
        # Then the pm stops instead of starting task workers again and again
        pm = stack.processes.processes["pm"]
        assert pm.wait(timeout=60) == CONFIG_ERROR
        log = stack.processes.log("pm")
    finally:
        stack.stop()
    # with the message that names the setting and current models, and no task was taken
    assert f"AICO_MODEL={model}" in log and "claude-sonnet-5-5" in log, log
    assert "Traceback" not in log
    assert claude.calls == []


def test_a_task_worker_alone_refuses_a_retired_model(tmp_path, slack, claude, rabbit):
    env = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, AICO_MODEL="claude-sonnet-4-5").env
    done = subprocess.run(
        [*read_procfile()["bot"][:1], "worker", "task"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == CONFIG_ERROR
    assert "AICO_MODEL=claude-sonnet-4-5 was retired" in done.stderr, done.stderr
