"""What the bot's listeners call: built by aico's bootstrap (bot_services), given to create_app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.ports import EventStore
from core.usecases.budgets import Budgets
from core.usecases.control import TaskControl
from core.usecases.conversations import Conversations
from core.usecases.intake import Intake
from core.usecases.status import Status


@dataclass(frozen=True)
class Services:
    intake: Intake
    status: Status
    tasks: EventStore
    control: TaskControl
    max_chars: int
    budgets: Budgets | None = None
    admins: frozenset[str] = frozenset()
    conversations: Conversations | None = None
    tell: Callable[[str, str, str, str], None] | None = None  # (channel, user, text, thread_ts)
