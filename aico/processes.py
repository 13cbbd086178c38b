"""Each process of the Procfile: settings in, adapters and services built (aico/bootstrap.py),
then run. `aico.cli` picks one."""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable

from aico import bootstrap
from core import shutdown
from core.config import Settings

log = logging.getLogger(__name__)


def bot(settings: Settings) -> int:
    from bot.app import create_app
    from bot.serve import serve

    bootstrap.configure_logging(settings, "bot")
    slack, amqp, store = (
        bootstrap.notifier(settings),
        bootstrap.link(settings, "bot"),
        bootstrap.store(settings, first=True),
    )
    intake = bootstrap.intake(settings, amqp, slack, store)
    services = bootstrap.bot_services(settings, intake=intake, amqp=amqp, store=store, slack=slack)
    app = create_app(slack.client, settings.slack_signing_secret, services)
    metrics = bootstrap.metrics(store, amqp)
    if resumed := intake.relay.resume():
        log.info("re-queueing %d task(s) received before the last stop", resumed)

    canary = bootstrap.canary(settings, slack, store)
    try:
        beat = bootstrap.bot_heartbeat(store)
        serve(
            app,
            settings.slack_app_token,
            settings.port,
            amqp.check,
            metrics,
            beat,
            canary,
            signing_secret=settings.slack_signing_secret,
        )
    finally:
        intake.relay.close()
        amqp.close()
    return 0


def task_worker(settings: Settings) -> int:
    from core.domain.breaker import BreakerState, CircuitBreaker
    from core.domain.messages import TASKS
    from workers.runtime import Runtime
    from workers.task.handler import TaskHandler
    from workers.task.heartbeat import start_heartbeat

    bootstrap.configure_logging(settings, "task")
    model = bootstrap.model(settings)
    log.info("model %s: %s", settings.model, model.check())  # a retired one stops us here
    stopping, breaker = threading.Event(), CircuitBreaker("claude", on_change=_breaker_changed)
    store = bootstrap.store(settings)
    context, code = bootstrap.repo_context(settings), bootstrap.code_changes(settings)
    files = bootstrap.slack_files(settings)
    link = bootstrap.link(settings, "task")
    handler = TaskHandler(
        store,
        model,
        breaker,
        stopping,
        context=context,
        code=code,
        files=files,
        max_file_bytes=settings.max_file_bytes,
        projects=bootstrap.project_work(settings, store, link, model),
        slots=settings.task_concurrency,
    )
    runtime = Runtime(
        link,
        TASKS,
        handler,
        settings.task_concurrency,
        paused=lambda: breaker.state is BreakerState.OPEN,
        stopping=stopping,
        spare=True,  # the handler keeps to task_concurrency Claude calls itself
    )
    _on_signals(runtime.stop)
    start_heartbeat(store, handler, breaker, settings.task_concurrency, stopping)
    runtime.run(drain_timeout=settings.drain_timeout)
    return 0


def result_worker(settings: Settings) -> int:
    from core.domain.messages import DEAD_WATCH, RESULTS
    from workers.result.dead import DeadLetterHandler
    from workers.result.handler import ResultHandler
    from workers.runtime import Runtime

    bootstrap.configure_logging(settings, "result")
    stopping, store = threading.Event(), bootstrap.store(settings)
    link = bootstrap.link(settings, "result")
    results = ResultHandler(
        store,
        bootstrap.notifier(settings),
        stopping,
        prices=settings.prices,
        projects=bootstrap.projects(settings, store, link),
    )
    concurrency = settings.result_concurrency
    runtime = Runtime(link, RESULTS, results, concurrency, ordered=True, stopping=stopping)
    dead = DeadLetterHandler(store, results, bootstrap.alert_desk(settings, store))
    runtime.also(DEAD_WATCH, dead)
    _on_signals(runtime.stop)
    runtime.run()
    return 0


def pm(settings: Settings) -> int:
    from core.usecases.projects import sweep as sweep_projects
    from workers.pm import control

    bootstrap.configure_logging(settings, "pm")
    link, stop, store = bootstrap.link(settings, "pm"), threading.Event(), bootstrap.store(settings)
    plane = bootstrap.control_plane(settings, store, link)
    checks = bootstrap.health(settings, store, link, plane)
    ops = bootstrap.operations(settings, store, link, checks)
    train, every = plane.scaler.train, settings.train_every
    jobs = control.scheduler(
        link, plane.leadership, ops.sweep_now, settings.sweep_every, train, every, stop
    )

    def tell() -> None:  # alerts recorded by any process, and `/aico recover` asked in Slack
        ops.alerts.flush()
        ops.answer_requests()

    control.watch(jobs, plane.leadership, checks.run, settings.check_every, tell)
    conductor = bootstrap.projects(settings, store, link)
    control.conduct(jobs, plane.leadership, lambda: sweep_projects(conductor))
    keeper, changes = (
        bootstrap.repo_keeper(settings, store),
        bootstrap.change_keeper(settings, store),
    )
    if keeper is not None and changes is not None:  # every pm keeps its host's clones
        control.keep_repos(jobs, keeper.sync_all, settings.repo_fetch_every, changes.settle)
    plane.leadership.on_elected = lambda: control.run_now(jobs)
    _on_signals(stop.set)
    return control.run(plane, jobs, link, stop)


def _on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT stop the process the way it stops cleanly (a drain, for workers).

    The handler only notes the signal; a thread of its own then calls `stop`. Python runs a
    handler in the main thread between two bytecodes, possibly while that thread holds a lock
    that `stop` needs: the very Event `stop` sets, just woken in `Event.wait`. Setting it in
    the handler then waited for itself forever, and SIGTERM never stopped the process (seen: a
    pm and a task worker still there 75 s after SIGTERM, killed). SimpleQueue.put is
    reentrant: it is safe in a signal handler."""
    signalled: queue.SimpleQueue[int] = queue.SimpleQueue()

    def watch() -> None:
        signalled.get()
        stop()

    threading.Thread(target=watch, name="signal-watch", daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _: signalled.put(signum))
    if shutdown.requested():  # it came while the process started, and did not end it
        signalled.put(signal.SIGTERM)


def _breaker_changed(old: object, new: object) -> None:
    from core.domain.breaker import BreakerState

    level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
    log.log(level, "Claude circuit breaker %s -> %s", old, new)
