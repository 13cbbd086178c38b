"""The pm's supervisor, with real child processes and a clock the test moves."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workers.pm.supervisor import Supervisor

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")


@pytest.fixture
def supervisor():
    sup = Supervisor(target=2, command=SLEEPER)
    yield sup
    sup.stop(timeout=5)


def test_it_starts_the_target_number_of_workers(supervisor):
    supervisor.tick(now=0.0)
    assert len(supervisor.workers) == 2
    assert all(w.poll() is None for w in supervisor.workers)


def test_a_killed_worker_is_replaced_after_a_short_backoff(supervisor):
    supervisor.tick(now=0.0)
    victim = supervisor.workers[0]
    victim.kill()
    victim.wait()

    supervisor.tick(now=10.0)
    assert victim not in supervisor.workers and len(supervisor.workers) == 1
    supervisor.tick(now=10.6)
    assert len(supervisor.workers) == 2 and supervisor.restarts == 1


def test_a_crash_loop_backs_off_exponentially_up_to_the_cap():
    sup = Supervisor(
        target=1, command=(sys.executable, "-c", "raise SystemExit(3)"), max_backoff=4.0
    )
    now, gaps, last_start = 0.0, [], 0.0
    sup.tick(now)
    while len(gaps) < 5:
        sup.workers[0].wait()
        before = sup.restarts
        while sup.restarts == before or not sup.workers:
            now += 0.25
            sup.tick(now)
        gaps.append(now - last_start)
        last_start = now
    sup.stop(timeout=5)
    assert gaps[1] < gaps[2] < gaps[3]
    assert max(gaps) <= 4.25


def test_stop_drains_with_sigterm_and_reports_nothing_left(supervisor):
    supervisor.tick(now=0.0)
    workers = list(supervisor.workers)
    supervisor.stop(timeout=5)
    assert [w.returncode for w in workers] == [-15, -15]
    assert supervisor.workers == []


def test_a_worker_that_cannot_start_with_its_settings_is_not_started_again():
    # Given workers that exit as a process does on a setting that cannot work (a retired model)
    sup = Supervisor(target=1, command=(sys.executable, "-c", "raise SystemExit(2)"))
    sup.tick(now=0.0)
    sup.workers[0].wait()

    # When the supervisor looks again, long after any backoff
    sup.tick(now=100.0)

    # Then it says so instead of starting one more
    assert sup.config_error and sup.workers == []


# A worker that drains as a task worker does: on SIGTERM it finishes "its task" (0.5 s), then exits.
# It says "ready" once its handler is in place.
DRAINER = (
    sys.executable,
    "-c",
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), sys.exit(0)))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)",
)


def spawn_listening(command):
    """The supervisor's spawn, with the child's stdout a pipe the test reads "ready" from."""
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def ready(*workers) -> None:
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"


def test_scaling_down_drains_the_least_busy_worker_and_does_not_replace_it():
    sup = Supervisor(target=3, command=DRAINER, spawn=spawn_listening)
    try:
        sup.tick(now=0.0)
        busy_one, idle, other_busy = sup.workers
        ready(busy_one, idle, other_busy)

        # When the target drops by one, with heartbeats saying who is busy
        sup.target = 2
        sup.tick(now=1.0, busy={busy_one.pid: 1, idle.pid: 0, other_busy.pid: 2})

        # Then the idle one drains (SIGTERM, not killed), and nothing replaces it
        assert sup.draining == [idle] and idle not in sup.workers
        assert idle.wait(timeout=5) == 0  # it finished and exited cleanly
        sup.tick(now=2.0)
        assert (sup.draining, len(sup.workers), sup.restarts) == ([], 2, 0)
        assert all(w.poll() is None for w in sup.workers)
    finally:
        sup.stop(timeout=5)


def test_a_draining_worker_is_never_killed_while_it_finishes():
    slow = (sys.executable, "-c", DRAINER[2].replace("time.sleep(0.5)", "time.sleep(2)"))
    sup = Supervisor(target=1, command=slow, spawn=spawn_listening)
    try:
        sup.tick(now=0.0)
        [worker] = sup.workers
        ready(worker)
        sup.target = 0
        for now in (1.0, 2.0, 3.0):  # ticks while it drains
            sup.tick(now=now)
        assert worker.wait(timeout=5) == 0  # it exited on its own, not by SIGKILL
    finally:
        sup.stop(timeout=5)
