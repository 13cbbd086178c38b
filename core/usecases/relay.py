"""The outbox relay: a task recorded at intake (the outbox is the event store) gets its parent
message in the channel and is queued, off the ack's path; what was recorded but not yet queued
when the bot stopped is queued when it starts again."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from core.domain import events
from core.domain.events import TaskView
from core.domain.messages import TASKS, TaskMessage
from core.domain.task import TaskStatus
from core.errors import AicoError, SlackError
from core.ports import Broker, EventStore, Notifier
from core.slack.blocks import parent_message
from core.slack.errors import refusal_reason
from core.slack.patience import SLACK_PATIENCE, with_patience

log = logging.getLogger(__name__)

NOTICE_AFTER = 3.0  # seconds without the broker's confirm before the task's owner is told
RECORD_THREAD_AFTER = 0.5  # seconds without it before the parent's ts is recorded on its own
WAITING = (
    ":warning: Waiting for the queue: RabbitMQ cannot be reached. Your task is saved and will be "
    "queued as soon as it is back"
)
PARENT_EVENT = "aico_task"  # the metadata event type of a task's parent message


class OutboxRelay:
    """Posts a recorded task's parent message once, then queues the task once."""

    def __init__(
        self,
        store: EventStore,
        notifier: Notifier,
        publisher: Broker,
        queue: str = TASKS,
        threads: int = 8,
        slack_patience: float = SLACK_PATIENCE,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.publisher = publisher
        self.queue = queue
        self.slack_patience = slack_patience
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="relay")
        self._closing = threading.Event()
        self._guard = threading.Lock()
        self._running: dict[str, tuple[threading.Lock, int]] = {}  # task -> (its lock, users)

    def resume(self) -> int:
        """Queue again what was acked but not yet queued when this process last stopped. (Its
        parent message may have been posted just before: it is looked for first.)"""
        pending = self.store.tasks_in(TaskStatus.SUBMITTED)
        for task in pending:
            self._pool.submit(self._dispatch_logged, task.id, True)
        return len(pending)

    def dispatch_soon(self, task_id: str, recorded: TaskView | None = None) -> None:
        """Post (if need be) and queue a recorded task, off the caller's thread (`recorded`:
        the task as its record left it, so that it is not read again)."""
        self._pool.submit(self._dispatch_logged, task_id, False, recorded)

    def close(self) -> None:
        """Stop: what is not queued yet stays in the store and is queued at the next start."""
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _dispatch_logged(
        self, task_id: str, look_first: bool = False, recorded: TaskView | None = None
    ) -> None:
        """One dispatch of a task at a time (resume() may meet the intake's own dispatch of it):
        the second waits, then finds the task queued and does nothing."""
        with self._guard:
            lock, users = self._running.get(task_id, (threading.Lock(), 0))
            self._running[task_id] = (lock, users + 1)
        try:
            with lock:
                self.dispatch(task_id, look_first, recorded)
        except Exception:
            log.exception("task %s: could not be dispatched", task_id)
        finally:
            with self._guard:
                lock, users = self._running[task_id]
                if users == 1:
                    del self._running[task_id]
                else:
                    self._running[task_id] = (lock, users - 1)

    def dispatch(
        self, task_id: str, look_first: bool = False, recorded: TaskView | None = None
    ) -> None:
        task = recorded or self.store.task(task_id)  # the intake's: its own record, just made
        if task is None or task.status is not TaskStatus.SUBMITTED:
            return
        if task.thread_ts:  # its parent was posted before (or it is a turn of a thread)
            self._enqueue(task)
            return
        try:
            ts = self._post_parent(task, look_first)
        except SlackError as exc:
            if self._closing.is_set():
                log.info(
                    "task %s: not posted before the stop; it will be at the next start", task_id
                )
                return
            self._fail_at_intake(task, exc)
            return
        # Published at once: the message carries the thread. Confirmed soon (as it is while the
        # broker is up), one append records both the thread and the queueing; else the thread is
        # recorded while the relay waits. A stop before the record leaves the task submitted: it
        # is published again at the next start, and that copy finds the first one's claim, or
        # its task ended.
        posting = replace(task, thread_ts=ts)
        published = self.publisher.publish(self.queue, TaskMessage.of(posting).encode(), task.id)
        confirmed: Future[None] | None = published
        try:
            published.result(timeout=RECORD_THREAD_AFTER)
        except TimeoutError:
            pass
        except AicoError as exc:  # refused, or the connection dropped before the confirm
            log.warning("task %s: not queued yet (%s); trying again", task.id, exc)
            confirmed = None
        else:
            self._queued(posting, {"thread_ts": ts})
            return
        posted = self.store.append(task.id, events.POSTED, {"thread_ts": ts}, f"{task.id}:posted")
        task = posted or self.store.task(task.id) or posting  # None: another dispatch posted it
        if task.status.final:  # cancelled while its message was being posted: the copy in the
            self._update_parent(task)  # queue finds it ended and is dropped
            return
        self._enqueue(task, confirmed)

    def _post_parent(self, task: TaskView, look_first: bool) -> str:
        """Post the task's parent message once; its ts. After a post whose outcome is unknown
        (the connection dropped, or this process stopped), look for it before posting again."""
        text, blocks = parent_message(task)
        metadata = {"event_type": PARENT_EVENT, "event_payload": {"task_id": task.id}}
        uncertain = look_first

        def find_or_post() -> str:
            nonlocal uncertain
            found = uncertain and self.notifier.find_message(task.channel, PARENT_EVENT, task.id)
            uncertain = True
            return found or self.notifier.post(task.channel, text, blocks, metadata=metadata)

        return with_patience(find_or_post, f"task {task.id}", self.slack_patience, self._closing)

    def _enqueue(self, task: TaskView, confirmed: Future[None] | None = None) -> None:
        """Queue the task (`confirmed`: its message is published already), waiting for the
        broker's confirm; then record it queued."""
        body = TaskMessage.of(task).encode()
        waiting = False
        while not self._closing.is_set():
            if confirmed is None:
                confirmed = self.publisher.publish(self.queue, body, task.id)
            try:
                waiting = self._await_confirm(confirmed, task, waiting)
                break
            except AicoError as exc:  # refused, or the connection dropped before the confirm
                log.warning("task %s: not queued yet (%s); trying again", task.id, exc)
                waiting = waiting or self._show_waiting(task)
            confirmed = None
            self._closing.wait(1.0)
        if self._closing.is_set():
            log.info("task %s: not queued before the stop; it will be at the next start", task.id)
            return
        self._queued(task, {}, shown=waiting or task.generation > 0)

    def _queued(self, task: TaskView, data: dict, shown: bool = False) -> None:
        """Record the task queued; the parent says where it stands when `shown` (told it waits,
        or queued again), or when it was cancelled before its thread was recorded (the cancel
        could not show it then)."""
        queued = self.store.append(task.id, events.QUEUED, data, task.key("queued"))
        view = queued or self.store.task(task.id) or task
        if shown or (data and view.status is TaskStatus.CANCELLED):
            self._update_parent(replace(view, thread_ts=view.thread_ts or task.thread_ts))

    def _await_confirm(self, confirmed: Future[None], task: TaskView, waiting: bool) -> bool:
        """Wait for the broker's confirm, telling the owner if it takes long; returns whether
        they were told. While the broker is away the link holds the message and publishes it
        when it is back: this waits for that same message (publishing again would queue the task
        twice). Returns early, unconfirmed, when the intake is closing."""
        notice_at = time.monotonic() + NOTICE_AFTER
        while not self._closing.is_set():
            try:
                confirmed.result(timeout=0.25)
                return waiting
            except TimeoutError:
                if not waiting and time.monotonic() > notice_at:
                    waiting = self._show_waiting(task)
        return waiting

    def _show_waiting(self, task: TaskView) -> bool:
        log.warning("task %s: the broker is unreachable; the task waits in the store", task.id)
        self._update_parent(task, WAITING)
        return True

    def _update_parent(self, task: TaskView, status: str | None = None) -> None:
        if not task.has_parent:
            return  # a conversation's turn, a mention, a DM: the parent is not this task's
        text, blocks = parent_message(task, status)
        try:
            self.notifier.update(task.channel, task.thread_ts, text, blocks)
        except SlackError as exc:
            log.warning("task %s: parent message not updated: %s", task.id, exc)

    def _fail_at_intake(self, task: TaskView, exc: SlackError) -> None:
        reason = refusal_reason(exc)
        log.warning("task %s: parent message failed: %s", task.id, exc)
        self.store.append(task.id, events.FAILED, {"error": reason}, task.key("failed"))
        if task.response_url:
            self.notifier.respond(task.response_url, f":x: Task `{task.id}` failed: {reason}")
