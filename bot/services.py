"""What the bot's listeners call: built by aico's bootstrap (bot_services), given to create_app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.budgets import Budgets
from core.control import TaskControl
from core.conversations import Conversations
from core.domain.events import Event, TaskView
from core.domain.stats import Summary
from core.services import Intake
from core.status import Status


class TaskReader(Protocol):
    def task(self, task_id: str) -> TaskView | None: ...
    def events(self, task_id: str) -> list[Event]: ...
    def recent(self, limit: int, user: str = "", channel: str = "") -> list[TaskView]: ...
    def summary(self, since: float, user: str = "", channel: str = "") -> Summary: ...


@dataclass(frozen=True)
class Services:
    intake: Intake
    status: Status
    tasks: TaskReader
    control: TaskControl
    max_chars: int
    budgets: Budgets | None = None
    admins: frozenset[str] = frozenset()
    conversations: Conversations | None = None
    tell: Callable[[str, str, str, str], None] | None = None  # (channel, user, text, thread_ts)
