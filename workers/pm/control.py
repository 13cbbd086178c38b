"""The control plane's loop: every second, the pm's tick (workers/pm/plane.py: the lead, the
pool's decision, this host's share); and the scheduled jobs on APScheduler, which only the
elected pm runs: the recovery sweep (at start and every AICO_SWEEP_EVERY seconds) and the
training of the arrival forecast. Until told to stop, or until the workers cannot start with
these settings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler

from core.errors import CONFIG_ERROR, ConfigError
from core.ports import Broker
from core.usecases.leadership import Leadership
from workers.pm.plane import ControlPlane

log = logging.getLogger(__name__)
TRAIN_CHECK_EVERY = 60.0  # seconds between the training job's looks at the clock
SWEEP, TRAINING, CHECKS, FLUSH = "recovery-sweep", "forecast-training", "health-checks", "alerts"
REPOS, CHANGES, PROJECTS = "repositories", "code-changes", "projects"
PROJECTS_EVERY = 5.0  # seconds: the sweep that moves on a project no process moved on
ALERT_FLUSH_EVERY = 3.0  # seconds: an alert recorded by any process is posted this soon
CHANGES_EVERY = 2.0  # seconds: an approved change is pushed (a rejected one dropped) this soon


def scheduler(
    link: Broker,
    leadership: Leadership,
    sweep: Callable[[], object],
    sweep_every: float,
    train: Callable[[], object],
    train_every: float,
    stop: threading.Event,
) -> BackgroundScheduler:
    """The jobs, each coalesced and never run twice at once, each run by the leader only."""
    jobs = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1})
    jobs.add_job(
        when_connected(link, leading(leadership, sweep), stop),
        "interval",
        seconds=sweep_every,
        id=SWEEP,
    )
    jobs.add_job(
        leading(leadership, every(train, train_every)),
        "interval",
        seconds=min(TRAIN_CHECK_EVERY, train_every),
        id=TRAINING,
    )
    return jobs


def watch(
    jobs: BackgroundScheduler,
    leadership: Leadership,
    checks: Callable[[], object],
    check_every: float,
    flush: Callable[[], object],
) -> None:
    """The health checks every `check_every` seconds, and the alerts posted every few, by the
    leader only (each job coalesced, never twice at once)."""
    jobs.add_job(leading(leadership, checks), "interval", seconds=check_every, id=CHECKS)
    jobs.add_job(leading(leadership, flush), "interval", seconds=ALERT_FLUSH_EVERY, id=FLUSH)


def keep_repos(
    jobs: BackgroundScheduler,
    sync: Callable[[], object],
    sync_every: float,
    settle: Callable[[], object],
) -> None:
    """This host's clones fetched and indexed (at start, then every `sync_every` seconds), and
    its reviewed code changes pushed or dropped: on every pm, leader or not, since each host
    keeps its own clones."""
    jobs.add_job(
        _logged(sync), "interval", seconds=sync_every, id=REPOS, next_run_time=datetime.now()
    )
    jobs.add_job(_logged(settle), "interval", seconds=CHANGES_EVERY, id=CHANGES)


def _logged(job: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except Exception:
            log.exception("%s failed; it runs again later", getattr(job, "__name__", "job"))

    return run


def conduct(jobs: BackgroundScheduler, leadership: Leadership, sweep: Callable[[], object]) -> None:
    """The projects' sweep, by the leader: each unfinished project moved on (its steps are moved
    on as they are answered; this catches what a process that died left)."""
    jobs.add_job(
        _logged(leading(leadership, sweep)), "interval", seconds=PROJECTS_EVERY, id=PROJECTS
    )


def run_now(jobs: BackgroundScheduler) -> None:
    """Every job at once: what a pm does when it is elected (the sweep finds what was stranded
    while no pm led; the forecast learns)."""
    for job in (SWEEP, TRAINING, CHECKS, FLUSH):
        if jobs.get_job(job) is not None:
            jobs.modify_job(job, next_run_time=datetime.now())


def run(plane: ControlPlane, jobs: BackgroundScheduler, link: Broker, stop: threading.Event) -> int:
    supervisor = plane.supervisor
    jobs.start()
    while not stop.is_set() and not (supervisor and supervisor.config_error) and not _refused(link):
        plane.tick(time.monotonic())
        stop.wait(1.0)
    stop.set()  # a job waiting for the broker gives up now
    log.info("stopping")
    jobs.shutdown(wait=False)
    if supervisor is not None:
        supervisor.stop(plane.drain_timeout)
    link.close()
    link.check()  # refused credentials: the ConfigError says so
    if supervisor is not None and supervisor.config_error:
        log.critical("task workers cannot start with these settings (their error is above)")
        return CONFIG_ERROR
    return 0


def leading(leadership: Leadership, job: Callable[[], object]) -> Callable[[], object]:
    """`job`, on the elected pm only."""

    def run() -> object:
        return job() if leadership.leader else None

    run.__name__ = getattr(job, "__name__", "job")
    return run


def every(job: Callable[[], object], seconds: float) -> Callable[[], object]:
    """`job`, at most once in `seconds` (a pm that has just been elected runs it at once)."""
    last = [float("-inf")]

    def run() -> object:
        if time.monotonic() - last[0] < seconds:
            return None
        last[0] = time.monotonic()
        return job()

    run.__name__ = getattr(job, "__name__", "job")
    return run


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
