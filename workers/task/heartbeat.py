"""A task worker tells the store, every few seconds, that it lives: its busy slots and its
breaker, for `/aico status`."""

from __future__ import annotations

import logging
import os
import socket
import threading

from core.domain.breaker import CircuitBreaker
from core.ports import EventStore
from core.usecases.status import HEARTBEAT_EVERY
from workers.task.handler import WORKER, TaskHandler

log = logging.getLogger(__name__)


def start_heartbeat(
    store: EventStore,
    handler: TaskHandler,
    breaker: CircuitBreaker,
    capacity: int,
    stopping: threading.Event,
) -> threading.Thread:
    beat = {"capacity": capacity, "host": socket.gethostname(), "pid": os.getpid()}

    def run() -> None:
        while True:
            state = {**beat, "busy": handler.busy, "breaker": breaker.snapshot()}
            try:
                store.heartbeat(WORKER, state)
            except Exception as exc:  # status goes stale; the work goes on
                log.warning("heartbeat not recorded: %s", exc)
            if stopping.wait(HEARTBEAT_EVERY):
                return

    thread = threading.Thread(target=run, name="heartbeat", daemon=True)
    thread.start()
    return thread
