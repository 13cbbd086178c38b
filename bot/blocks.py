"""What the bot answers in Block Kit. Pure."""

from __future__ import annotations

import time
from typing import Any

from core.blocks import status_line
from core.domain.budget import Limit
from core.domain.events import Event, TaskView
from core.domain.pricing import usd
from core.domain.stats import Summary
from core.domain.task import TaskStatus
from core.domain.text import escape, preview


def help_text(max_chars: int) -> str:
    return (
        "*aico* hands tasks to Claude and answers in a thread.\n"
        "• `/aico task &lt;what to do&gt;`: queue a task (up to "
        f"{max_chars:,} characters). I post the task in this channel and answer in its thread.\n"
        "• `/aico status`: queues, workers, Claude's circuit breakers, success rate, durations "
        "and today's spend.\n"
        "• `/aico history [n]`: your latest tasks; `/aico history channel [n]`: this channel's.\n"
        "• `/aico show &lt;id&gt;`: a task's timeline.\n"
        "• `/aico cancel &lt;id&gt;`, `/aico retry &lt;id&gt;`: stop a task, or run a failed or "
        "cancelled one again (yours, or any if you are an admin). Its message has buttons too.\n"
        "• `/aico budget`: what you and this channel spent today, against the daily limits.\n"
        "• `/aico help`: this message.\n"
        "Reply in a task's thread to go on with it: I answer with the whole conversation in mind."
    )


def help_blocks(max_chars: int, unknown: str = "") -> dict[str, Any]:
    text = help_text(max_chars)
    if unknown:
        text = f"I don't know `{escape(preview(unknown, 40))}`.\n\n" + text
    section = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    return {"text": text, "blocks": [section], "response_type": "ephemeral"}


def accepted(task: TaskView) -> str:
    return (
        f":inbox_tray: Task `{task.id}` received. It is posted in this channel; "
        "progress and the answer will appear in that message's thread."
    )


def refused(reason: str) -> str:
    return f":warning: {reason}"


def history_blocks(tasks: list[TaskView], whose: str, today: Summary) -> dict[str, Any]:
    """`/aico history`: the latest tasks, one line each, and today's totals."""
    if not tasks:
        text = f"No tasks yet for {whose}."
        return {"text": text, "response_type": "ephemeral"}
    lines = [_history_line(task) for task in tasks]
    totals = (
        f"Today (UTC), {whose}: {today.finished:,} finished · {today.tokens_in:,} in / "
        f"{today.tokens_out:,} out tokens · {usd(today.cost)}"
    )
    body = [_section(chunk) for chunk in _chunks([f"*Latest tasks for {whose}*", *lines])]
    body.append({"type": "context", "elements": [{"type": "mrkdwn", "text": totals}]})
    return {"text": f"Latest tasks for {whose}", "blocks": body, "response_type": "ephemeral"}


def _history_line(task: TaskView) -> str:
    when = time.strftime("%m-%d %H:%M", time.gmtime(task.created_at))
    cost = f" · {usd(task.cost)}" if task.cost else ""
    return f"`{task.id}` {when} {status_line(task)}{cost}\n      {escape(preview(task.prompt, 80))}"


def timeline_blocks(task: TaskView, history: list[Event]) -> dict[str, Any]:
    """`/aico show <id>`: the task's events, oldest first."""
    start = history[0].at if history else task.created_at
    lines = [f"`+{e.at - start:7.2f} s` {_event_line(e)}" for e in history]
    head = (
        f"*Task `{task.id}`* from <@{task.user}> in <#{task.channel}>: {status_line(task)}\n"
        f">{escape(preview(task.prompt, 280))}"
    )
    body = [_section(chunk) for chunk in _chunks([head, *lines])]
    return {"text": f"Task {task.id}: {task.status}", "blocks": body, "response_type": "ephemeral"}


_EVENT_LINES = {
    "submitted": "submitted",
    "posted": "parent message posted",
    "queued": "queued",
    "requeued": "queued again by the recovery sweep (generation {generation})",
    "started": "attempt started (delivery {delivery}) on {worker}",
    "answered": "Claude answered",
    "reply_pending": "result message being posted",
    "replied": "result message posted",
    "completed": "done",
    "failed": "failed: {error}",
}


def _event_line(event: Event) -> str:
    template = _EVENT_LINES.get(event.type, event.type)
    try:
        line = template.format(**{k: v for k, v in event.data.items() if isinstance(v, str | int)})
    except (KeyError, IndexError):
        line = event.type
    return escape(preview(line, 300))


def unknown_task(task_id: str) -> str:
    return (
        f":warning: There is no task `{escape(preview(task_id, 20))}`. `/aico history` lists yours."
    )


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _chunks(lines: list[str], limit: int = 2900) -> list[str]:
    """Lines joined into pieces that each fit a section (3,000 characters)."""
    chunks, current = [], ""
    for line in lines:
        if current and len(current) + len(line) + 1 > limit:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    return [*chunks, current] if current else chunks


def cancelled(task: TaskView) -> str:
    if task.status is TaskStatus.CANCELLED and task.cancelled_by:
        return f":no_entry_sign: Task `{task.id}` is cancelled. Its thread says so too."
    return f":no_entry_sign: Task `{task.id}` is {task.status.value}."


def retried(task: TaskView) -> str:
    return (
        f":repeat: Task `{task.id}` is queued again (retry {task.generation}). The new answer "
        "comes in its thread."
    )


def budget_standing(limits: list[Limit]) -> str:
    lines = []
    for limit in limits:
        whose = f"<@{limit.who}>" if limit.scope == "user" else f"<#{limit.who}>"
        cap = f"of {usd(limit.usd)}" if limit.usd > 0 else "(no limit)"
        flag = " :no_entry: spent" if limit.reached else ""
        lines.append(f"• {whose}: {usd(limit.spent)} {cap} today (UTC){flag}")
    return "*Budgets*\n" + "\n".join(lines)
