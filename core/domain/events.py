"""Task events and the projection that folds them into a task's current state."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from core.domain.task import TaskStatus

SUBMITTED = "submitted"
POSTED = "posted"  # the parent message is in the channel; its ts is the thread
QUEUED = "queued"
STARTED = "started"
COMPLETED = "completed"
FAILED = "failed"

_STATUS_AFTER = {
    SUBMITTED: TaskStatus.SUBMITTED,
    POSTED: TaskStatus.SUBMITTED,
    QUEUED: TaskStatus.QUEUED,
    STARTED: TaskStatus.RUNNING,
    COMPLETED: TaskStatus.DONE,
    FAILED: TaskStatus.FAILED,
}


_RANK = {status: rank for rank, status in enumerate(TaskStatus)}  # statuses only move forward


@dataclass(frozen=True)
class Event:
    task_id: str
    type: str
    data: dict[str, Any]
    at: float
    version: int = 0
    event_id: str = ""

    def __post_init__(self) -> None:
        if self.type not in _STATUS_AFTER:
            raise ValueError(f"unknown event type {self.type!r}")


@dataclass(frozen=True)
class TaskView:
    """A task's current state, derived from its events only."""

    id: str
    status: TaskStatus
    user: str
    channel: str
    prompt: str
    created_at: float
    updated_at: float
    version: int
    thread_ts: str = ""
    response_url: str = ""
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)


def fold(events: list[Event]) -> TaskView | None:
    view: TaskView | None = None
    for event in events:
        view = apply(view, event)
    return view


def apply(view: TaskView | None, event: Event) -> TaskView:
    """The state after `event`. The status only moves forward, and a final state is never left
    (late events change nothing)."""
    if view is None:
        if event.type != SUBMITTED:
            raise ValueError(f"task {event.task_id} has no submitted event")
        d = event.data
        return TaskView(
            id=event.task_id,
            status=TaskStatus.SUBMITTED,
            user=d["user"],
            channel=d["channel"],
            prompt=d["prompt"],
            response_url=d.get("response_url", ""),
            created_at=event.at,
            updated_at=event.at,
            version=event.version,
        )
    if view.status.final:
        return replace(view, version=event.version)
    status = _STATUS_AFTER[event.type]
    if _RANK[status] < _RANK[view.status]:
        status = view.status  # late news (the broker's confirm after the worker started)
    changes: dict[str, Any] = {"status": status, "updated_at": event.at}
    if event.type == POSTED:
        changes["thread_ts"] = event.data["thread_ts"]
    elif event.type == STARTED:
        changes["started_at"] = event.at
    elif event.type in (COMPLETED, FAILED):
        changes["started_at"] = view.started_at or event.data.get("started_at", 0.0)
        changes["finished_at"] = event.at
        changes["error"] = event.data.get("error", "")
        changes["usage"] = event.data.get("usage", {})
    return replace(view, version=event.version, **changes)
