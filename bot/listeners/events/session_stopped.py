"""Slack's stop button on a thread's agent session (`agent_session_stopped`): the thread's
latest unfinished task is cancelled exactly as `/aico cancel` and the Cancel button do it (its
requester or an admin; anyone else is told who may, only them, in the thread). Slack has stopped
aico's streams there already; the result worker then shows the task cancelled and moves the
session out of "processing". Bolt acks events itself."""

from __future__ import annotations

import logging
from typing import Any

from bot.usecases import UseCases
from core.domain.events import TaskView
from core.errors import InvalidInput
from core.slack import blocks

log = logging.getLogger(__name__)


def make_handler(services: UseCases):
    def on_stopped(event: dict[str, Any]) -> None:
        channel, thread_ts = str(event.get("channel") or ""), str(event.get("thread_ts") or "")
        user = str(event.get("user") or "")
        task = running_in(services, channel, thread_ts)
        if task is None:
            log.info(
                "stop pressed in %s/%s by %s: nothing is running there", channel, thread_ts, user
            )
            return
        try:
            services.control.cancel(task.id, user)
            log.info("task %s: stopped with the session's button by %s", task.id, user)
        except InvalidInput as exc:
            if services.tell is not None:
                services.tell(channel, user, blocks.refused(str(exc)), thread_ts)

    return on_stopped


def running_in(services: UseCases, channel: str, thread_ts: str) -> TaskView | None:
    """The thread's latest task that has not ended, if any."""
    if not channel or not thread_ts:
        return None
    unfinished = [t for t in services.tasks.thread(channel, thread_ts) if not t.status.final]
    return unfinished[-1] if unfinished else None


def register(app: Any, services: UseCases) -> None:
    app.event("agent_session_stopped")(make_handler(services))
