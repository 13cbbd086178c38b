"""The buttons of code write-back: Approve / Reject under a proposed change (the requester or an
admin), and "Make the change" under an answer that drew on a repository (a code task in the
same thread, with the answer as its history)."""

from __future__ import annotations

import logging
from typing import Any

from bot.usecases import UseCases
from core.errors import InvalidInput
from core.slack import blocks
from core.usecases.intake import TaskRequest

log = logging.getLogger(__name__)


def make_review_handler(services: UseCases, approve: bool):
    def handle_review(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any):
        ack()
        user, task_id = body["user"]["id"], str(action.get("value", ""))
        if services.changes is None:
            told = blocks.refused("Code changes are not reviewed here.")
        else:
            try:
                told = services.changes.decide(task_id, user, approve)
            except InvalidInput as exc:
                told = blocks.refused(str(exc))
            else:
                verdict = f"{'Approved' if approve else 'Rejected'} by <@{user}>."
                text, shown = blocks.reviewed_blocks(body.get("message") or {}, verdict)
                respond(text=text, blocks=shown, replace_original=True)
                log.info("task %s: change %s by %s", task_id, verdict.split()[0].lower(), user)
        respond(text=told, response_type="ephemeral", replace_original=False)

    return handle_review


def make_change_handler(services: UseCases):
    def handle_make_change(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any):
        ack()
        told = make_change(services, str(action.get("value", "")), body["user"]["id"], body)
        respond(text=told, response_type="ephemeral", replace_original=False)

    return handle_make_change


def make_change(services: UseCases, task_id: str, user: str, body: dict[str, Any]) -> str:
    """A code task continuing `task_id`'s thread: its request, made into a change."""
    answered = services.tasks.task(task_id)
    if answered is None or not answered.thread_ts:
        return blocks.unknown_task(task_id or "?")
    first = answered.conversation or answered.id
    request = TaskRequest(
        user=user,
        channel=answered.channel,
        text=f"Make the change described in this conversation. The request was: {answered.prompt}",
        key=f"make-change:{task_id}",  # one code task per answer, however often pressed
        thread_ts=answered.thread_ts,
        conversation=first,
        repo=answered.repo or _repo_of(services, task_id),
        code=True,
    )
    try:
        task = services.intake.submit(request)
    except InvalidInput as exc:
        return blocks.refused(str(exc))
    log.info("task %s: a code change of %s, asked by %s", task.id, task_id, user)
    return f":hammer_and_wrench: Task `{task.id}` will make the change; it answers in this thread."


def _repo_of(services: UseCases, task_id: str) -> str:
    """The repository an answer drew its context from (the one its sources name)."""
    for event in reversed(services.tasks.events(task_id)):
        if event.type == "answered":
            repos = {s.get("repo", "") for s in event.data.get("sources", [])}
            return repos.pop() if len(repos) == 1 else ""
    return ""


def register(app: Any, services: UseCases) -> None:
    app.action(blocks.APPROVE_ACTION)(make_review_handler(services, approve=True))
    app.action(blocks.REJECT_ACTION)(make_review_handler(services, approve=False))
    app.action(blocks.MAKE_CHANGE_ACTION)(make_change_handler(services))
