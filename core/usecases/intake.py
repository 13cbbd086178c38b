"""Intake: a task from Slack is validated, checked against the budgets and recorded before it is
acked; the outbox relay then posts and queues it."""

from __future__ import annotations

from dataclasses import dataclass

from core.domain import events
from core.domain.events import TaskView
from core.domain.task import clean_prompt, new_task_id
from core.ports import EventStore
from core.usecases.budgets import Budgets
from core.usecases.relay import OutboxRelay


@dataclass(frozen=True)
class TaskRequest:
    user: str
    channel: str
    text: str
    response_url: str = ""
    key: str = ""  # what makes a delivery unique (Slack's trigger_id): a replay is not a new task
    thread_ts: str = ""  # a reply in a task's thread: the thread it continues
    conversation: str = ""  # the task that started that thread


class Intake:
    """Records a task before it is acked, then hands it to the outbox relay."""

    def __init__(
        self,
        store: EventStore,
        relay: OutboxRelay,
        max_chars: int,
        budgets: Budgets | None = None,
    ) -> None:
        self.store = store
        self.relay = relay
        self.max_chars = max_chars
        self.budgets = budgets

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
        if request.conversation:
            data.update(thread_ts=request.thread_ts, conversation=request.conversation)
        event_id = f"intake:{request.key}" if request.key else f"{task_id}:submitted"
        if request.key and (existing := self.store.task_by_event(event_id)):
            return existing  # the same request again: answer with the task it made
        if self.budgets is not None:
            self.budgets.check(request.user, request.channel)
        task = self.store.append(task_id, events.SUBMITTED, data, event_id)
        if task is None:  # the same request again: answer with the task it made
            existing = self.store.task_by_event(event_id)
            assert existing is not None, "a recorded event has its task"
            return existing
        self.relay.dispatch_soon(task_id)
        return task
