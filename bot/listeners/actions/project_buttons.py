"""A project's buttons: Confirm (an estimate over the threshold waits for it), Stop, Retry failed
steps, on its live plan; and "Plan it" under an answer: the same request as a project, planned
into steps in the same thread."""

from __future__ import annotations

import logging
from typing import Any

from bot.usecases import UseCases
from core.errors import InvalidInput
from core.slack import blocks
from core.slack.plan import CONFIRM_ACTION, PLAN_IT_ACTION, RETRY_ACTION, STOP_ACTION
from core.usecases.intake import TaskRequest

log = logging.getLogger(__name__)


def make_handler(services: UseCases, verb: str):
    def handle_project(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any):
        ack()
        user, value = body["user"]["id"], str(action.get("value", ""))
        try:
            told = _do(services, verb, value, user)
        except InvalidInput as exc:
            told = blocks.refused(str(exc))
        respond(text=told, response_type="ephemeral", replace_original=False)

    return handle_project


def _do(services: UseCases, verb: str, value: str, user: str) -> str:
    if verb == "plan":
        return plan_it(services, value, user)
    if services.projects is None:
        return blocks.refused("Projects are not run here.")
    if verb == "confirm":
        return services.projects.confirm(value, user, services.admins)
    if verb == "retry":
        return services.projects.retry(value, user, services.admins)
    services.projects.stop(value, user, services.admins)
    log.info("project %s: stopped by %s", value, user)
    return f":no_entry_sign: Project `{value}` stopped: what had not finished is cancelled."


def plan_it(services: UseCases, task_id: str, user: str) -> str:
    """The request of `task_id`'s answer as a project, in the same thread (once per answer)."""
    answered = services.tasks.task(task_id)
    if answered is None or not answered.thread_ts:
        return blocks.unknown_task(task_id or "?")
    request = TaskRequest(
        user=user,
        channel=answered.channel,
        text=answered.prompt,
        key=f"plan-it:{task_id}",  # however often it is pressed
        thread_ts=answered.thread_ts,
        repo=answered.repo,
        project=True,
        source="button",
    )
    project = services.intake.submit(request)
    return f":brain: Project `{project.id}` is being planned; its plan comes in this thread."


def register(app: Any, services: UseCases) -> None:
    app.action(CONFIRM_ACTION)(make_handler(services, "confirm"))
    app.action(STOP_ACTION)(make_handler(services, "stop"))
    app.action(RETRY_ACTION)(make_handler(services, "retry"))
    app.action(PLAN_IT_ACTION)(make_handler(services, "plan"))
