"""`aico worker task`: consume tasks, several Claude calls in flight, behind a circuit breaker."""

from __future__ import annotations

import logging
import signal
import threading

from core import bootstrap
from core.adapters.rabbitmq import TASKS
from core.config import Settings
from core.domain.breaker import BreakerState, CircuitBreaker
from workers.runtime import Runtime
from workers.task.handler import TaskHandler

log = logging.getLogger(__name__)


def main(settings: Settings) -> int:
    bootstrap.configure_logging(settings, "task")
    stopping = threading.Event()
    breaker = CircuitBreaker("claude", on_change=_log_change)
    handler = TaskHandler(bootstrap.store(settings), bootstrap.model(settings), breaker, stopping)
    runtime = Runtime(
        bootstrap.link(settings, "task"),
        TASKS,
        handler,
        settings.task_concurrency,
        paused=lambda: breaker.state is BreakerState.OPEN,
        stopping=stopping,
    )
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    signal.signal(signal.SIGINT, lambda *_: runtime.stop())
    runtime.run()
    return 0


def _log_change(old: BreakerState, new: BreakerState) -> None:
    level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
    log.log(level, "Claude circuit breaker %s -> %s", old, new)
