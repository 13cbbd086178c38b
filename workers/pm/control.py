"""The control plane's loop: supervise the task workers of this host and run the scheduled jobs
(the recovery sweep, at start and every AICO_SWEEP_EVERY seconds) on APScheduler, until told to
stop, or until the workers cannot start with these settings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler

from core.errors import CONFIG_ERROR, ConfigError
from core.ports import Broker
from workers.pm.supervisor import Supervisor

log = logging.getLogger(__name__)


def scheduler(
    link: Broker, sweep: Callable[[], object], sweep_every: float, stop: threading.Event
) -> BackgroundScheduler:
    """The jobs, each coalesced and never run twice at once."""
    jobs = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1})
    jobs.add_job(
        when_connected(link, sweep, stop),
        "interval",
        seconds=sweep_every,
        next_run_time=datetime.now(),  # at start too: what was stranded while aico was down
        id="recovery-sweep",
    )
    return jobs


def run(
    supervisor: Supervisor, jobs: BackgroundScheduler, link: Broker, stop: threading.Event
) -> int:
    log.info("supervising %d task worker(s)", supervisor.target)
    jobs.start()
    while not stop.is_set() and not supervisor.config_error and not _refused(link):
        supervisor.tick(time.monotonic())
        stop.wait(1.0)
    stop.set()  # a job waiting for the broker gives up now
    log.info("stopping task workers")
    jobs.shutdown(wait=False)
    supervisor.stop()
    link.close()
    link.check()  # refused credentials: the ConfigError says so
    if supervisor.config_error:
        log.critical("task workers cannot start with these settings (their error is above)")
        return CONFIG_ERROR
    return 0


def when_connected(
    link: Broker, job: Callable[[], object], stop: threading.Event
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


def _refused(link: Broker) -> bool:
    """Whether the broker refused our credentials (the link has given up for good)."""
    try:
        link.check()
    except ConfigError:
        return True
    return False
