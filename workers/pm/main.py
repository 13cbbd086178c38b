"""`aico pm`: the control plane. Supervises AICO_MIN_WORKERS task workers, and runs the recovery
sweep (at start, then every AICO_SWEEP_EVERY seconds) on APScheduler."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler

from core import bootstrap
from core.adapters.rabbitmq import RESULTS, TASKS, AmqpLink
from core.config import Settings
from core.errors import CONFIG_ERROR
from core.recovery import Recovery
from workers.pm.supervisor import Supervisor

log = logging.getLogger(__name__)


def main(settings: Settings) -> int:
    bootstrap.configure_logging(settings, "pm")
    supervisor = Supervisor(target=settings.min_workers)
    link = bootstrap.link(settings, "pm")
    stop = threading.Event()
    scheduler = _scheduler(settings, link, stop)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("supervising %d task worker(s)", supervisor.target)
    scheduler.start()
    while not stop.is_set() and not supervisor.config_error and link.fatal is None:
        supervisor.tick(time.monotonic())
        stop.wait(1.0)
    stop.set()  # a job waiting for the broker gives up now
    log.info("stopping task workers")
    scheduler.shutdown(wait=False)
    supervisor.stop()
    link.close()
    link.check()  # refused credentials: the ConfigError says so
    if supervisor.config_error:
        log.critical("task workers cannot start with these settings (their error is above)")
        return CONFIG_ERROR
    return 0


def _scheduler(settings: Settings, link: AmqpLink, stop: threading.Event) -> BackgroundScheduler:
    recovery = Recovery(
        bootstrap.store(settings),
        link.publish,
        lambda queue: link.queue_depth(queue).result(10),
        TASKS,
        RESULTS,
        stale_after=settings.stale_after,
    )
    scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.add_job(
        _when_connected(link, recovery.sweep, stop),
        "interval",
        seconds=settings.sweep_every,
        next_run_time=datetime.now(),  # at start too: what was stranded while aico was down
        id="recovery-sweep",
    )
    return scheduler


def _when_connected(
    link: AmqpLink, job: Callable[[], object], stop: threading.Event
) -> Callable[[], None]:
    """`job`, once the broker is reachable (for up to a minute, unless the pm stops meanwhile);
    a failure is logged and the next run tries again."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while not link.connected.wait(0.5):
            if stop.is_set() or time.monotonic() > deadline:
                log.warning("%s skipped: RabbitMQ is not reachable", job.__name__)
                return
        try:
            job()
        except Exception as exc:
            log.warning("%s did not finish (%s); it runs again later", job.__name__, exc)

    return run
