"""A task worker's logic: say it started, ask Claude, publish the outcome."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Protocol

from core.adapters.rabbitmq import RESULTS, Delivery
from core.domain.messages import ResultMessage, TaskMessage
from core.errors import ModelError

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"


class Model(Protocol):
    def complete(self, prompt: str): ...  # -> Completion


def make_handler(model: Model):
    def handle(delivery: Delivery, publish) -> None:
        task = TaskMessage.decode(delivery.body)
        _report(publish, task, "started")
        log.info("task %s: asking Claude (delivery %d)", task.task_id, delivery.delivery_count + 1)
        try:
            answer = model.complete(task.prompt)
        except ModelError as exc:
            log.warning("task %s: Claude failed: %s", task.task_id, exc)
            _report(publish, task, "failed", error=str(exc))
            return
        _report(
            publish,
            task,
            "completed",
            text=answer.text,
            model=answer.model,
            usage=answer.usage,
            claude_ms=answer.ms,
        )

    return handle


def _report(publish, task: TaskMessage, event: str, **fields) -> None:
    message = ResultMessage(
        task_id=task.task_id,
        event=event,
        channel=task.channel,
        thread_ts=task.thread_ts,
        at=time.time(),
        worker=WORKER,
        **fields,
    )
    publish(RESULTS, message, f"{task.task_id}:{event}")
