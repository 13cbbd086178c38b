"""Task events and the projection that folds them into a task's current state."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from core.domain.task import TaskStatus
from core.errors import Conflict

SUBMITTED = "submitted"
POSTED = "posted"  # the parent message is in the channel; its ts is the thread
QUEUED = "queued"
REQUEUED = "requeued"  # queued again by the recovery sweep: its message was lost
STARTED = "started"  # a task worker claimed a delivery of the task: one attempt
ANSWERED = "answered"  # Claude's answer, recorded before it is reported: never asked twice
REPLY_PENDING = "reply_pending"  # the result message is about to be posted (it may exist now)
REPLIED = "replied"  # the result message is in the thread; later news updates it
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"  # by its requester or an admin; a running attempt's answer is dropped
RETRIED = "retried"  # a failed or cancelled task, reopened for a new generation of attempts
# A code task's change (issue 12): proposed on a branch, then approved (and pushed) or rejected.
CHANGE_PROPOSED = "change_proposed"  # committed on aico/<task id> in a worktree: branch, diff
CHANGE_REFUSED = "change_refused"  # Claude's edits broke a rule: nothing was written
CHANGE_APPROVED = "change_approved"  # by the requester or an admin: to be pushed
CHANGE_REJECTED = "change_rejected"  # by the requester or an admin: the branch is to go
CHANGE_PUSHED = "change_pushed"  # the branch is on the remote (or kept locally: where)
CHANGE_DISCARDED = "change_discarded"  # the branch and its worktree are gone
FEEDBACK = "feedback"  # a person rated the answer with its feedback buttons: {by, rating}
# A project (mode "project"): its plan, and the requester's go-ahead when the estimate asked for it.
PROJECT_PLANNED = "project_planned"  # {plan, estimate, needs_confirm}
PROJECT_CONFIRMED = "project_confirmed"  # {by}

_STATUS_AFTER: dict[str, TaskStatus | None] = {
    SUBMITTED: TaskStatus.SUBMITTED,
    POSTED: TaskStatus.SUBMITTED,
    QUEUED: TaskStatus.QUEUED,
    REQUEUED: None,
    STARTED: TaskStatus.RUNNING,
    ANSWERED: TaskStatus.RUNNING,
    REPLY_PENDING: None,  # None: the status stays what it was
    REPLIED: None,
    COMPLETED: TaskStatus.DONE,
    FAILED: TaskStatus.FAILED,
    CANCELLED: TaskStatus.CANCELLED,
    RETRIED: TaskStatus.SUBMITTED,
    CHANGE_PROPOSED: None,
    CHANGE_REFUSED: None,
    CHANGE_APPROVED: None,
    CHANGE_REJECTED: None,
    CHANGE_PUSHED: None,
    CHANGE_DISCARDED: None,
    FEEDBACK: None,
    PROJECT_PLANNED: None,
    PROJECT_CONFIRMED: None,
}


# What is still news once a task has ended: where its messages are, and its change's review.
_MESSAGE_EVENTS = (POSTED, REPLY_PENDING, REPLIED)
_CHANGE_STATES = {
    CHANGE_PROPOSED: "proposed",
    CHANGE_REFUSED: "refused",
    CHANGE_APPROVED: "approved",
    CHANGE_REJECTED: "rejected",
    CHANGE_PUSHED: "pushed",
    CHANGE_DISCARDED: "discarded",
}
_LATE_EVENTS = (*_MESSAGE_EVENTS, *_CHANGE_STATES, FEEDBACK)
_NEWS_AFTER_THE_END = (*_LATE_EVENTS, QUEUED)  # a late "queued" may carry the task's thread
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
    attempts: int = 0  # deliveries a task worker claimed
    answered: bool = False
    reply_ts: str = ""  # the one result message in the thread, once posted
    reply_pending: bool = False  # a post of it was started: look for it before posting again
    generation: int = 0  # of its queue message; older copies are superseded
    cost: float = 0.0  # USD, from the price table when it was answered
    cancelled_by: str = ""
    conversation: str = ""  # the task whose thread this one continues; "" for a thread's first
    claude_ms: float = 0.0  # Claude's time for the answer, once answered
    repo: str = ""  # the repository named for its context ("": the channel's, else all)
    mode: str = ""  # "code": a change on a branch, for review; "": an answer
    change: str = ""  # its change's review: proposed, refused, approved, rejected, pushed, …
    source: str = ""  # how it came in: "" (/aico task, a button), "mention", "dm" or "step"
    project: str = ""  # a project's step: the project's task id
    step: str = ""  # … and the step's id in its plan ("final": the one that assembles the answer)
    files: list[dict[str, Any]] = field(default_factory=list)  # attached in Slack: metadata only

    @property
    def has_parent(self) -> bool:
        """Whether aico posted the thread's parent message for it (and keeps its status): not
        for a turn of a conversation, nor for a mention or a DM, whose parent is the user's."""
        return not self.conversation and not self.source

    def key(self, what: str) -> str:
        """The event id of `what` for this generation of the task: recorded once per attempt
        of the whole task (a retry starts a new generation)."""
        return f"{self.id}:{what}:{self.generation}"


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
            thread_ts=d.get("thread_ts", ""),  # a turn in a thread that exists already
            conversation=d.get("conversation", ""),
            repo=d.get("repo", ""),
            mode=d.get("mode", ""),
            source=d.get("source", ""),
            project=d.get("project", ""),
            step=d.get("step", ""),
            files=list(d.get("files", [])),
            created_at=event.at,
            updated_at=event.at,
            version=event.version,
        )
    if event.type == RETRIED:
        return _retried(view, event)
    if view.status.final:  # its status stays; only where its messages are is still news
        news = _changes(view, event) if event.type in _NEWS_AFTER_THE_END else {}
        return replace(view, version=event.version, **news)
    if event.type == STARTED and event.data.get("generation", 0) < view.generation:
        raise Conflict(f"task {view.id}: an attempt of a superseded copy of its message")
    status = _STATUS_AFTER[event.type] or view.status
    if _RANK[status] < _RANK[view.status]:
        status = view.status  # late news (the broker's confirm after the worker started)
    changes = {"status": status, "updated_at": event.at, **_changes(view, event)}
    return replace(view, version=event.version, **changes)


def _retried(view: TaskView, event: Event) -> TaskView:
    """A new generation of a failed or cancelled task: queued again, with a new result message."""
    if view.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise Conflict(
            f"task {view.id} is {view.status.value}: only a failed or cancelled task can be retried"
        )
    return replace(
        view,
        status=TaskStatus.SUBMITTED,
        version=event.version,
        updated_at=event.at,
        generation=view.generation + 1,
        error="",
        started_at=0.0,
        finished_at=0.0,
        answered=False,
        reply_ts="",
        reply_pending=False,
        cancelled_by="",
        change="",
    )


def _changes(view: TaskView, event: Event) -> dict[str, Any]:
    """What `event` changes in the view besides its status."""
    data = event.data
    if event.type in _CHANGE_STATES:
        return {"change": _CHANGE_STATES[event.type]}
    match event.type:
        case "posted":
            return {"thread_ts": data["thread_ts"]}
        case "queued" if data.get("thread_ts"):  # queued as soon as its parent was posted
            return {"thread_ts": data["thread_ts"]}
        case "started":
            return {"started_at": view.started_at or event.at, "attempts": view.attempts + 1}
        case "answered":
            claude_ms = float(data.get("claude_ms", 0.0) or 0.0)
            return {"answered": True, "usage": data.get("usage", {}), "claude_ms": claude_ms}
        case "requeued":
            return {"generation": data["generation"]}
        case "reply_pending":
            return {"reply_pending": True}
        case "replied":
            return {"reply_ts": data["ts"]}
        case "cancelled":
            return {"finished_at": event.at, "cancelled_by": data.get("by", "")}
        case "completed" | "failed":
            return {
                "reply_ts": data.get("reply_ts") or view.reply_ts,  # its answer's new message
                "started_at": view.started_at or data.get("started_at", 0.0),
                "finished_at": event.at,
                "error": data.get("error", ""),
                "usage": data.get("usage") or view.usage,
                "cost": data.get("cost_usd") or view.cost,
                "claude_ms": float(data.get("claude_ms") or 0.0) or view.claude_ms,
            }
    return {}
