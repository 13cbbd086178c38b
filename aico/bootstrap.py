"""The one place adapters are chosen and services built. Each process (aico/processes.py) asks
for what it needs here, by keyword.

Adapters are imported inside the functions that build them, so a process loads only the clients
it uses (the anthropic SDK alone is ~60 MiB: only task workers pay for it).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import Settings

if TYPE_CHECKING:
    from bot.usecases import UseCases
    from core.adapters.claude import ClaudeModel
    from core.adapters.rabbitmq import AmqpLink
    from core.adapters.slack import SlackNotifier
    from core.ports import EventStore
    from core.usecases.intake import Intake
    from core.usecases.recovery import Recovery
    from core.usecases.status import Status


def configure_logging(settings: Settings, process: str) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s {process}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("slack_bolt").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def store(settings: Settings) -> EventStore:
    return open_store(settings.db_url or f"sqlite:///{settings.db_path}")


def open_store(url: str) -> EventStore:
    """The event store at `url`: `sqlite:///path`, or `postgresql://…` (also `postgres://…`)
    when the processes run on more than one host. Both have the same API."""
    if url.startswith(("postgresql://", "postgres://")):
        from core.adapters.postgres_store import PostgresEventStore

        return PostgresEventStore(url)
    from core.adapters.sqlite_store import SqliteEventStore

    return SqliteEventStore(Path(url.removeprefix("sqlite:///")))


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
    return Intake(events, relay, settings.max_task_chars, budgets=budgets)


# -- one builder per process's services -----------------------------------------------------


def bot_services(
    settings: Settings, *, intake: Intake, amqp: AmqpLink, store: EventStore, slack: Any
) -> UseCases:
    """What the bot's listeners call, built by keyword."""
    from bot.usecases import UseCases
    from core.domain.messages import RESULTS
    from core.usecases.control import TaskControl
    from core.usecases.conversations import Conversations

    return UseCases(
        intake=intake,
        status=status(store, amqp, wait=2.0),
        tasks=store,
        control=TaskControl(store, intake, amqp, RESULTS, settings.admins),
        max_chars=settings.max_task_chars,
        budgets=intake.budgets,
        admins=settings.admins,
        conversations=Conversations(store, intake, settings.conversations == "channel"),
        tell=slack.ephemeral,
    )


def status(store: EventStore, amqp: AmqpLink, wait: float) -> Status:
    """`/aico status` and `aico status`: the store's figures and the broker's queues."""
    from core.domain.messages import DEAD, RESULTS, TASKS
    from core.usecases.status import Status

    return Status(store, lambda queue: amqp.queue_depth(queue).result(wait), (TASKS, RESULTS, DEAD))


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
