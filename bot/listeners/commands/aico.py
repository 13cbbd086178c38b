"""`/aico …`: ack first (with the answer), one service call, nothing slow before the ack."""

from __future__ import annotations

import logging
from typing import Any

from bot.parsing import (
    budget_change,
    config_request,
    history_query,
    parse,
    scale_request,
    task_options,
)
from bot.usecases import UseCases
from core.domain.stats import start_of_day
from core.errors import InvalidInput
from core.slack import blocks
from core.slack.plan import plan_blocks
from core.usecases.intake import TaskRequest, default_repo, set_default_repo
from core.usecases.projects import state_of

log = logging.getLogger(__name__)


def make_handler(services: UseCases):
    def handle_aico(ack: Any, command: dict[str, Any]) -> None:
        parsed = parse(command.get("text", ""))
        if parsed.verb == "task":
            ack(text=_submit(services, command, parsed.args), response_type="ephemeral")
        elif parsed.verb == "project":
            ack(
                text=_submit(services, command, parsed.args, project=True),
                response_type="ephemeral",
            )
        elif parsed.verb == "status":
            ack(**_status(services))
        elif parsed.verb == "history":
            ack(**_history(services, command, parsed.args))
        elif parsed.verb == "show":
            ack(**_show(services, parsed.args))
        elif parsed.verb == "budget":
            ack(text=_budget(services, command, parsed.args), response_type="ephemeral")
        elif parsed.verb == "recover":
            ack(text=_recover(services, command), response_type="ephemeral")
        elif parsed.verb == "scale":
            ack(text=_scale(services, command["user_id"], parsed.args), response_type="ephemeral")
        elif parsed.verb == "config":
            ack(text=_config(services, command, parsed.args), response_type="ephemeral")
        elif parsed.verb in ("cancel", "retry"):
            ack(text=control(services, parsed.verb, parsed.args, command["user_id"]))
        elif parsed.verb == "help":
            ack(**blocks.help_blocks(services.max_chars))
        else:
            ack(**blocks.help_blocks(services.max_chars, unknown=parsed.word))

    return handle_aico


def _submit(services: UseCases, command: dict[str, Any], text: str, project: bool = False) -> str:
    try:
        options = task_options(text)
        if project and options.code:
            raise ValueError("A project plans its own steps: leave out `--code`.")
        request = TaskRequest(
            user=command["user_id"],
            channel=command["channel_id"],
            text=options.text,
            response_url=command.get("response_url", ""),
            key=command.get("trigger_id", ""),
            repo=options.repo,
            code=options.code,
            project=project,
        )
        task = services.intake.submit(request)
    except (ValueError, InvalidInput) as exc:
        return blocks.refused(str(exc))
    log.info("task %s: submitted by %s in %s", task.id, request.user, request.channel)
    return blocks.accepted(task)


def _config(services: UseCases, command: dict[str, Any], args: str) -> str:
    user, channel = command["user_id"], command["channel_id"]
    repos = services.intake.repos
    try:
        change = config_request(args)
    except ValueError as exc:
        return blocks.refused(str(exc))
    if change is None:
        return blocks.channel_config(default_repo(services.tasks, channel, repos), repos)
    if user not in services.admins:
        return blocks.refused("Only admins (`AICO_ADMINS`) can change this channel's settings.")
    _, repo = change
    if repo and repo not in repos:
        known = ", ".join(f"`{name}`" for name in repos) or "none (AICO_REPOS is empty)"
        return blocks.refused(f"I don't know the repository `{repo[:40]}`. Known: {known}.")
    set_default_repo(services.tasks, channel, repo, user)
    log.info("channel %s: default repository %r set by %s", channel, repo, user)
    return blocks.channel_config(repo, repos)


def _status(services: UseCases) -> dict[str, Any]:
    text, body = blocks.status_blocks(services.status.report())
    return {"text": text, "blocks": body, "response_type": "ephemeral"}


def _history(services: UseCases, command: dict[str, Any], args: str) -> dict[str, Any]:
    try:
        query = history_query(args)
    except ValueError as exc:
        return {"text": blocks.refused(str(exc)), "response_type": "ephemeral"}
    who = {"channel": command["channel_id"]} if query.channel else {"user": command["user_id"]}
    whose = "this channel" if query.channel else "you"
    tasks = services.tasks.recent(query.limit, **who)
    today = services.tasks.summary(start_of_day(), **who)
    return blocks.history_blocks(tasks, whose, today)


def _show(services: UseCases, args: str) -> dict[str, Any]:
    task_id = args.strip().strip("`").lower()
    task = services.tasks.task(task_id) if task_id else None
    if task is None:
        return {"text": blocks.unknown_task(task_id or "?"), "response_type": "ephemeral"}
    shown = blocks.timeline_blocks(task, services.tasks.events(task_id))
    if task.mode == "project":  # its plan first: each step's state, the critical path, the cost
        _, plan = plan_blocks(state_of(services.tasks, task))
        shown["blocks"] = [b for b in plan if b.get("type") != "actions"] + shown["blocks"]
    return shown


def control(services: UseCases, verb: str, task_id: str, user: str) -> str:
    """Cancel or retry a task for `user`: what to tell them (an ephemeral line)."""
    try:
        if verb == "cancel":
            return blocks.cancelled(services.control.cancel(task_id, user))
        return blocks.retried(services.control.retry(task_id, user))
    except InvalidInput as exc:
        return blocks.refused(str(exc))


def _budget(services: UseCases, command: dict[str, Any], args: str) -> str:
    if services.budgets is None:
        return blocks.refused("Budgets are not kept here.")
    user, channel = command["user_id"], command["channel_id"]
    try:
        change = budget_change(args)
        if change is None:
            return blocks.budget_standing(services.budgets.limits(user, channel))
        if user not in services.admins:
            return blocks.refused("Only admins (`AICO_ADMINS`) can change budgets.")
        who = change.who or channel
        limit = services.budgets.raise_today(change.scope, who, change.usd, by=user)
    except (ValueError, InvalidInput) as exc:
        return blocks.refused(str(exc))
    log.info("budget of %s %s set to %.2f USD for today by %s", change.scope, who, change.usd, user)
    return blocks.budget_standing([limit])


def _recover(services: UseCases, command: dict[str, Any]) -> str:
    user = command["user_id"]
    if user not in services.admins:
        return blocks.refused("Only admins (`AICO_ADMINS`) can run the recovery.")
    if services.recover is None:
        return blocks.refused("Recovery is not run from here.")
    log.info("/aico recover by %s", user)
    return services.recover.ask(user, command.get("response_url", ""))


def _scale(services: UseCases, user: str, args: str) -> str:
    if user not in services.admins:
        return blocks.refused("Only admins (`AICO_ADMINS`) can scale the pool.")
    if services.pool is None:
        return blocks.refused("The pool is not run from here.")
    try:
        workers = scale_request(args)
        if workers is None:
            answer = services.pool.auto(by=user)
        else:
            answer = services.pool.pin(workers, by=user)
    except (ValueError, InvalidInput) as exc:
        return blocks.refused(str(exc))
    log.info("pool: /aico scale %s by %s", args.strip(), user)
    return answer


def register(app: Any, services: UseCases) -> None:
    app.command("/aico")(make_handler(services))
