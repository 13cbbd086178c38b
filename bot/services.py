"""What the bot's listeners call: built by aico's bootstrap (bot_services), given to create_app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.budgets import Budgets
from core.control import TaskControl
from core.conversations import Conversations
from core.ports import EventStore
from core.services import Intake
from core.status import Status


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
