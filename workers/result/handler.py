"""The result worker's logic: record what task workers report and show it in the task's thread."""

from __future__ import annotations

import logging

from core import blocks
from core.adapters.rabbitmq import Delivery
from core.domain import events
from core.domain.events import TaskView
from core.domain.messages import ResultMessage
from core.domain.text import INLINE_LIMIT, to_mrkdwn
from core.errors import InvalidInput, SlackError
from core.services import EventStore, Notifier

log = logging.getLogger(__name__)


class ResultHandler:
    def __init__(self, store: EventStore, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier

    def __call__(self, delivery: Delivery, _publish: object) -> None:
        result = ResultMessage.decode(delivery.body)
        task = self.store.task(result.task_id)
        if task is None:
            raise InvalidInput(f"result for unknown task {result.task_id}")
        if task.status.final:
            log.info("task %s: already %s; ignoring %s", task.id, task.status, result.event)
            return
        getattr(self, f"_on_{result.event}")(task, result)

    def _on_started(self, task: TaskView, result: ResultMessage) -> None:
        view = self.store.append(
            task.id, events.STARTED, {"worker": result.worker}, f"{task.id}:started"
        )
        if view:
            self._show_status(view)

    def _on_completed(self, task: TaskView, result: ResultMessage) -> None:
        receipt = blocks.receipt(result.model, result.usage, result.claude_ms)
        self._post_answer(task, result.text, receipt)
        data = {
            "model": result.model,
            "usage": result.usage,
            "claude_ms": result.claude_ms,
            "chars": len(result.text),
            "started_at": result.started_at,
        }
        view = self.store.append(task.id, events.COMPLETED, data, f"{task.id}:completed")
        log.info("task %s: done", task.id)
        self._show_status(view or task)

    def _on_failed(self, task: TaskView, result: ResultMessage) -> None:
        text, body = blocks.failure_blocks(task.id, result.error)
        self.notifier.post(task.channel, text, body, thread_ts=task.thread_ts)
        data = {"error": result.error, "started_at": result.started_at}
        view = self.store.append(task.id, events.FAILED, data, f"{task.id}:failed")
        log.info("task %s: failed: %s", task.id, result.error)
        self._show_status(view or task)

    def _post_answer(self, task: TaskView, answer: str, receipt: str) -> None:
        if len(to_mrkdwn(answer)) <= INLINE_LIMIT:
            text, body = blocks.answer_blocks(answer, receipt)
            self.notifier.post(task.channel, text, body, thread_ts=task.thread_ts)
            return
        comment = (
            f"The answer to task `{task.id}` is {len(answer):,} characters, "
            f"so it is attached as a file.\n{receipt}"
        )
        self.notifier.upload(task.channel, task.thread_ts, answer, f"aico-{task.id}.md", comment)

    def _show_status(self, task: TaskView) -> None:
        text, body = blocks.parent_message(task)
        try:
            self.notifier.update(task.channel, task.thread_ts, text, body)
        except SlackError as exc:
            log.warning("task %s: parent message not updated: %s", task.id, exc)
