"""A task worker's logic: ask Claude, publish the outcome (and "working on it" if it takes long)."""

from __future__ import annotations

import logging
import os
import socket
import time
from concurrent.futures import Future
from typing import Protocol

from core.adapters.rabbitmq import RESULTS, Delivery
from core.domain.messages import ResultMessage, TaskMessage
from core.errors import ModelError
from workers.runtime import Publish

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"

# "Working on it" is shown only for tasks that take longer than this: a task answered sooner goes
# from Queued to Done without a status flip nobody could read.
PROGRESS_AFTER = 0.5


class Model(Protocol):
    def complete(self, prompt: str): ...  # -> Completion


def make_handler(model: Model):
    def handle(delivery: Delivery, publish: Publish) -> None:
        task = TaskMessage.decode(delivery.body)
        started_at = time.time()
        started = _report(publish, task, "started", delay=PROGRESS_AFTER)
        log.info("task %s: asking Claude (delivery %d)", task.task_id, delivery.delivery_count + 1)
        try:
            answer = model.complete(task.prompt)
        except ModelError as exc:
            log.warning("task %s: Claude failed: %s", task.task_id, exc)
            started.cancel()
            _report(publish, task, "failed", error=str(exc), started_at=started_at)
            return
        started.cancel()
        _report(
            publish,
            task,
            "completed",
            text=answer.text,
            model=answer.model,
            usage=answer.usage,
            claude_ms=answer.ms,
            started_at=started_at,
        )

    return handle


def _report(
    publish: Publish, task: TaskMessage, event: str, delay: float = 0.0, **fields: object
) -> Future[None]:
    message = ResultMessage(
        task_id=task.task_id,
        event=event,
        channel=task.channel,
        thread_ts=task.thread_ts,
        at=time.time(),
        worker=WORKER,
        **fields,  # type: ignore[arg-type]
    )
    return publish(RESULTS, message, f"{task.task_id}:{event}", delay=delay)
