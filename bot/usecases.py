"""The use cases the listeners call, in one bundle built by aico's bootstrap for create_app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.ports import EventStore
from core.usecases.budgets import Budgets
from core.usecases.control import TaskControl
from core.usecases.conversations import Conversations
from core.usecases.feedback import Feedback
from core.usecases.intake import Intake
from core.usecases.operations import RecoverRequests
from core.usecases.projects import Projects
from core.usecases.scaling import PoolAdmin
from core.usecases.status import Status
from core.usecases.writeback import ChangeReview


@dataclass(frozen=True)
class UseCases:
    intake: Intake
    status: Status
    tasks: EventStore
    control: TaskControl
    max_chars: int
    budgets: Budgets | None = None
    admins: frozenset[str] = frozenset()
    conversations: Conversations | None = None
    tell: Callable[[str, str, str, str], None] | None = None  # (channel, user, text, thread_ts)
    pool: PoolAdmin | None = None
    recover: RecoverRequests | None = None
    changes: ChangeReview | None = None  # Approve / Reject of a code task's change
    feedback: Feedback | None = None  # the feedback buttons under answers
    projects: Projects | None = None  # a project's Confirm, Stop and Retry
