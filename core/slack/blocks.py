"""Block Kit for everything aico shows in Slack: a task's parent message and its thread (the bot
and the result worker), the answers to `/aico …` (the bot) and `aico status`. Plain data, no
Slack client here."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from core.domain import pool
from core.domain.budget import Limit
from core.domain.events import Event, TaskView
from core.domain.pricing import usd
from core.domain.stats import Summary
from core.domain.task import TaskStatus
from core.domain.text import SECTION_LIMIT, escape, preview, split, to_mrkdwn

if TYPE_CHECKING:
    from core.usecases.status import StatusReport

Blocks = list[dict[str, Any]]

_BADGE = {
    TaskStatus.SUBMITTED: ":hourglass_flowing_sand: Queued",  # recorded: it will be queued
    TaskStatus.QUEUED: ":hourglass_flowing_sand: Queued",
    TaskStatus.RUNNING: ":gear: Working on it",
    TaskStatus.DONE: ":white_check_mark: Done",
    TaskStatus.FAILED: ":x: Failed",
    TaskStatus.CANCELLED: ":no_entry_sign: Cancelled",
}


# -- a task's messages: its parent message in the channel, its result message in the thread ------


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def parent_message(task: TaskView, status: str | None = None) -> tuple[str, Blocks]:
    """The task's message in the channel: id, who asked, what, and where it stands (`status`
    overrides the line derived from the task's state)."""
    status = status or status_line(task)
    fallback = f"Task {task.id} from <@{task.user}>: {status}"
    blocks = [
        section(f"*Task `{task.id}`* from <@{task.user}>\n>{escape(preview(task.prompt, 280))}"),
        context(f"{status} · answers come in this thread"),
    ]
    if buttons := _buttons(task):
        blocks.append({"type": "actions", "block_id": f"task:{task.id}", "elements": buttons})
    return fallback, blocks


CANCEL_ACTION = "aico_cancel"
RETRY_ACTION = "aico_retry"
ADMIN_RETRY_ACTION = "aico_admin_retry"  # on a dead letter's alert: admins only
APPROVE_ACTION = "aico_change_approve"  # on a code task's proposed change: push its branch
REJECT_ACTION = "aico_change_reject"  # … or drop it
MAKE_CHANGE_ACTION = "aico_make_change"  # on an answer drawn from a repository: as a code task
FEEDBACK_ACTION = "aico_feedback"  # Slack's feedback buttons under an answer: good or bad


def dead_letter_alert(task_id: str, reason: str, prompt: str) -> tuple[str, Blocks]:
    """The alert-channel message for a dead-lettered task, with an admins' Retry button."""
    text = (
        f":skull: Task `{task_id}` was dead-lettered ({escape(reason)}): "
        f"{escape(preview(prompt, 200))}"
    )
    actions = {
        "type": "actions",
        "elements": [_button("Retry", ADMIN_RETRY_ACTION, task_id, "primary")],
    }
    return text, [section(text), actions]


def _buttons(task: TaskView) -> list[dict[str, Any]]:
    """Cancel while it may still run; Retry once it failed or was cancelled."""
    if not task.status.final:
        return [_button("Cancel", CANCEL_ACTION, task.id, "danger")]
    if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        return [_button("Retry", RETRY_ACTION, task.id, "primary")]
    return []


def _button(label: str, action_id: str, task_id: str, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": task_id,
        "style": style,
    }


def status_line(task: TaskView) -> str:
    line = _BADGE[task.status]
    if task.status.final and task.finished_at:
        line += f" in {_seconds(task.finished_at - task.created_at)}"
    if task.status is TaskStatus.FAILED and task.error:
        line += f": {escape(preview(task.error, 150))}"
    if task.status is TaskStatus.CANCELLED and task.cancelled_by:
        line += f" by <@{task.cancelled_by}>"
    return line


DECLINED = ":no_entry: *Claude declined this task.*"
CUT = "_(cut off here: the answer reached its length limit, `AICO_MAX_TOKENS`)_"


def answer_text(answer: str, stop_reason: str = "") -> str:
    """The answer as the thread shows it: Claude declining says so first; a cut answer says so
    at its end."""
    if stop_reason == "refusal":
        return f"{DECLINED}\n{answer}" if answer.strip() else DECLINED
    if stop_reason == "max_tokens":
        return f"{answer}\n\n{CUT}"
    return answer


def answer_blocks(
    answer: str, receipt: str, buttons: list[dict[str, Any]] | None = None
) -> tuple[str, Blocks]:
    """An answer as sections of at most 3,000 characters, with a receipt underneath (and its
    buttons, if any)."""
    pieces = split(to_mrkdwn(answer)) or ["_(Claude returned an empty answer)_"]
    body = [section(p) for p in pieces] + [context(receipt)]
    if buttons:
        body.append({"type": "actions", "elements": buttons})
    return escape(preview(answer, 300)), body


def feedback_block(task_id: str) -> dict[str, Any]:
    """Slack's feedback buttons (a context_actions block), for under an answer."""
    return {
        "type": "context_actions",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": {
                    "text": {"type": "plain_text", "text": "Good answer"},
                    "value": f"good:{task_id}",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": "Bad answer"},
                    "value": f"bad:{task_id}",
                },
            }
        ],
    }


def change_buttons(task_id: str) -> list[dict[str, Any]]:
    """Approve / Reject, under a code task's proposed change."""
    return [
        _button("Approve", APPROVE_ACTION, task_id, "primary"),
        _button("Reject", REJECT_ACTION, task_id, "danger"),
    ]


def make_change_button(task_id: str) -> list[dict[str, Any]]:
    """ "Make the change", under an answer drawn from a repository."""
    return [_button("Make the change", MAKE_CHANGE_ACTION, task_id, "primary")]


def reviewed_blocks(message: dict[str, Any], verdict: str) -> tuple[str, Blocks]:
    """A proposed change's message once reviewed: its blocks without the buttons, and who
    decided what."""
    kept = [b for b in message.get("blocks", []) if b.get("type") != "actions"]
    return str(message.get("text", verdict)), [*kept, context(verdict)]


def working_blocks(task_id: str) -> tuple[str, Blocks]:
    """The result message while Claude works; the answer replaces it."""
    text = f":gear: Working on task `{task_id}`…"
    return text, [context(text)]


def retrying_blocks(task_id: str, reason: str) -> tuple[str, Blocks]:
    """The result message once an attempt failed and the task waits for the next one: what the
    failed attempt showed of its answer is taken back, so no half-answer stays in the thread."""
    text = (
        f":repeat: Claude failed while working on task `{task_id}` "
        f"({escape(preview(reason, 300))}); trying again…"
    )
    return text, [context(text)]


def progress_blocks(task_id: str, text: str) -> tuple[str, Blocks]:
    """The result message while Claude writes: the end of the answer so far."""
    so_far = to_mrkdwn(text)
    if len(so_far) > SECTION_LIMIT - 100:
        so_far = "…" + so_far[-(SECTION_LIMIT - 100) :]
    note = f":writing_hand: Claude is writing the answer to task `{task_id}`…"
    return note, [section(so_far or "…"), context(note)]


def attached_answer_blocks(
    answer: str, receipt: str, filename: str, buttons: list[dict[str, Any]] | None = None
) -> tuple[str, Blocks]:
    """The result message of an answer too long for a message: its start, and where the rest is."""
    head = split(to_mrkdwn(answer))[0]
    note = f"The whole answer ({len(answer):,} characters) is in `{filename}` below."
    body = [section(head), context(f"{note}\n{receipt}")]
    if buttons:
        body.append({"type": "actions", "elements": buttons})
    return escape(preview(answer, 300)), body


def cancelled_blocks(task: TaskView) -> tuple[str, Blocks]:
    who = f" by <@{task.cancelled_by}>" if task.cancelled_by else ""
    text = f":no_entry_sign: Task `{task.id}` was cancelled{who}."
    return text, [section(text)]


def failure_blocks(task_id: str, reason: str) -> tuple[str, Blocks]:
    text = f":x: Task `{task_id}` failed: {escape(preview(reason, 2500))}"
    return text, [section(text)]


_STOPS = {"max_tokens": " · cut at the length limit", "refusal": " · declined"}


def receipt(
    model: str, usage: dict[str, Any], claude_ms: float, cost: float | None, stop_reason: str = ""
) -> str:
    """The line under an answer: model · tokens · cost in USD · Claude's time (and how Claude
    stopped, when it did not simply finish)."""
    tokens = f"{usage.get('input_tokens', 0):,} in / {usage.get('output_tokens', 0):,} out tokens"
    stop = _STOPS.get(stop_reason, "")
    return f"{escape(model)} · {tokens} · {usd(cost)} · {_seconds(claude_ms / 1000)}{stop}"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else f"{int(value // 60)} min {int(value % 60)} s"


# -- answers to /aico … -----------------------------------------------------------------------


def help_text(max_chars: int) -> str:
    return (
        "*aico* hands tasks to Claude and answers in a thread.\n"
        "• `/aico task &lt;what to do&gt;`: queue a task (up to "
        f"{max_chars:,} characters). I post the task in this channel and answer in its thread, "
        "with context from the team's repositories. `--repo &lt;name&gt;` picks the "
        "repository; `--code` asks for a change, committed on a branch for you to approve.\n"
        "• `/aico config`: this channel's settings; admins: `/aico config repo &lt;name&gt;` "
        "sets its default repository.\n"
        "• `/aico status`: queues, workers and the pool's last decision, Claude's circuit "
        "breakers, success rate, durations and today's spend.\n"
        "• `/aico history [n]`: your latest tasks; `/aico history channel [n]`: this channel's.\n"
        "• `/aico show &lt;id&gt;`: a task's timeline.\n"
        "• `/aico cancel &lt;id&gt;`, `/aico retry &lt;id&gt;`: stop a task, or run a failed or "
        "cancelled one again (yours, or any if you are an admin). Its message has buttons too.\n"
        "• `/aico budget`: what you and this channel spent today, against the daily limits.\n"
        "• Admins: `/aico scale &lt;n&gt;` pins the pool of task workers, `/aico scale auto` "
        "hands it back to the scaling policy; `/aico recover` runs the health checks and the "
        "recovery now and reports.\n"
        "• `/aico help`: this message.\n"
        "Reply in a task's thread to go on with it: I answer with the whole conversation in mind."
    )


def help_blocks(max_chars: int, unknown: str = "") -> dict[str, Any]:
    text = help_text(max_chars)
    if unknown:
        text = f"I don't know `{escape(preview(unknown, 40))}`.\n\n" + text
    return {"text": text, "blocks": [section(text)], "response_type": "ephemeral"}


def accepted(task: TaskView) -> str:
    return (
        f":inbox_tray: Task `{task.id}` received. It is posted in this channel; "
        "progress and the answer will appear in that message's thread."
    )


def channel_config(repo: str, repos: tuple[str, ...]) -> str:
    known = ", ".join(f"`{name}`" for name in repos) or "none configured (AICO_REPOS)"
    default = f"`{repo}`" if repo else "none (tasks draw on every repository)"
    return f"*This channel's settings*\nDefault repository: {default}\nRepositories: {known}"


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
    body = [section(chunk) for chunk in _chunks([f"*Latest tasks for {whose}*", *lines])]
    body.append(context(totals))
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
    body = [section(chunk) for chunk in _chunks([head, *lines])]
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


# -- status -----------------------------------------------------------------------------------


def status_blocks(report: StatusReport) -> tuple[str, Blocks]:
    """`/aico status`: the broker, the workers, the last hour and day, and today's spend."""
    lines = [
        f"*Queues* {queues_line(report)}",
        f"*Workers* {workers_line(report)}",
        f"*Checks* {escape(checks_line(report))}",
        f"*Last hour* {_summary_line(report.hour)}",
        f"*Last 24 h* {_summary_line(report.day)}",
        f"*Today (UTC)* {_spend_line(report.today)}",
        f"*Top spenders today* {_spenders_line(report)}",
    ]
    if report.repos:
        lines.append(f"*Repositories* {escape(preview(repos_line(report), 1200))}")
    lines.append(f"*Feedback today* {feedback_line(report)}")
    if report.projects:
        lines.append(f"*Projects* {projects_line(report)}")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.at))
    fallback = "aico status: " + " · ".join(line.replace("*", "") for line in lines)
    pool_lines = pool.describe(report.pool, report.at, escape, lambda user: f"<@{user}>")
    return fallback, [
        section("*aico status*\n" + "\n".join(lines)),
        section(preview("*Pool*\n" + "\n".join(f"• {line}" for line in pool_lines), 2900)),
        context(when),
    ]


def repos_line(report: StatusReport) -> str:
    """Each repository: its revision and size where it is in sync, its error where it is not."""
    parts = []
    for name, states in report.repos:
        if not states:
            parts.append(f"{name}: not cloned yet")
            continue
        for state in states:
            where = f" on {state.host}" if len(states) > 1 else ""
            if state.ok:
                size = f"{state.files:,} files, {state.chunks:,} chunks"
                parts.append(f"{name}{where}: at {state.revision[:10]} ({size})")
            else:
                parts.append(f"{name}{where}: failing: {state.error}")
    return " · ".join(parts) or "none configured"


def projects_line(report: StatusReport) -> str:
    counts = dict(report.projects)
    running = counts.pop("projects", 0)
    steps = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"{running} running" + (f"; steps: {steps}" if steps else "")


def feedback_line(report: StatusReport) -> str:
    good, bad = report.feedback.get("good", 0), report.feedback.get("bad", 0)
    return f"{good} good, {bad} bad answer(s)" if good or bad else "none yet"


def checks_line(report: StatusReport) -> str:
    """The health checks that are not ok (the elected pm's, as last recorded)."""
    if not report.failing:
        return "all ok"
    return " · ".join(f"{name} {level}: {detail}" for name, level, detail in report.failing)


def queues_line(report: StatusReport) -> str:
    if report.broker_error:
        return f":warning: RabbitMQ cannot be read: {escape(preview(report.broker_error, 200))}"
    parts = []
    for q in report.queues:
        name = q.name.removeprefix("aico.")
        parts.append(f"{name}: {q.ready:,} waiting, {q.consumers} consumer(s)")
    return " · ".join(parts)


def workers_line(report: StatusReport) -> str:
    if not report.workers:
        return ":warning: no task worker has reported in the last 15 s"
    breakers = ", ".join(f"{n} {state}" for state, n in sorted(report.breakers().items()))
    alarm = ":rotating_light: " if "open" in report.breakers() else ""
    return (
        f"{len(report.workers)} live, {report.busy} of {report.capacity} slots busy"
        f" · {alarm}Claude breakers: {breakers}"
    )


def _summary_line(summary: Summary) -> str:
    if not summary.finished:
        return "no task finished"
    rate = summary.success_rate
    parts = [
        f"{summary.done:,} done, {summary.failed:,} failed, {summary.cancelled:,} cancelled",
        f"success {rate:.0%}" if rate is not None else "",
        _duration_part(summary),
    ]
    return " · ".join(p for p in parts if p)


def _duration_part(summary: Summary) -> str:
    p50, p95 = summary.percentile(0.5), summary.percentile(0.95)
    if p50 is None or p95 is None:
        return ""
    return f"p50 {_seconds(p50)}, p95 {_seconds(p95)}"


def _spenders_line(report: StatusReport) -> str:
    if not report.top_users:
        return "none yet"
    users = ", ".join(f"<@{s.who}> {usd(s.cost)} ({s.tasks})" for s in report.top_users)
    channels = ", ".join(f"<#{s.who}> {usd(s.cost)} ({s.tasks})" for s in report.top_channels)
    return f"users: {users} · channels: {channels}"


def _spend_line(summary: Summary) -> str:
    return (
        f"{summary.tokens_in:,} in / {summary.tokens_out:,} out tokens · {usd(summary.cost)}"
        f" · {summary.finished:,} task(s) finished"
    )


def streamed_answer_blocks(
    receipt: str,
    buttons: list[dict[str, Any]] | None = None,
    stop_reason: str = "",
    filename: str = "",
    length: int = 0,
) -> Blocks:
    """What `chat.stopStream` puts under a streamed answer (Slack renders a stream's blocks
    after its text, so the answer itself is not repeated): how it ended when Claude declined or
    was cut, where the whole answer is when it was too long to stream, the receipt, buttons."""
    notes = {"refusal": DECLINED, "max_tokens": CUT}.get(stop_reason, "")
    if filename:
        notes = f"{notes}\n" if notes else ""
        notes += f"The whole answer ({length:,} characters) is in `{filename}` below."
    body = ([context(notes)] if notes else []) + [context(receipt)]
    if buttons:
        body.append({"type": "actions", "elements": buttons})
    return body
