"""A task worker's logic: ask Claude, publish the outcome (and "working on it" if it takes long).

A task that can never succeed (a message that cannot be read, a request Claude refuses) is
reported in its thread and dead-lettered at once: retrying it would only burn attempts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from concurrent.futures import Future
from typing import Protocol

from core.adapters.rabbitmq import RESULTS, Delivery
from core.domain.messages import ResultMessage, TaskMessage, salvage_route
from core.errors import DecodeError, InvalidInput, ModelError
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
        task = _decode(delivery.body, publish)
        started_at = time.time()
        started = _report(publish, task, "started", delay=PROGRESS_AFTER)
        log.info("task %s: asking Claude (delivery %d)", task.task_id, delivery.delivery_count + 1)
        try:
            answer = model.complete(task.prompt)
        except ModelError as exc:
            log.warning("task %s: Claude failed: %s", task.task_id, exc)
            started.cancel()
            _report(publish, task, "failed", error=str(exc), started_at=started_at)
            if not exc.transient:
                raise InvalidInput(f"task {task.task_id}: {exc}") from exc
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


def _decode(raw: bytes, publish: Publish) -> TaskMessage:
    try:
        return TaskMessage.decode(raw)
    except DecodeError as exc:
        route = salvage_route(raw)
        if route:
            task_id, channel, thread_ts = route
            where = TaskMessage(task_id, "-", "-", channel, thread_ts, 0.0)
            _report(publish, where, "failed", error=f"the task could not be read: {exc}")
        raise


def _report(
    publish: Publish,
    task: TaskMessage,
    event: str,
    delay: float = 0.0,
    **fields: object,
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
