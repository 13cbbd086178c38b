"""Keep N task workers alive: every tick, reap the dead and start the missing (python-rq style)."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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
    restarts: int = 0
    max_backoff: float = 30.0
    # A worker that exits CONFIG_ERROR cannot start with these settings (a retired model, a
    # refused key): starting it again would only repeat that, so the pm stops instead.
    config_error: bool = False
    _crashes: int = 0  # crashes in a row; resets after a quiet minute
    _last_crash: float = float("-inf")
    _next_start: float = 0.0

    def tick(self, now: float) -> None:
        """Reap exited workers; start as many as are missing, backing off while they crash."""
        for worker in [w for w in self.workers if w.poll() is not None]:
            self.workers.remove(worker)
            self._crashed(now)
            log.warning("task worker %d exited with %s", worker.pid, worker.returncode)
            self.config_error |= worker.returncode == CONFIG_ERROR
        if now < self._next_start or self.config_error:
            return
        while len(self.workers) < self.target:
            worker = self.spawn(list(self.command))
            log.info("started task worker %d", worker.pid)
            self.workers.append(worker)

    def _crashed(self, now: float) -> None:
        self.restarts += 1
        self._crashes = 1 if now - self._last_crash > 60 else self._crashes + 1
        self._last_crash = now
        self._next_start = now + min(self.max_backoff, 0.5 * 2 ** (self._crashes - 1))

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM every worker (they drain), then kill whoever is still there after `timeout`."""
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
