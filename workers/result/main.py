"""`aico worker result`: posts progress and results in the tasks' threads, and records them; fails,
in their threads, the tasks the broker gave up on."""

from __future__ import annotations

import signal
import threading

from core import bootstrap
from core.adapters.rabbitmq import DEAD_WATCH, RESULTS
from core.config import Settings
from workers.result.dead import DeadLetterHandler
from workers.result.handler import ResultHandler
from workers.runtime import Runtime


def main(settings: Settings) -> int:
    bootstrap.configure_logging(settings, "result")
    stopping = threading.Event()
    store = bootstrap.store(settings)
    results = ResultHandler(store, bootstrap.notifier(settings), stopping, prices=settings.prices)
    link = bootstrap.link(settings, "result")
    runtime = Runtime(
        link, RESULTS, results, settings.result_concurrency, ordered=True, stopping=stopping
    )
    runtime.also(DEAD_WATCH, DeadLetterHandler(store, results))
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    signal.signal(signal.SIGINT, lambda *_: runtime.stop())
    runtime.run()
    return 0
