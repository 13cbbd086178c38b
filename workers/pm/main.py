"""`aico pm`: the control plane. For now: supervise AICO_MIN_WORKERS task workers."""

from __future__ import annotations

import logging
import signal
import threading
import time

from core import bootstrap
from core.config import Settings
from workers.pm.supervisor import Supervisor

log = logging.getLogger(__name__)


def main(settings: Settings) -> int:
    bootstrap.configure_logging(settings, "pm")
    supervisor = Supervisor(target=settings.min_workers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("supervising %d task worker(s)", supervisor.target)
    while not stop.is_set():
        supervisor.tick(time.monotonic())
        stop.wait(1.0)
    log.info("stopping task workers")
    supervisor.stop()
    return 0
