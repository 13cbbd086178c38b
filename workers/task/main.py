"""`aico worker task`: consume tasks, several Claude calls in flight, behind a circuit breaker."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

from core import bootstrap
from core.adapters.rabbitmq import TASKS
from core.config import Settings
from core.domain.breaker import BreakerState, CircuitBreaker
from core.status import HEARTBEAT_EVERY
from workers.runtime import Runtime
from workers.task.handler import WORKER, TaskHandler

log = logging.getLogger(__name__)


def main(settings: Settings) -> int:
    bootstrap.configure_logging(settings, "task")
    stopping = threading.Event()
    breaker = CircuitBreaker("claude", on_change=_log_change)
    model = bootstrap.model(settings)
    log.info("model %s: %s", settings.model, model.check())  # a retired one stops us here
    store = bootstrap.store(settings)
    handler = TaskHandler(store, model, breaker, stopping)
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
    beat = {"capacity": settings.task_concurrency, "host": socket.gethostname(), "pid": os.getpid()}
    threading.Thread(
        target=_heartbeat, args=(store, handler, breaker, beat, stopping), daemon=True
    ).start()
    runtime.run()
    return 0


def _heartbeat(store, handler, breaker, beat: dict, stopping: threading.Event) -> None:
    """Tell the store, every few seconds, that this worker lives: for `/aico status`."""
    while True:
        state = {**beat, "busy": handler.busy, "breaker": breaker.snapshot()}
        try:
            store.heartbeat(WORKER, state)
        except Exception as exc:  # status goes stale; the work goes on
            log.warning("heartbeat not recorded: %s", exc)
        if stopping.wait(HEARTBEAT_EVERY):
            return


def _log_change(old: BreakerState, new: BreakerState) -> None:
    level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
    log.log(level, "Claude circuit breaker %s -> %s", old, new)
