"""Cancel and retry: what a task's requester (or an admin) may do to it after it was submitted.

A cancelled task never runs if it has not started; if it has, the worker drops Claude's answer
and the task ends "cancelled". A retry reopens a failed or cancelled task as a new generation:
it is queued again and answered in a new result message in the same thread.
"""

from __future__ import annotations

import logging
import time

from core.domain import events
from core.domain.events import TaskView
from core.domain.messages import ResultMessage
from core.domain.text import escape, preview
from core.errors import Conflict, InvalidInput
from core.ports import Broker, EventStore
from core.usecases.intake import Intake
from core.usecases.projects import Projects

log = logging.getLogger(__name__)


class TaskControl:
    def __init__(
        self,
        store: EventStore,
        intake: Intake,
        publisher: Broker,
        results_queue: str,
        admins: frozenset[str],
        projects: Projects | None = None,
    ) -> None:
        self.store = store
        self.intake = intake
        self.publisher = publisher
        self.results_queue = results_queue
        self.admins = admins
        self.projects = projects  # a project, or a step of one, is stopped as a whole

    def cancel(self, task_id: str, user: str) -> TaskView:
        task = self._allowed(task_id, user, "cancel")
        if self.projects is not None and (task.mode == "project" or task.project):
            return self.projects.stop(task.project or task.id, user, self.admins)
        if task.status.final:
            raise InvalidInput(f"Task `{task.id}` is already {task.status.value}.")
        view = self.store.append(task.id, events.CANCELLED, {"by": user}, task.key("cancelled"))
        view = view or self.store.task(task.id) or task
        if view.thread_ts:  # the result worker shows it in the thread and on the parent
            report = ResultMessage(
                view.id, "cancelled", view.channel, view.thread_ts, at=time.time()
            )
            self.publisher.publish(self.results_queue, report.encode(), f"{view.id}:cancelled")
        log.info("task %s: cancelled by %s", task.id, user)
        return view

    def retry(self, task_id: str, user: str) -> TaskView:
        task = self._allowed(task_id, user, "retry")
        if self.projects is not None and task.mode == "project" and task.answered:
            self.projects.retry(task.id, user, self.admins)  # its plan stays: failed steps rerun
            return self.store.task(task.id) or task
        key = f"{task.id}:retried:{task.generation + 1}"
        try:
            view = self.store.append(task.id, events.RETRIED, {"by": user}, key)
        except Conflict as exc:
            raise InvalidInput(
                f"Task `{task.id}` is {task.status.value}: only a failed or "
                "cancelled task can be retried."
            ) from exc
        view = view or self.store.task(task.id) or task
        self.intake.relay.dispatch_soon(view.id)
        log.info("task %s: retried by %s (generation %d)", task.id, user, view.generation)
        return view

    def _allowed(self, task_id: str, user: str, verb: str) -> TaskView:
        wanted = task_id.strip().strip("`").strip()
        task = self.store.task(wanted.lower()) if wanted else None
        if task is None:
            shown = escape(preview(wanted or "?", 20))
            raise InvalidInput(f"There is no task `{shown}`. `/aico history` lists yours.")
        if user != task.user and user not in self.admins:
            raise InvalidInput(
                f"Only <@{task.user}>, who asked for task `{task.id}`, or an admin can {verb} it."
            )
        return task
