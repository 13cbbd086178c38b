"""Keep `target` task workers alive: every tick, reap the dead, start the missing and drain the
extra (python-rq style). A worker leaves by draining — SIGTERM: it takes no new task, finishes
those it holds, and exits — never by being killed: a consumer that dies without acking uses up one
of its task's delivery attempts. A draining worker's exit is no crash and is not replaced."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from core.errors import CONFIG_ERROR

log = logging.getLogger(__name__)

TASK_WORKER = (sys.executable, "-m", "aico.cli", "worker", "task")
_PR_SET_PDEATHSIG = 1


def _term_with_parent() -> None:
    """In the child: get SIGTERM (and drain) when the pm dies, even by kill -9."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_worker(command: Sequence[str]) -> subprocess.Popen:
    return subprocess.Popen(command, preexec_fn=_term_with_parent)


@dataclass
class Supervisor:
    target: int
    command: Sequence[str] = TASK_WORKER
    spawn: Callable[[Sequence[str]], subprocess.Popen] = spawn_worker
    workers: list[subprocess.Popen] = field(default_factory=list)
    draining: list[subprocess.Popen] = field(default_factory=list)
    restarts: int = 0
    max_backoff: float = 30.0
    # A worker that exits CONFIG_ERROR cannot start with these settings (a retired model, a
    # refused key): starting it again would only repeat that, so the pm stops instead.
    config_error: bool = False
    on_crash: Callable[[int, int], None] = lambda pid, code: None  # a worker died unasked
    _crashes: int = 0  # crashes in a row; resets after a quiet minute
    _last_crash: float = float("-inf")
    _next_start: float = 0.0

    def tick(self, now: float, busy: Mapping[int, int] | None = None) -> None:
        """Reap exited workers; start as many as are missing, backing off while they crash;
        drain the extra ones, the least busy first (`busy`: slots in use by pid, as their
        heartbeats last said)."""
        for worker in [w for w in self.draining if w.poll() is not None]:
            self.draining.remove(worker)
            log.info("task worker %d drained and left (%s)", worker.pid, worker.returncode)
        for worker in [w for w in self.workers if w.poll() is not None]:
            self.workers.remove(worker)
            self._crashed(now)
            log.warning("task worker %d exited with %s", worker.pid, worker.returncode)
            self.config_error |= worker.returncode == CONFIG_ERROR
            self.on_crash(worker.pid, worker.returncode)
        if len(self.workers) > self.target:
            self._drain(len(self.workers) - self.target, busy or {})
        if now < self._next_start or self.config_error:
            return
        while len(self.workers) < self.target:
            worker = self.spawn(list(self.command))
            log.info("started task worker %d", worker.pid)
            self.workers.append(worker)

    def _drain(self, count: int, busy: Mapping[int, int]) -> None:
        # the least busy first; among equals the newest (it holds the fewest prefetched tasks)
        order = sorted(reversed(self.workers), key=lambda w: busy.get(w.pid, 0))
        for worker in order[:count]:
            self.workers.remove(worker)
            worker.send_signal(signal.SIGTERM)
            self.draining.append(worker)
            log.info("draining task worker %d (%d busy)", worker.pid, busy.get(worker.pid, 0))

    def _crashed(self, now: float) -> None:
        self.restarts += 1
        self._crashes = 1 if now - self._last_crash > 60 else self._crashes + 1
        self._last_crash = now
        self._next_start = now + min(self.max_backoff, 0.5 * 2 ** (self._crashes - 1))

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM every worker (they drain), then kill whoever is still there after `timeout`."""
        self.workers += self.draining
        self.draining.clear()
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            try:
                worker.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("task worker %d did not drain in time; killing it", worker.pid)
                worker.kill()
                worker.wait()
        self.workers.clear()
