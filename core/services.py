"""Use cases. `Intake` takes tasks from Slack: record, ack, then post the parent and enqueue."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from core.blocks import parent_message
from core.domain import events
from core.domain.events import TaskView
from core.domain.messages import TaskMessage
from core.domain.task import TaskStatus, clean_prompt, new_task_id
from core.errors import AicoError, SlackError

log = logging.getLogger(__name__)

NOTICE_AFTER = 3.0  # seconds without the broker's confirm before the task's owner is told
WAITING = (
    ":warning: Waiting for the queue: RabbitMQ cannot be reached. Your task is saved and will be "
    "queued as soon as it is back"
)
SLACK_ATTEMPTS = 3  # tries to post a parent message when Slack cannot be reached


class EventStore(Protocol):
    def append(
        self, task_id: str, type_: str, data: dict, event_id: str = ""
    ) -> TaskView | None: ...
    def task(self, task_id: str) -> TaskView | None: ...
    def task_by_event(self, event_id: str) -> TaskView | None: ...
    def tasks_in(self, status: TaskStatus) -> list[TaskView]: ...


class Notifier(Protocol):
    def post(self, channel: str, text: str, blocks: list, thread_ts: str | None = None) -> str: ...
    def update(self, channel: str, ts: str, text: str, blocks: list) -> None: ...
    def upload(
        self, channel: str, thread_ts: str, content: str, filename: str, comment: str
    ) -> None: ...
    def respond(self, response_url: str, text: str) -> None: ...


class Publisher(Protocol):
    def publish(self, queue: str, body: bytes, message_id: str): ...  # -> Future[None]


@dataclass(frozen=True)
class TaskRequest:
    user: str
    channel: str
    text: str
    response_url: str = ""
    key: str = ""  # what makes a delivery unique (Slack's trigger_id): a replay is not a new task


class Intake:
    """Records a task before it is acked, then posts its parent message and queues it."""

    def __init__(
        self,
        store: EventStore,
        notifier: Notifier,
        publisher: Publisher,
        queue: str,
        max_chars: int,
        threads: int = 8,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.publisher = publisher
        self.queue = queue
        self.max_chars = max_chars
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="intake")

    def submit(self, request: TaskRequest) -> TaskView:
        """Validate and record the task (InvalidInput says what is wrong). Runs before the ack."""
        prompt = clean_prompt(request.text, self.max_chars)
        task_id = new_task_id()
        data = {
            "user": request.user,
            "channel": request.channel,
            "prompt": prompt,
            "response_url": request.response_url,
        }
        event_id = f"intake:{request.key}" if request.key else f"{task_id}:submitted"
        task = self.store.append(task_id, events.SUBMITTED, data, event_id)
        if task is None:  # the same request again: answer with the task it made
            existing = self.store.task_by_event(event_id)
            assert existing is not None, "a recorded event has its task"
            return existing
        self._pool.submit(self._dispatch_logged, task_id)
        return task

    def resume(self) -> int:
        """Queue again what was acked but not yet queued when this process last stopped."""
        pending = self.store.tasks_in(TaskStatus.SUBMITTED)
        for task in pending:
            self._pool.submit(self._dispatch_logged, task.id)
        return len(pending)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _dispatch_logged(self, task_id: str) -> None:
        try:
            self.dispatch(task_id)
        except Exception:
            log.exception("task %s: could not be dispatched", task_id)

    def dispatch(self, task_id: str) -> None:
        task = self.store.task(task_id)
        if task is None or task.status is not TaskStatus.SUBMITTED:
            return
        try:
            task = self._ensure_parent(task)
        except SlackError as exc:
            self._fail_at_intake(task, exc)
            return
        self._enqueue(task)

    def _ensure_parent(self, task: TaskView) -> TaskView:
        if task.thread_ts:
            return task
        text, blocks = parent_message(task)
        for attempt in range(SLACK_ATTEMPTS):
            try:
                ts = self.notifier.post(task.channel, text, blocks)
                break
            except SlackError as exc:
                if exc.code != "connection_error" or attempt == SLACK_ATTEMPTS - 1:
                    raise
                time.sleep(2**attempt)
        posted = self.store.append(task.id, events.POSTED, {"thread_ts": ts}, f"{task.id}:posted")
        return posted or self.store.task(task.id) or task  # None: another dispatch posted it

    def _enqueue(self, task: TaskView) -> None:
        body = TaskMessage(
            task.id, task.prompt, task.user, task.channel, task.thread_ts, task.created_at
        ).encode()
        waiting = False
        while True:
            confirmed = self.publisher.publish(self.queue, body, task.id)
            try:
                try:
                    confirmed.result(NOTICE_AFTER)
                except TimeoutError:
                    # The link holds the message and publishes it when the broker is back: wait
                    # for that confirm (publishing again would queue the task twice).
                    waiting = waiting or self._show_waiting(task)
                    confirmed.result()
                break
            except AicoError as exc:  # refused, or the connection dropped before the confirm
                log.warning("task %s: not queued yet (%s); trying again", task.id, exc)
                waiting = waiting or self._show_waiting(task)
            time.sleep(1.0)
        queued = self.store.append(task.id, events.QUEUED, {}, f"{task.id}:queued")
        if waiting:
            self._update_parent(queued or task)

    def _show_waiting(self, task: TaskView) -> bool:
        log.warning("task %s: the broker is unreachable; the task waits in the store", task.id)
        self._update_parent(task, WAITING)
        return True

    def _update_parent(self, task: TaskView, status: str | None = None) -> None:
        text, blocks = parent_message(task, status)
        try:
            self.notifier.update(task.channel, task.thread_ts, text, blocks)
        except SlackError as exc:
            log.warning("task %s: parent message not updated: %s", task.id, exc)

    def _fail_at_intake(self, task: TaskView, exc: SlackError) -> None:
        reason = _SLACK_REASONS.get(exc.code, f"Slack refused the message ({exc.code})")
        log.warning("task %s: parent message failed: %s", task.id, exc)
        self.store.append(task.id, events.FAILED, {"error": reason}, f"{task.id}:failed")
        if task.response_url:
            self.notifier.respond(task.response_url, f":x: Task `{task.id}` failed: {reason}")


_SLACK_REASONS = {
    "not_in_channel": "I am not in this channel. Invite me with `/invite @aico` and try again.",
    "channel_not_found": "I cannot see this channel. Invite me with `/invite @aico` and try again.",
    "is_archived": "this channel is archived.",
}
