"""Fault drills: every task acked must end in its thread, once, whatever breaks underneath."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

import pytest

from aico.fakes.anthropic import FakeClaude
from aico.fakes.slack import FakeSlack
from tests.integration.stack import Stack, event_store, fresh_vhost
from tests.integration.test_e2e import CHANNEL, parent_of, task_id_of

FINAL = ("Done", "Failed", "Cancelled")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "drills" in item.path.parts:
            item.add_marker(pytest.mark.drill)


@dataclass
class Outcome:
    task_id: str
    prompt: str
    final: str  # the parent's final status, "" if none
    results: int  # messages in the task's thread
    claude_calls: int  # requests that reached Claude, failed ones included
    answers: int  # requests Claude answered whole (200, no fault injected)


class Ledger:
    """Submits tasks and accounts for every one of them at the end."""

    def __init__(self, stack: Stack, slack: FakeSlack, claude: FakeClaude) -> None:
        self.stack, self.slack, self.claude = stack, slack, claude
        self.tasks: dict[str, str] = {}

    def submit(self, count: int, label: str) -> list[str]:
        ids = []
        for i in range(count):
            prompt = f"{label} task {i}"
            status, body, elapsed = self.stack.command(f"task {prompt}")
            assert status == 200 and elapsed < 3.0, (status, body, elapsed)
            task_id = task_id_of(body)
            self.tasks[task_id] = prompt
            ids.append(task_id)
        return ids

    def settled(self) -> bool:
        return all(self._final(t) for t in self.tasks)

    def wait_settled(self, timeout: float) -> list[Outcome]:
        with contextlib.suppress(TimeoutError):  # what did not settle is reported by the caller
            self.slack.wait_for(self.settled, timeout)
        return [self.outcome(t) for t in self.tasks]

    def outcome(self, task_id: str) -> Outcome:
        parent = parent_of(self.slack, task_id)
        prompt = self.tasks[task_id]
        replies = self.slack.replies(CHANNEL, parent["ts"]) if parent else []
        calls = [c for c in self.claude.calls if _prompt(c.body) == prompt]
        answers = sum(1 for c in calls if c.status == 200 and c.fault is None)
        return Outcome(task_id, prompt, self._final(task_id), len(replies), len(calls), answers)

    def _final(self, task_id: str) -> str:
        parent = parent_of(self.slack, task_id)
        shown = json.dumps(parent["blocks"]) if parent else ""
        return next((state for state in FINAL if state in shown), "")


def _prompt(body: dict) -> str:
    """The task a Claude request was for ("" for a request cut off before its body)."""
    messages = body.get("messages") or [{"content": ""}]
    content = messages[-1]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def assert_nothing_lost_or_twice(outcomes: list[Outcome], stack: Stack, max_calls: int) -> None:
    """Every task reached a final state with exactly one result message in its thread; Claude
    answered it at most once per attempt the store recorded (requests, failed ones included, at
    most 3 per attempt: the SDK's two retries), and never more than `max_calls` requests."""
    with event_store(stack) as store:
        attempts = {o.task_id: store.task(o.task_id).attempts for o in outcomes}
    lost = [o for o in outcomes if not o.final]
    twice = [o for o in outcomes if o.results != 1]
    overcalled = [
        o
        for o in outcomes
        if o.claude_calls > max_calls
        or o.answers > attempts[o.task_id]
        or o.claude_calls > 3 * attempts[o.task_id]
    ]
    assert not lost, f"{len(lost)} task(s) never reached a final state: {lost}\n{stack.logs()}"
    assert not twice, f"tasks without exactly one result message: {twice}"
    assert not overcalled, f"more Claude calls than attempts: {overcalled}, attempts {attempts}"


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude):
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, AICO_MIN_WORKERS="2").start()
    yield running
    running.stop()


@pytest.fixture
def ledger(stack, slack, claude):
    return Ledger(stack, slack, claude)
