"""`aico worker result`: posts progress and results in the tasks' threads, and records them."""

from __future__ import annotations

import signal

from core import bootstrap
from core.adapters.rabbitmq import RESULTS
from core.config import Settings
from workers.result.handler import ResultHandler
from workers.runtime import Runtime


def main(settings: Settings) -> int:
    bootstrap.configure_logging(settings, "result")
    handler = ResultHandler(bootstrap.store(settings), bootstrap.notifier(settings))
    link = bootstrap.link(settings, "result")
    runtime = Runtime(link, RESULTS, handler, settings.result_concurrency, ordered=True)
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    signal.signal(signal.SIGINT, lambda *_: runtime.stop())
    runtime.run()
    return 0
