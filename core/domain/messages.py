"""Queue messages: frozen dataclasses with a schema version, encoded as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from core.domain import fastjson
from core.domain.attachments import Attachment
from core.errors import DecodeError

if TYPE_CHECKING:
    from core.domain.events import TaskView

SCHEMA_VERSION = 1

# The queues, and how often a message is delivered again before it is dead-lettered: the
# contract between the processes (the broker adapter declares them so).
TASKS = "aico.tasks"
RESULTS = "aico.results"
DEAD = "aico.dead"  # dead letters kept for operators (nothing consumes it)
DEAD_WATCH = "aico.dead.watch"  # a copy of each, for the result worker to tell their owners
DEAD_EXCHANGE = "aico.dead"  # fanout to both
DELIVERY_LIMIT = 5  # redeliveries before a message is dead-lettered: 6 deliveries in all


class Message:
    kind: ClassVar[str]

    def encode(self) -> bytes:
        body = {"kind": self.kind, "v": SCHEMA_VERSION, **asdict(self)}  # type: ignore[call-overload]
        return fastjson.dumps_bytes(body)

    @classmethod
    def decode(cls, raw: bytes) -> Self:
        try:
            body = fastjson.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(f"not JSON: {exc}") from exc
        if not isinstance(body, dict) or body.get("kind") != cls.kind:
            raise DecodeError(f"expected a {cls.kind!r} message")
        if body.get("v") != SCHEMA_VERSION:
            raise DecodeError(f"unsupported schema version {body.get('v')!r}")
        fields = {k: v for k, v in body.items() if k not in ("kind", "v")}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise DecodeError(f"bad {cls.kind} message: {exc}") from exc


@dataclass(frozen=True)
class TaskMessage(Message):
    """A task for a task worker. The task id is also the AMQP message id."""

    kind: ClassVar[str] = "task"
    task_id: str
    prompt: str
    user: str
    channel: str
    thread_ts: str
    submitted_at: float
    generation: int = 0  # raised when the task is queued again on purpose (a retry, a recovery)
    repo: str = ""  # the repository to draw context from ("": every configured one)
    mode: str = ""  # "code": propose a change on a branch; "project": plan it; "": answer
    # Files attached in Slack (Attachment records: metadata and the private URL, never content)
    files: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _require_str(self, "task_id", "prompt", "user", "channel", "thread_ts")
        if not isinstance(self.generation, int) or self.generation < 0:
            raise DecodeError("TaskMessage.generation must be a whole number >= 0")
        if not isinstance(self.repo, str) or self.mode not in ("", "code", "project"):
            raise DecodeError("TaskMessage.repo must be a string and mode '', 'code' or 'project'")
        if not isinstance(self.files, list):
            raise DecodeError("TaskMessage.files must be a list")
        try:
            self.attachments()
        except ValueError as exc:
            raise DecodeError(f"TaskMessage.files: {exc}") from None

    def attachments(self) -> list[Attachment]:
        return [Attachment.of(record) for record in self.files]

    @classmethod
    def of(cls, task: TaskView, generation: int | None = None) -> TaskMessage:
        """The message that queues `task` (for `generation`, else the task's own)."""
        return cls(
            task.id,
            task.prompt,
            task.user,
            task.channel,
            task.thread_ts,
            task.created_at,
            task.generation if generation is None else generation,
            repo=task.repo,
            mode=task.mode,
            files=task.files,
        )


@dataclass(frozen=True)
class ResultMessage(Message):
    """What a task worker reports: `started`, `progress` (the answer so far), `retrying` (this
    attempt failed and the task goes back to the queue), then `completed` or `failed`; or what the
    bot reports when someone cancels a task (`cancelled`), for the thread to show. `attempt` is
    the attempt's number among the task's claimed attempts (1, 2, …), so that a glimpse of an
    earlier attempt never shows over a later one; `stop_reason` is Claude's (`max_tokens`: the
    answer was cut; `refusal`: Claude declined). `first` marks the answer of the first attempt
    claimed, the one report that no other of its answer can have preceded."""

    kind: ClassVar[str] = "result"
    task_id: str
    event: str
    channel: str
    thread_ts: str
    at: float
    text: str = ""
    error: str = ""
    model: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    claude_ms: float = 0.0
    worker: str = ""
    started_at: float = 0.0
    attempt: int = 0
    stop_reason: str = ""
    change: dict[str, Any] = field(default_factory=dict)  # a code task's proposed change
    first: bool = False  # `completed` by a task's first claimed attempt: no report of an answer
    # to it came before, so the result worker may post it without recording its intent first

    EVENTS: ClassVar[tuple[str, ...]] = (
        "started",
        "progress",
        "retrying",
        "completed",
        "failed",
        "cancelled",
        "plan",  # a project's plan was made (or moved on): its live plan is shown again
    )

    def __post_init__(self) -> None:
        _require_str(self, "task_id", "event", "channel", "thread_ts")
        if self.event not in self.EVENTS:
            raise DecodeError(f"unknown result event {self.event!r}")


def _require_str(message: object, *names: str) -> None:
    for name in names:
        value = getattr(message, name)
        if not isinstance(value, str) or not value:
            raise DecodeError(f"{type(message).__name__}.{name} must be a non-empty string")


def salvage_route(raw: bytes) -> tuple[str, str, str] | None:
    """(task_id, channel, thread_ts) of a task message that cannot be decoded whole, if they can
    be read from it, so that its owner can be told in the thread."""
    try:
        body = fastjson.loads(raw)
        route = (body["task_id"], body["channel"], body["thread_ts"])
    except (ValueError, TypeError, KeyError):
        return None
    return route if all(isinstance(part, str) and part for part in route) else None
