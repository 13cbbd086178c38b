"""The pool of task workers, live: from the Procfile, with the real broker, the fakes of Slack and
Claude, and real processes.

- Under a burst of slow tasks the pool grows past one worker, and shrinks back after it, and
  every task is answered exactly once.
- Scaling down drains a busy worker: it finishes what it holds, no delivery attempt is used up,
  no answer comes twice.
- Two `aico pm` share one broker and one PostgreSQL store: one leads; when it is killed the
  other takes over within seconds, and the takeover is an event.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aico.bootstrap import open_store
from aico.fakes.anthropic import FakeClaude
from core.domain import pool
from core.usecases.status import is_pm, is_task_worker
from tests.integration.drills.conftest import Ledger, assert_nothing_lost_or_twice, event_store
from tests.integration.stack import PROXY_VARS, Stack, fresh_vhost, wait_until

ADMIN = "U0ADMIN1"
NO_GUARD = {"AICO_HOST_CPU_LIMIT": "100", "AICO_HOST_MEMORY_LIMIT": "100"}  # a busy CI machine


def pm_beats(stack: Stack) -> list[dict]:
    with event_store(stack) as store:
        return [b for b in store.workers(seen_since=time.time() - 15) if is_pm(b)]


def task_workers(stack: Stack) -> list[dict]:
    with event_store(stack) as store:
        return [b for b in store.workers(seen_since=time.time() - 15) if is_task_worker(b)]


def decided(stack: Stack) -> pool.Record | None:
    with event_store(stack) as store:
        return store.latest(pool.DECISION)


def metric(stack: Stack, name: str) -> float:
    """A gauge's value as Prometheus would scrape it from the bot's port."""
    url = f"http://127.0.0.1:{stack.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture
def slow_claude():
    with FakeClaude(latency=2.0) as fake:
        yield fake


def test_a_burst_of_slow_tasks_grows_the_pool_and_it_shrinks_back(
    rabbit, tmp_path, slack, slow_claude
):
    settings = {
        "AICO_MIN_WORKERS": "1",
        "AICO_MAX_WORKERS": "3",
        "AICO_TASK_CONCURRENCY": "2",
        "AICO_SCALE_DOWN_AFTER": "3",
        **NO_GUARD,
    }
    stack = Stack(tmp_path, fresh_vhost(rabbit), slack, slow_claude, **settings).start()
    try:
        wait_until(lambda: len(task_workers(stack)) == 1, timeout=30)
        ledger = Ledger(stack, slack, slow_claude)

        # When a burst of slow tasks arrives: 16 x 2 s, for 2 slots a worker
        ledger.submit(16, "burst")

        # Then the policy asks for more workers, and they come
        wait_until(lambda: (d := decided(stack)) and d.data["target"] > 1, timeout=20)
        peak = wait_until(lambda: len(task_workers(stack)) > 1 and len(task_workers(stack)))
        assert peak > 1

        # And the desired count is exported for a platform's scaler to follow
        assert wait_until(lambda: metric(stack, "aico_workers_desired") > 1, timeout=10)

        # And every task is answered exactly once
        outcomes = ledger.wait_settled(timeout=90)
        assert_nothing_lost_or_twice(outcomes, stack, max_calls=3)

        # And after the burst the pool shrinks back to its minimum, by draining
        wait_until(lambda: decided(stack).data["target"] == 1, timeout=30)
        wait_until(
            lambda: [(b["workers"], b["draining"]) for b in pm_beats(stack)] == [(1, 0)],
            timeout=40,
        )
        reason = decided(stack).data["reason"]
        assert reason, "every decision says why"
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), f"{codes}\n{stack.logs()}"


def test_scaling_down_drains_a_busy_worker_and_nothing_is_lost_or_done_twice(
    rabbit, tmp_path, slack
):
    settings = {
        "AICO_MIN_WORKERS": "1",
        "AICO_MAX_WORKERS": "2",
        "AICO_TASK_CONCURRENCY": "1",
        "AICO_ADMINS": ADMIN,
        **NO_GUARD,
    }
    with FakeClaude(latency=4.0) as claude:
        stack = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, **settings).start()
        try:
            # Given the pool pinned to two workers by an admin
            status, body, _ = stack.command("scale 2", user_id=ADMIN)
            assert status == 200 and "pinned to 2" in body
            wait_until(lambda: len(task_workers(stack)) == 2, timeout=30)

            # And both of them busy with slow tasks, more waiting
            ledger = Ledger(stack, slack, claude)
            ledger.submit(5, "busy")
            wait_until(lambda: [w["busy"] for w in task_workers(stack)] == [1, 1], timeout=20)

            # When the admin scales the pool down to one
            status, body, _ = stack.command("scale 1", user_id=ADMIN)
            assert status == 200 and "pinned to 1" in body

            # Then one worker drains: it finishes its task and leaves
            wait_until(
                lambda: [(b["workers"], b["draining"]) for b in pm_beats(stack)] == [(1, 0)],
                timeout=40,
            )

            # And every task is answered once, each in one attempt: none was cut off
            outcomes = ledger.wait_settled(timeout=60)
            assert_nothing_lost_or_twice(outcomes, stack, max_calls=1)
            with event_store(stack) as store:
                assert {store.task(o.task_id).attempts for o in outcomes} == {1}
        finally:
            codes = stack.stop()
    assert all(code == 0 for code in codes.values()), f"{codes}\n{stack.logs()}"


def test_when_the_leading_pm_dies_the_other_takes_over_within_seconds(
    rabbit, postgres, tmp_path, slack, claude
):
    db_url = postgres.create_database()
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env |= {
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": claude.url,
        "AICO_AMQP_URL": fresh_vhost(rabbit),
        "AICO_DB_URL": db_url,
        "AICO_MIN_WORKERS": "0",
        "AICO_MAX_WORKERS": "1",
    }
    logs = [open(tmp_path / f"pm{i}.log", "wb") for i in range(2)]  # noqa: SIM115
    pms = [
        subprocess.Popen(
            [sys.executable, "-m", "aico.cli", "pm"],
            env=env | {"AICO_DATA_DIR": str(tmp_path / f"host{i}")},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for i, log in enumerate(logs)
    ]
    store = open_store(db_url)
    try:
        # Given two pm on one broker and one store: exactly one leads
        def leader() -> str:
            got = store.latest(pool.LEADER)
            return str(got.data["leader"]) if got else ""

        first = wait_until(leader, timeout=30)
        pids = {int(first.rsplit(":", 1)[1])}
        assert pids <= {p.pid for p in pms}

        # (both have ticked and said so in their heartbeats: one leads, the other does not)
        def beats() -> list[bool]:
            return sorted(b["leader"] for b in store.workers(time.time() - 15) if is_pm(b))

        wait_until(lambda: beats() == [False, True], timeout=30)
        assert store.latest(pool.LEADER).version == 1

        # When the leader is killed outright
        dead = next(p for p in pms if p.pid in pids)
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        killed_at = time.monotonic()

        # Then the other takes over within seconds, and says after whom
        wait_until(lambda: leader() not in ("", first), timeout=15)
        took = time.monotonic() - killed_at
        event = store.latest(pool.LEADER)
        assert event.data["previous"] == first and event.version == 2
        assert took < 10, f"the takeover took {took:.1f} s"
    finally:
        for p in pms:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in pms:
            p.wait(timeout=30)
        store.close()
        for log in logs:
            log.close()
    survivor = next(p for p in pms if p.pid not in pids)
    assert survivor.returncode == 0, Path(logs[0].name).read_text() + Path(logs[1].name).read_text()
