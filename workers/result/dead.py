"""What the broker gave up on. A task whose delivery limit ran out (its workers died or gave it
back on every attempt) would otherwise stay "Working on it" for ever: it is failed, with the
reason, in its thread, and its thread's agent session leaves "processing" (a restarted result
worker may not know it was set). Messages that aico rejected itself were reported when they were
rejected.
"""

from __future__ import annotations

import json
import logging
import time

from core.domain import events
from core.domain.messages import DELIVERY_LIMIT, ResultMessage, salvage_route
from core.ports import Delivery, EventStore
from core.slack import blocks
from core.usecases.alerts import AlertDesk
from workers.result.handler import ResultHandler

log = logging.getLogger(__name__)

GAVE_UP = (
    f"it was tried {DELIVERY_LIMIT + 1} times and no attempt finished (the workers stopped or "
    "crashed each time). Nothing more will happen on its own: `/aico task` it again"
)


class DeadLetterHandler:
    def __init__(
        self, store: EventStore, results: ResultHandler, alerts: AlertDesk | None = None
    ) -> None:
        self.store = store
        self.results = results
        self.alerts = alerts  # one alert per dead-lettered task, with an admins' Retry

    def __call__(self, delivery: Delivery, _publish: object) -> None:
        kind, route = _peek(delivery.body)
        log.error(
            "dead-lettered %s message %s (%s)",
            kind or "unreadable",
            delivery.message_id or "?",
            delivery.death_reason or "no reason given",
        )
        if route is not None:
            self._alert(route[0], delivery)
        if delivery.death_reason != "delivery_limit" or route is None:
            return  # rejected on purpose: its owner was told then
        task = self.store.task(route[0])
        if task is None or task.status.final:
            return
        if kind == "task" and task.answered:  # answered, but never reported: report it now
            self.results.handle(_answer(route, self.store.events(task.id)))
        elif kind == "task":
            self.results.handle(_failure(route, GAVE_UP))
        else:  # its outcome could not be shown in Slack however often it was tried: record it
            error = "its result could not be shown in Slack"
            self.store.append(task.id, events.FAILED, {"error": error}, task.key("failed"))
        self.results.end_session(task)  # its thread's session leaves "processing" in any case

    def _alert(self, task_id: str, delivery: Delivery) -> None:
        task = self.store.task(task_id)
        if self.alerts is None or task is None:
            return
        reason = {"delivery_limit": "no attempt finished", "rejected": "it failed for good"}.get(
            delivery.death_reason, delivery.death_reason or "no reason given"
        )
        text, body = blocks.dead_letter_alert(task.id, reason, task.prompt)
        self.alerts.say(f"dead:{task.id}:{task.generation}", text, body)


def _peek(raw: bytes) -> tuple[str, tuple[str, str, str] | None]:
    try:
        kind = json.loads(raw).get("kind", "")
    except (ValueError, AttributeError):
        kind = ""
    return (kind if isinstance(kind, str) else ""), salvage_route(raw)


def _failure(route: tuple[str, str, str], error: str) -> ResultMessage:
    task_id, channel, thread_ts = route
    return ResultMessage(task_id, "failed", channel, thread_ts, at=time.time(), error=error)


def _answer(route: tuple[str, str, str], history: list[events.Event]) -> ResultMessage:
    task_id, channel, thread_ts = route
    answered = [e.data for e in history if e.type == events.ANSWERED][-1]
    return ResultMessage(task_id, "completed", channel, thread_ts, at=time.time(), **answered)
