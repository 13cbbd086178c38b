"""The ports: what the use cases and workers need of the world, as Protocols. The adapters in
core/adapters implement them (SQLite and PostgreSQL, RabbitMQ, Slack, Claude); the tests' twins
implement them in memory. Code is typed against these, never against an adapter."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.domain.events import Event, TaskView
from core.domain.pool import Record
from core.domain.stats import Activity, Spender, Summary
from core.domain.task import TaskStatus


class EventStore(Protocol):
    """The one history: events keyed by (task, version), the projections derived from them, the
    workers' heartbeats, budgets set by admins, the pool's leader, decisions and pin."""

    def append(
        self,
        task_id: str,
        type_: str,
        data: dict[str, Any],
        event_id: str = "",
        expected_version: int | None = None,
    ) -> TaskView | None: ...
    def task(self, task_id: str) -> TaskView | None: ...
    def task_by_event(self, event_id: str) -> TaskView | None: ...
    def events(self, task_id: str) -> list[Event]: ...
    def tasks_in(self, status: TaskStatus, mode: str = "") -> list[TaskView]: ...
    def thread(self, channel: str, thread_ts: str) -> list[TaskView]: ...
    def recent(self, limit: int, user: str = "", channel: str = "") -> list[TaskView]: ...
    def summary(self, since: float, user: str = "", channel: str = "") -> Summary: ...
    def top_spenders(self, day: str, scope: str, limit: int = 3) -> list[Spender]: ...
    def set_budget(self, scope: str, who: str, day: str, usd: float, by: str) -> None: ...
    def budget(self, scope: str, who: str, day: str) -> float | None: ...
    def heartbeat(self, worker_id: str, state: dict[str, Any]) -> None: ...
    def workers(self, seen_since: float) -> list[dict[str, Any]]: ...
    def record(self, aggregate_id: str, type_: str, data: dict[str, Any]) -> Record: ...
    def latest(self, aggregate_id: str) -> Record | None: ...
    def tail(self, aggregate_id: str, limit: int) -> list[Record]: ...
    def activity(self, since: float) -> Activity: ...
    def task_counts(self) -> dict[str, int]: ...
    def claude_times(self, since: float) -> dict[int, int]: ...
    def maintain(
        self, heartbeats_older_than: float, stats_older_than: float = 0.0
    ) -> dict[str, int]: ...
    def rebuild(self) -> int: ...
    def backup(self, target: Path) -> None: ...
    def schema_version(self) -> int: ...
    def close(self) -> None: ...


class Delivery(Protocol):
    """One message from a queue. Settle it exactly once, from any thread."""

    body: bytes
    message_id: str
    redelivered: bool
    delivery_count: int  # earlier deliveries of this message
    death_reason: str  # why it was dead-lettered, on a dead-letter queue

    def ack(self) -> None: ...
    def reject(self) -> None: ...  # dead-letter it now
    def requeue(self) -> None: ...  # give it back for another attempt


class Broker(Protocol):
    """Queues with publisher confirms: a publish's future resolves once the broker has it."""

    connected: threading.Event

    def check(self) -> None: ...  # ConfigError once the broker refused our credentials
    def consume(
        self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None]
    ) -> None: ...
    def stop_consuming(self) -> Future[None]: ...
    def claim(self, name: str) -> Future[bool]: ...  # an exclusive queue: the pm's leader lock
    def queue_depth(self, queue: str) -> Future[tuple[int, int]]: ...  # (ready, consumers)
    def publish(self, queue: str, body: bytes, message_id: str) -> Future[None]: ...
    def publish_later(
        self, delay: float, queue: str, body: bytes, message_id: str
    ) -> Future[None]: ...
    def close(self, timeout: float = 5.0) -> None: ...


class Notifier(Protocol):
    """What aico says in Slack: messages, their updates, files, ephemeral replies, statuses,
    streams and agent sessions."""

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str: ...
    def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any] | None = None,
    ) -> None: ...
    def find_message(
        self,
        channel: str,
        event_type: str,
        key: str,
        thread_ts: str = "",
        generation: int | None = None,
    ) -> str: ...
    def has_file(self, channel: str, thread_ts: str, filename: str) -> bool: ...
    def upload(
        self, channel: str, thread_ts: str, content: str, filename: str, comment: str
    ) -> None: ...
    def set_status(self, channel: str, thread_ts: str, status: str) -> None: ...
    # Slack's agent platform. A stream is a reply that grows (`chat.startStream` with the first
    # text, `appendStream`, `stopStream` with the blocks under it and its metadata); Slack may
    # end one itself (`message_not_in_streaming_state`), after which `update` finishes it. A
    # stream carries no metadata until it is stopped: `find_stream` finds ours by its start.
    def start_stream(self, channel: str, thread_ts: str, text: str, recipient: str = "") -> str: ...
    def append_stream(self, channel: str, ts: str, text: str) -> None: ...
    def stop_stream(
        self,
        channel: str,
        ts: str,
        text: str = "",
        blocks: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        session_status: str = "",
    ) -> None: ...
    def find_stream(self, channel: str, thread_ts: str, head: str) -> str: ...
    # An agent session per thread (`agents.sessions.setStatus`): active, processing, suspended
    # or closed; the title counts when the session is created.
    def set_session(self, channel: str, thread_ts: str, status: str, title: str = "") -> None: ...
    def delete(self, channel: str, ts: str) -> None: ...
    def ephemeral(self, channel: str, user: str, text: str, thread_ts: str = "") -> None: ...
    def respond(self, response_url: str, text: str) -> None: ...
    def check(self) -> None: ...  # SlackError unless Slack takes the token (auth.test)


@dataclass(frozen=True)
class Completion:
    """Claude's answer: its text, the model that wrote it, the tokens used, Claude's time, and
    how it stopped (`max_tokens`: cut at the length limit; `refusal`: Claude declined)."""

    text: str
    model: str
    usage: dict[str, Any] = field(default_factory=dict)
    ms: float = 0.0
    stop_reason: str = "end_turn"


@dataclass(frozen=True)
class ToolAnswer:
    """Claude's call of a tool it was made to use: the tool's input (a JSON object), with the
    model, tokens and time, as a Completion has them."""

    name: str
    input: dict[str, Any]
    model: str
    usage: dict[str, Any] = field(default_factory=dict)
    ms: float = 0.0
    stop_reason: str = "tool_use"


class Model(Protocol):
    def check(self) -> str: ...  # ConfigError for a model that cannot be used
    def complete(
        self,
        prompt: str | list[dict[str, Any]],  # text, or content blocks (files attached)
        history: Sequence[tuple[str, str]] = (),
        on_text: Callable[[list[str]], None] | None = None,
        ready: Callable[[], bool] | None = None,  # sent only once it says True (else Withheld)
    ) -> Completion: ...
    def use_tool(
        self,
        prompt: str | list[dict[str, Any]],
        tool: dict[str, Any],
        history: Sequence[dict[str, Any]] = (),
        system: str = "",
    ) -> ToolAnswer: ...  # the tool forced with tool_choice; history: earlier messages as sent


class Regressor(Protocol):
    """A trainable model of numbers from numbers (scikit-learn's estimator API): what the
    arrival forecast of the scaling policy learns with (core/adapters/forecaster.py)."""

    def fit(self, X: Sequence[Sequence[float]], y: Sequence[float]) -> Any: ...
    def predict(self, X: Sequence[Sequence[float]]) -> Sequence[float]: ...
