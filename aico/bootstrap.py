"""The one place adapters are chosen and services built. Each process (aico/processes.py) asks
for what it needs here, by keyword.

Adapters are imported inside the functions that build them, so a process loads only the clients
it uses (the anthropic SDK alone is ~60 MiB: only task workers pay for it).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import Settings

if TYPE_CHECKING:
    from bot.canary import CanaryPlan
    from bot.usecases import UseCases
    from core.adapters.claude import ClaudeModel
    from core.adapters.rabbitmq import AmqpLink
    from core.adapters.slack import SlackNotifier
    from core.adapters.slack_files import SlackFiles
    from core.domain.scaling import Policy
    from core.ports import EventStore, Regressor
    from core.usecases.alerts import AlertDesk
    from core.usecases.health import Health
    from core.usecases.intake import Intake
    from core.usecases.operations import Operations
    from core.usecases.projects import Projects
    from core.usecases.recovery import Recovery
    from core.usecases.repos import RepoContext, RepoKeeper
    from core.usecases.status import Status
    from core.usecases.writeback import ChangeKeeper, CodeChanges
    from workers.pm.plane import ControlPlane
    from workers.task.projects import ProjectWork


def configure_logging(settings: Settings, process: str) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s {process}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for chatty in ("slack_bolt", "httpx2", "httpx", "httpcore", "apscheduler"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # pika logs each failed reconnection as eight ERROR lines; the link says it in one
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # At DEBUG these log whole requests (prompts, messages, headers): never below INFO, so that
    # AICO_LOG_LEVEL=DEBUG shows aico's own detail and no one's secrets or prompts.
    for client in ("anthropic", "slack_sdk", "urllib3", "psycopg"):
        logging.getLogger(client).setLevel(max(logging.INFO, logging.getLogger().level))


def store(settings: Settings, first: bool = False) -> EventStore:
    return open_store(settings.db_url or f"sqlite:///{settings.db_path}", first)


def open_store(url: str, first: bool = False) -> EventStore:
    """The event store at `url`: `sqlite:///path`, or `postgresql://…` (also `postgres://…`)
    when the processes run on more than one host. Both have the same API. `first`: this
    process's writes go first for SQLite's write lock (the bot's: its acks wait for them)."""
    if url.startswith(("postgresql://", "postgres://")):
        from core.adapters.postgres_store import PostgresEventStore

        return PostgresEventStore(url)
    from core.adapters.sqlite_store import SqliteEventStore

    return SqliteEventStore(Path(url.removeprefix("sqlite:///")), first=first)


def notifier(settings: Settings) -> SlackNotifier:
    from core.adapters.slack import ChannelPacer, SlackNotifier, web_client

    client = web_client(settings.slack_bot_token, settings.slack_api_url)
    pacer = ChannelPacer(settings.slack_channel_rate, settings.slack_channel_burst)
    return SlackNotifier(client, pacer)


def link(settings: Settings, name: str) -> AmqpLink:
    from core.adapters.rabbitmq import AmqpLink

    return AmqpLink(settings.amqp_url, name).start()


def model(settings: Settings) -> ClaudeModel:
    from core.adapters.claude import ClaudeModel

    return ClaudeModel(
        settings.anthropic_api_key, settings.model, settings.claude_timeout, settings.max_tokens
    )


def intake(settings: Settings, amqp: AmqpLink, slack: SlackNotifier, events: EventStore) -> Intake:
    from core.usecases.budgets import Budgets
    from core.usecases.intake import Intake
    from core.usecases.relay import OutboxRelay

    budgets = Budgets(events, settings.budget_user_daily, settings.budget_channel_daily)
    relay = OutboxRelay(events, slack, amqp)
    repos = [spec.name for spec in settings.repos]
    return Intake(
        events,
        relay,
        settings.max_task_chars,
        budgets=budgets,
        repos=repos,
        max_file_bytes=settings.max_file_bytes,
    )


def slack_files(settings: Settings) -> SlackFiles | None:
    """What task workers download attached files with; None without the bot token (the task
    role does not need it: files are then noted as not readable)."""
    from core.adapters.slack_files import SlackFiles

    if not settings.slack_bot_token:
        return None
    return SlackFiles.for_api(settings.slack_bot_token, settings.slack_api_url)


# -- one builder per process's services -----------------------------------------------------


def bot_services(
    settings: Settings, *, intake: Intake, amqp: AmqpLink, store: EventStore, slack: Any
) -> UseCases:
    """What the bot's listeners call, built by keyword."""
    from bot.usecases import UseCases
    from core.domain.messages import RESULTS
    from core.usecases.control import TaskControl
    from core.usecases.conversations import Conversations
    from core.usecases.feedback import Feedback
    from core.usecases.operations import RecoverRequests
    from core.usecases.scaling import PoolAdmin
    from core.usecases.writeback import ChangeReview

    conductor = projects(settings, store, amqp)
    return UseCases(
        intake=intake,
        status=status(store, amqp, wait=2.0, repos=[spec.name for spec in settings.repos]),
        tasks=store,
        control=TaskControl(store, intake, amqp, RESULTS, settings.admins, conductor),
        max_chars=settings.max_task_chars,
        budgets=intake.budgets,
        admins=settings.admins,
        conversations=Conversations(store, intake, settings.conversations == "channel"),
        tell=slack.ephemeral,
        pool=PoolAdmin(store),
        recover=RecoverRequests(store),
        changes=ChangeReview(store, settings.admins),
        feedback=Feedback(store),
        projects=conductor,
    )


def status(
    store: EventStore, amqp: AmqpLink, wait: float, repos: list[str] | None = None
) -> Status:
    """`/aico status` and `aico status`: the store's figures, the broker's queues and the
    repositories."""
    from core.domain.messages import DEAD, RESULTS, TASKS
    from core.usecases.status import Status

    depth = lambda queue: amqp.queue_depth(queue).result(wait)  # noqa: E731
    return Status(store, depth, (TASKS, RESULTS, DEAD), repos=repos or ())


def canary(settings: Settings, slack: SlackNotifier, store: EventStore) -> CanaryPlan | None:
    """The Socket Mode canary, posting in the alert channel (None without one)."""
    import os
    import socket

    from bot.canary import CanaryPlan
    from core.slack.blocks import context
    from core.usecases.alerts import AlertDesk

    if not settings.alert_channel:
        return None
    return CanaryPlan(
        channel=settings.alert_channel,
        post=lambda channel, text, meta: slack.post(channel, text, [context(text)], None, meta),
        delete=slack.delete,
        alerts=AlertDesk(store, None, settings.alert_channel),  # records; the elected pm posts
        me=f"{socket.gethostname()}:{os.getpid()}",
        every=settings.canary_every,
        wait=settings.canary_wait,
    )


def bot_heartbeat(store: EventStore) -> Callable[[dict[str, Any]], None]:
    """How the bot tells the store it lives (its mode, its Socket Mode connection)."""
    import os
    import socket

    me = f"{socket.gethostname()}:{os.getpid()}"
    return lambda state: store.heartbeat(f"bot:{me}", {"kind": "bot", "host": me, **state})


def metrics(store: EventStore, amqp: AmqpLink) -> Callable[[], bytes]:
    """`GET /metrics` on the bot's port: the pool and the queues, read when scraped."""
    import time

    from core.adapters.metrics import PoolCollector, exposition
    from core.domain.messages import DEAD, RESULTS, TASKS

    depth = lambda queue: amqp.queue_depth(queue).result(2.0)  # noqa: E731
    return exposition(PoolCollector(store, depth, (TASKS, RESULTS, DEAD), time.time))


def control_plane(settings: Settings, store: EventStore, amqp: AmqpLink) -> ControlPlane:
    """The pm's parts: the lead, the policy with its forecast, and (AICO_POOL=local) the
    supervisor of this host's task workers."""
    from core.adapters.system import SystemProbe
    from core.domain.pool import Host
    from core.domain.scaling import AicoPolicy
    from core.usecases.forecast import ArrivalForecast
    from core.usecases.leadership import Leadership
    from core.usecases.scaling import PoolScaler
    from workers.pm.plane import ME, ControlPlane
    from workers.pm.supervisor import Supervisor

    external = settings.pool == "external"
    slots = settings.task_concurrency

    def policy(low: int, high: int) -> Policy:
        if settings.scale_down_after is None:
            return AicoPolicy(low, high, slots)
        return AicoPolicy(low, high, slots, keep_alive_s=settings.scale_down_after)

    scaler = PoolScaler(
        store,
        Host(ME, settings.min_workers, settings.max_workers, external=external),
        policy,
        lambda queue: amqp.queue_depth(queue).result(5),
        slots,
        forecast=ArrivalForecast(_regressor),
    )
    plane = ControlPlane(
        store,
        Leadership(amqp, store, ME),
        scaler,
        None if external else Supervisor(target=settings.min_workers),
        SystemProbe(settings.host_cpu_limit, settings.host_memory_limit).read,
        drain_timeout=settings.drain_timeout + 10,
        alerts=alert_desk(settings, store),
    )
    if plane.supervisor is not None:
        plane.supervisor.on_crash = plane.crashed
    return plane


def _regressor() -> Regressor:
    """The forecast's model, scikit-learn's: imported the first time there is history enough to
    train one (scikit-learn and numpy are some 90 MiB of the pm's memory)."""
    from core.adapters.forecaster import regressor

    return regressor()


def alert_desk(settings: Settings, store: EventStore) -> AlertDesk:
    from core.usecases.alerts import AlertDesk

    slack = notifier(settings) if settings.alert_channel else None
    return AlertDesk(store, slack, settings.alert_channel)


def operations(settings: Settings, store: EventStore, amqp: AmqpLink, checks: Health) -> Operations:
    """The recovery sweep, the store's upkeep and `/aico recover`, run by the elected pm."""
    from core.usecases.operations import Operations

    sweep = recovery(settings, store, amqp).sweep
    return Operations(
        store,
        checks.alerts,
        checks.run,
        sweep,
        notifier(settings),
        stats_days=settings.stats_retention_days,
    )


def health(settings: Settings, store: EventStore, amqp: AmqpLink, plane: ControlPlane) -> Health:
    """The elected pm's checks (core/usecases/probes.py), each through its port."""
    from core.adapters.system import disk_used, memory_used
    from core.usecases import probes, repos
    from core.usecases.health import Health

    def depth(queue: str) -> tuple[int, int]:
        return amqp.queue_depth(queue).result(5)

    beats = probes.Beats(store)
    checks = {
        "broker": probes.broker(amqp, depth),
        "queues": probes.queues(amqp, depth),
        "workers": probes.workers(store, beats),
        "store": probes.store_writable(lambda: plane.last_write),
        "disk": probes.usage("disk", lambda: disk_used(settings.data_dir), "disk of AICO_DATA_DIR"),
        "memory": probes.usage("memory", memory_used, "memory"),
        "breakers": probes.breakers(beats),
        "slack": probes.slack(notifier(settings).check),
        "bot": probes.bot(beats),
        "repos": repos.probe(store, settings.repos),
    }
    return Health(store, plane.alerts or alert_desk(settings, store), checks)


def recovery(settings: Settings, store: EventStore, amqp: AmqpLink) -> Recovery:
    from core.domain.messages import RESULTS, TASKS
    from core.usecases.recovery import Recovery

    return Recovery(
        store,
        amqp.publish,
        lambda queue: amqp.queue_depth(queue).result(10),
        TASKS,
        RESULTS,
        stale_after=settings.stale_after,
    )


# -- the repositories (AICO_REPOS) ------------------------------------------------------------


def repo_context(settings: Settings) -> RepoContext | None:
    """A task worker's search of the saved indexes (None without repositories)."""
    if not settings.repos:  # numpy, scipy and the stemmer stay out of the worker's memory
        return None
    from core.adapters.index import CodeIndex
    from core.usecases.repos import RepoContext

    return RepoContext(settings.repos, settings.data_dir, CodeIndex.load, settings.context_tokens)


def code_changes(settings: Settings) -> CodeChanges | None:
    """A task worker's code write-back (None without repositories)."""
    if not settings.repos:
        return None
    from core.adapters import git
    from core.usecases.writeback import CodeChanges

    return CodeChanges(git, settings.data_dir, settings.repos)


def repo_keeper(settings: Settings, store: EventStore) -> RepoKeeper | None:
    """A pm's clones and indexes of its host (None without repositories)."""
    if not settings.repos:
        return None
    import socket

    from core.adapters import git
    from core.adapters.index import CodeIndex
    from core.usecases.repos import RepoKeeper

    return RepoKeeper(
        settings.repos,
        settings.data_dir,
        store,
        git.sync,
        CodeIndex.build,
        CodeIndex.load,
        settings.repo_token,
        socket.gethostname(),
    )


def change_keeper(settings: Settings, store: EventStore) -> ChangeKeeper | None:
    """A pm's pushes and removals of the reviewed changes on its host."""
    if not settings.repos:
        return None
    from core.adapters import git
    from core.usecases.writeback import ChangeKeeper

    return ChangeKeeper(
        store, git, settings.data_dir, settings.repos, settings.repo_token, notifier(settings)
    )


# -- projects ---------------------------------------------------------------------------------


def projects(settings: Settings, store: EventStore, amqp: AmqpLink) -> Projects:
    """The conductor of projects (any process may move a project on)."""
    from core.usecases.projects import ProjectLimits, Projects

    limits = ProjectLimits(
        steps=settings.project_max_steps,
        depth=settings.project_max_depth,
        parallel=settings.project_parallel,
        spend_usd=settings.project_max_usd,
        confirm_usd=settings.project_confirm_usd,
    )
    return Projects(store, amqp.publish, limits)


def project_work(
    settings: Settings, store: EventStore, amqp: AmqpLink, claude: ClaudeModel
) -> ProjectWork:
    """A task worker's part in projects: the planner, the estimate, the budget left."""
    import functools

    from core.usecases.budgets import Budgets
    from core.usecases.planning import Planner
    from workers.task.projects import ProjectWork

    conductor = projects(settings, store, amqp)
    budgets = Budgets(store, settings.budget_user_daily, settings.budget_channel_daily)

    def budget_left(user: str, channel: str) -> float | None:
        left = [lim.usd - lim.spent for lim in budgets.limits(user, channel) if lim.usd > 0]
        return min(left) if left else None

    return ProjectWork(
        conductor,
        Planner(claude, conductor.limits.plan, [spec.name for spec in settings.repos]),
        functools.partial(settings.prices.cost, settings.model),
        settings.max_tokens,
        budget_left,
        settings.context_tokens if settings.repos else 0,
    )
