"""What operators and users ask of the running system: `/aico status`, `/aico history`,
`/aico show`, and `aico status` / `aico db` on the command line — each telling the truth about
the tasks that really ran."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain.task import TaskStatus
from tests.integration.stack import Stack, fresh_vhost
from tests.integration.test_e2e import CHANNEL, parent_of, task_id_of, wait_for_answer


@pytest.fixture(scope="module")
def ran(rabbit, tmp_path_factory):
    """A stack that has run three tasks (one refused by Claude) for two users."""
    from aico.fakes.anthropic import FakeClaude
    from aico.fakes.slack import FakeSlack

    with FakeSlack(bot_token="xoxb-aico-test") as slack, FakeClaude() as claude:
        stack = Stack(tmp_path_factory.mktemp("ops"), fresh_vhost(rabbit), slack, claude).start()
        try:
            ids = {}
            for user, text in [("U0ALICE", "first"), ("U0ALICE", "second"), ("U0BOB", "third")]:
                if text == "third":
                    claude.fail_next(count=1, status=400)
                ids[text] = task_id_of(stack.command(f"task {text}", user_id=user)[1])
                wait_for_answer(slack, ids[text], status="Failed" if text == "third" else "Done")
            yield stack, ids
        finally:
            stack.stop()


def shown(ack_body: str) -> str:
    """Everything a person sees in an ack: its text and its blocks."""
    body = json.loads(ack_body)
    return body.get("text", "") + json.dumps(body.get("blocks", []))


def test_status_counts_what_ran(ran):
    stack, _ = ran
    status, body, _ = stack.command("status")

    assert status == 200
    seen = shown(body)
    assert "2 done, 1 failed, 0 cancelled" in seen
    assert "success 67%" in seen
    assert "tasks: 0 waiting, 1 consumer(s)" in seen
    assert "1 live, 0 of 8 slots busy" in seen and "1 closed" in seen


def test_history_lists_your_tasks_newest_first(ran):
    stack, ids = ran
    _, body, _ = stack.command("history", user_id="U0ALICE")

    seen = shown(body)
    assert seen.index(ids["second"]) < seen.index(ids["first"])
    assert ids["third"] not in seen, "Bob's task is not Alice's history"
    assert "Today (UTC), you: 2 finished" in seen


def test_history_of_the_channel_has_everyones(ran):
    stack, ids = ran
    seen = shown(stack.command("history channel 5", user_id="U0ALICE")[1])
    assert all(task_id in seen for task_id in ids.values())


@pytest.mark.parametrize(
    ("args", "told"),
    [
        ("history lots", "/aico history channel [n]"),
        ("history 0", "1 to 50"),
        ("history 51", "1 to 50"),
    ],
)
def test_a_bad_history_request_says_how(ran, args, told):
    stack, _ = ran
    assert told in shown(stack.command(args)[1])


def test_show_tells_a_tasks_timeline(ran):
    stack, ids = ran
    seen = shown(stack.command(f"show {ids['third']}")[1])

    for step in ("submitted", "queued", "attempt started", "failed: Claude answered 400"):
        assert step in seen, step


def test_show_of_an_unknown_task_says_so(ran):
    stack, _ = ran
    assert "There is no task" in shown(stack.command("show nosuchtask")[1])


def aico(stack, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "aico.cli", *args]
    return subprocess.run(command, env=stack.env, capture_output=True, text=True, timeout=60)


def test_aico_status_prints_the_same_figures(ran):
    stack, _ = ran
    result = aico(stack, "status")

    assert result.returncode == 0, result.stderr
    assert "2 done, 1 failed, 0 cancelled" in result.stdout
    assert "aico status" in result.stdout
    # plain text for a terminal: no Slack markup or escapes
    assert not any(markup in result.stdout for markup in ("*", "&lt;", "<@", ":warning:"))
    assert "Top spenders today: users: U0ALICE" in result.stdout


def test_aico_db_backup_and_rebuild(ran, tmp_path):
    stack, ids = ran
    backup = aico(stack, "db", "backup", str(tmp_path / "copy.db"))
    assert backup.returncode == 0, backup.stderr

    copy = SqliteEventStore(tmp_path / "copy.db")
    assert copy.task(ids["first"]).status is TaskStatus.DONE
    copy.close()
    rebuilt = aico(stack, "db", "rebuild")
    assert rebuilt.returncode == 0 and "3 task(s)" in rebuilt.stdout
    assert "2 done, 1 failed" in aico(stack, "status").stdout


def test_the_receipts_add_up_to_the_totals(ran):
    stack, ids = ran
    slack, receipts = stack.slack, []
    for task_id in ids.values():
        parent = parent_of(slack, task_id)
        for reply in slack.replies(CHANNEL, parent["ts"]):
            receipts += [
                float(x)
                for x in re.findall(r"· \$([0-9.]+) ·", json.dumps(reply, ensure_ascii=False))
            ]
    assert len(receipts) == 2, "two answers, each with its cost"

    status = shown(stack.command("status")[1])
    total = float(re.search(r"out tokens · \$([0-9.]+)", status).group(1))
    assert total == pytest.approx(sum(receipts), abs=0.0002)
    assert "Top spenders today" in status and "<@U0ALICE>" in status
