"""The recovery sweep: find tasks whose queue message is gone, and queue them again.

The broker gives a dead worker's deliveries back on its own, and the result worker fails what
the broker dead-letters; so a task can only be stranded if its message vanished (a queue
purged or deleted, a broker that lost its data). Such a task stays queued or running in the store
with nothing left to move it. The sweep looks for tasks that have not moved for `stale_after`
seconds — far longer than a delivery can stay unacked (RabbitMQ's consumer_timeout, 30 min) —
while no task message is waiting in the queue, so the task's message cannot still be in there.
Each is queued again with a higher generation, recorded first, so that any older copy that might
yet turn up can no longer start; a task stranded too often is failed with the reason. (If the
publish fails after the record, the task is found again one `stale_after` later.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future

from core.domain import events
from core.domain.events import TaskView
from core.domain.messages import ResultMessage, TaskMessage
from core.domain.task import TaskStatus
from core.errors import Conflict
from core.ports import EventStore

log = logging.getLogger(__name__)

STALE_AFTER = 45 * 60.0
MAX_RECOVERIES = 2
GAVE_UP = "its queue message was lost {n} times (the broker lost it); `/aico task` it again"

Publish = Callable[[str, bytes, str], Future[None]]  # (queue, body, message_id)
Depth = Callable[[str], tuple[int, int]]  # queue -> (messages ready, consumers)


class Recovery:
    def __init__(
        self,
        store: EventStore,
        publish: Publish,
        depth: Depth,
        tasks_queue: str,
        results_queue: str,
        stale_after: float = STALE_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.publish = publish
        self.depth = depth
        self.tasks_queue = tasks_queue
        self.results_queue = results_queue
        self.stale_after = stale_after
        self.clock = clock

    def sweep(self) -> list[str]:
        """Queue again (or fail) every stranded task; returns their ids."""
        ready, _consumers = self.depth(self.tasks_queue)
        if ready:
            log.info("recovery sweep: %d task message(s) still queued; nothing is stranded", ready)
            return []
        recovered = [task.id for task in self.stranded() if self._recovered(task)]
        log.info("recovery sweep: %d stranded task(s) recovered", len(recovered))
        return recovered

    def stranded(self) -> list[TaskView]:
        cutoff = self.clock() - self.stale_after
        waiting = self.store.tasks_in(TaskStatus.QUEUED) + self.store.tasks_in(TaskStatus.RUNNING)
        return [task for task in waiting if task.updated_at < cutoff]

    def _recovered(self, task: TaskView) -> bool:
        try:
            self._recover(task)
        except Conflict:
            log.info("task %s: moved while the sweep looked at it; left alone", task.id)
            return False
        return True

    def _recover(self, task: TaskView) -> None:
        if task.generation >= MAX_RECOVERIES:
            log.error("task %s: stranded again; failing it", task.id)
            error = GAVE_UP.format(n=task.generation + 1)
            failed = ResultMessage(
                task.id, "failed", task.channel, task.thread_ts, at=self.clock(), error=error
            )
            self.publish(self.results_queue, failed.encode(), f"{task.id}:failed").result(30)
            return
        generation = task.generation + 1
        message = TaskMessage.of(task, generation)
        # Recorded first, and only if the task has not moved since it was read (or it is not
        # stranded after all): from then on, an older copy of its message can no longer start.
        data = {"generation": generation, "was": task.status.value}
        key = f"{task.id}:requeued:{generation}"
        self.store.append(task.id, events.REQUEUED, data, key, expected_version=task.version)
        self.publish(self.tasks_queue, message.encode(), task.id).result(30)
        log.warning(
            "task %s: its message was lost; queued again (generation %d)", task.id, generation
        )
