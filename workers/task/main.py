"""`aico worker task`: consume tasks, several Claude calls in flight."""

from __future__ import annotations

import signal

from core import bootstrap
from core.adapters.rabbitmq import TASKS
from core.config import Settings
from workers.runtime import Runtime
from workers.task.handler import make_handler


def main(settings: Settings) -> int:
    bootstrap.configure_logging(settings, "task")
    runtime = Runtime(
        bootstrap.link(settings, "task"),
        TASKS,
        make_handler(bootstrap.model(settings)),
        settings.task_concurrency,
    )
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    signal.signal(signal.SIGINT, lambda *_: runtime.stop())
    runtime.run()
    return 0
