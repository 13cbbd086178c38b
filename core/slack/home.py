"""Block Kit for aico's App Home tab (`views.publish`): the ops console an admin sees (queues,
workers and their hosts, breakers, failing checks, recent failures and dead letters, today's
cost, and the admin buttons), and what anyone else sees (their own latest tasks and spend).
Plain data in, a `home` view out, within Slack's limits: 100 blocks a view, 3,000 characters a
section. No Slack client here."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.domain import pool
from core.domain.budget import Limit
from core.domain.events import TaskView
from core.domain.pool import Record
from core.domain.pricing import usd
from core.domain.stats import Summary
from core.domain.task import TaskStatus
from core.domain.text import SECTION_LIMIT, escape, preview, split
from core.slack.blocks import Blocks, context, queues_line, section, status_line, workers_line

if TYPE_CHECKING:
    from core.usecases.status import StatusReport

MAX_BLOCKS = 100  # a view's blocks (docs.slack.dev, Home tab views)
DEAD_PREFIX = "dead:"  # the key of a dead letter's alert: dead:<task>:<generation>
ALERT_RAISED = "alert_raised"  # core.usecases.alerts.RAISED

# The Home's buttons. Retry has an action of its own: the alert channel's Retry
# (ADMIN_RETRY_ACTION) answers through a response_url, which Slack gives no Home click.
SCALE_UP_ACTION = "aico_home_scale_up"
SCALE_DOWN_ACTION = "aico_home_scale_down"
SCALE_AUTO_ACTION = "aico_home_scale_auto"
RECOVER_ACTION = "aico_home_recover"
RETRY_ACTION = "aico_home_retry"
REFRESH_ACTION = "aico_home_refresh"
ADMIN_ACTIONS = (SCALE_UP_ACTION, SCALE_DOWN_ACTION, SCALE_AUTO_ACTION, RECOVER_ACTION)

SHOWN_FAILURES, SHOWN_DEAD, SHOWN_TASKS = 5, 10, 15


@dataclass(frozen=True)
class DeadLetter:
    task_id: str
    text: str  # the alert's own text (already escaped when it was raised)
    at: float
    task: TaskView | None = None  # where it stands now


def dead_letters(records: Sequence[Record]) -> list[DeadLetter]:
    """The dead letters among the alert outbox's records, newest first, one per task."""
    found: dict[str, DeadLetter] = {}
    for record in sorted(records, key=lambda r: r.version, reverse=True):
        key = str(record.data.get("key", ""))
        if record.type != ALERT_RAISED or not key.startswith(DEAD_PREFIX):
            continue
        task_id = key.removeprefix(DEAD_PREFIX).rpartition(":")[0] or key[len(DEAD_PREFIX) :]
        if task_id not in found:
            found[task_id] = DeadLetter(task_id, str(record.data.get("text", "")), record.at)
    return list(found.values())


@dataclass(frozen=True)
class AdminPicture:
    report: StatusReport
    failures: list[TaskView] = field(default_factory=list)  # the latest failed tasks
    dead: list[DeadLetter] = field(default_factory=list)
    last_recovery: Record | None = None


def admin_home(picture: AdminPicture, notice: str = "") -> dict[str, Any]:
    """The ops console: the live picture and the admin buttons."""
    report = picture.report
    body: Blocks = [_header("aico · ops console")]
    body += _notice(notice)
    body.append(section(_fit(f"*Queues* {queues_line(report)}\n*Workers* {workers_line(report)}")))
    pool_lines = pool.describe(report.pool, report.at, escape, lambda user: f"<@{user}>")
    body.append(section(_fit("*Pool*\n" + "\n".join(f"• {line}" for line in pool_lines))))
    body.append(section(_fit(f"*Checks* {_checks(report)}\n*Today (UTC)* {_today(report)}")))
    body.append(_admin_buttons())
    body += _failures(picture.failures)
    body += _dead(picture.dead)
    if picture.last_recovery is not None:
        body.append(context(_fit(_recovery_line(picture.last_recovery, report.at))))
    return _view(body, report.at)


def user_home(
    tasks: list[TaskView], today: Summary, limit: Limit | None, at: float, notice: str = ""
) -> dict[str, Any]:
    """Anyone's Home: their own latest tasks, what they spent today and their budget."""
    body: Blocks = [_header("aico · your tasks")]
    body += _notice(notice)
    spend = (
        f"*Today (UTC)* {today.finished:,} task(s) finished · {today.tokens_in:,} in / "
        f"{today.tokens_out:,} out tokens · {usd(today.cost)}\n{_budget(limit)}"
    )
    body.append(section(_fit(spend)))
    if tasks:
        lines = [_task_line(task) for task in tasks[:SHOWN_TASKS]]
        body += [section(chunk) for chunk in _chunks(["*Your latest tasks*", *lines])]
    else:
        body.append(section("*Your latest tasks*\nNone yet: `/aico task <what to do>` starts one."))
    body.append(_actions("home:refresh", [_button("Refresh", REFRESH_ACTION, "refresh")]))
    return _view(body, at)


def notice_at(text: str, at: float) -> str:
    """A line on top of the Home saying what was just done (there is no ephemeral on a Home)."""
    return f"{text} _({time.strftime('%H:%M:%S UTC', time.gmtime(at))})_"


# -- the admin's parts -------------------------------------------------------------------------


def _checks(report: StatusReport) -> str:
    if not report.failing:
        return "all ok"
    return " · ".join(
        f":warning: {escape(name)} {escape(level)}: {escape(preview(detail, 200))}"
        for name, level, detail in report.failing
    )


def _today(report: StatusReport) -> str:
    today = report.today
    return (
        f"{usd(today.cost)} · {today.tokens_in:,} in / {today.tokens_out:,} out tokens · "
        f"{today.done:,} done, {today.failed:,} failed, {today.cancelled:,} cancelled"
    )


def _admin_buttons() -> dict[str, Any]:
    return _actions(
        "home:admin",
        [
            _button("Scale +1", SCALE_UP_ACTION, "+1"),
            _button("Scale -1", SCALE_DOWN_ACTION, "-1"),
            _button("Scale auto", SCALE_AUTO_ACTION, "auto"),
            _button("Run recovery", RECOVER_ACTION, "recover", "danger"),
            _button("Refresh", REFRESH_ACTION, "refresh"),
        ],
    )


def _failures(tasks: list[TaskView]) -> Blocks:
    if not tasks:
        return [section("*Recent failures* none")]
    lines = ["*Recent failures*"]
    for task in tasks[:SHOWN_FAILURES]:
        error = escape(preview(task.error or "no reason recorded", 200))
        lines.append(f"`{task.id}` {_when(task.updated_at)} <@{task.user}>: {error}")
    return [section(chunk) for chunk in _chunks(lines)]


def _dead(dead: list[DeadLetter]) -> Blocks:
    if not dead:
        return [section("*Dead letters* none")]
    body: Blocks = [section("*Dead letters* (the latest, newest first)")]
    for letter in dead[:SHOWN_DEAD]:
        task = letter.task
        now = f"\n_now: {status_line(task)}_" if task is not None else ""
        block = section(_fit(f"{_when(letter.at)} {letter.text}{now}"))
        if task is None or task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            block["accessory"] = _button("Retry", RETRY_ACTION, letter.task_id, "primary")
        body.append(block)
    return body


def _recovery_line(record: Record, now: float) -> str:
    data = record.data
    requeued = data.get("requeued") or []
    by = data.get("by", "schedule")
    who = "on schedule" if by == "schedule" else f"asked by <@{escape(str(by))}>"
    ago = max(0.0, now - record.at)
    return f"Last recovery run {ago:.0f} s ago, {who}: {len(requeued)} task(s) queued again"


# -- a user's parts ----------------------------------------------------------------------------


def _task_line(task: TaskView) -> str:
    cost = f" · {usd(task.cost)}" if task.cost else ""
    prompt = escape(preview(task.prompt, 80))
    return f"`{task.id}` {_when(task.created_at)} {status_line(task)}{cost}\n      {prompt}"


def _budget(limit: Limit | None) -> str:
    if limit is None:
        return "No daily budget is kept here."
    if not limit.usd:
        return f"No daily limit on you: {usd(limit.spent)} spent today."
    warn = ":no_entry: " if limit.reached else ""
    return f"{warn}Your daily budget: {usd(limit.spent)} of {usd(limit.usd)} spent today."


# -- Block Kit within Slack's limits -----------------------------------------------------------


def _view(body: Blocks, at: float) -> dict[str, Any]:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
    footer = context(
        f"As of {when} · refreshed when you open this tab, press a button,"
        " or (for admins) it changes"
    )
    if len(body) >= MAX_BLOCKS:
        body = [*body[: MAX_BLOCKS - 2], context("_(more than fits on this page left out)_")]
    return {"type": "home", "callback_id": "aico_home", "blocks": [*body, footer]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def _notice(text: str) -> Blocks:
    return [section(_fit(text)), {"type": "divider"}] if text else []


def _actions(block_id: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "actions", "block_id": block_id, "elements": elements}


def _button(label: str, action_id: str, value: str, style: str = "") -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def _fit(text: str, limit: int = SECTION_LIMIT) -> str:
    """`text` cut to one section (at a line or word, never inside an entity)."""
    return text if len(text) <= limit else split(text, limit - 2)[0] + "\n…"


def _chunks(lines: list[str], limit: int = SECTION_LIMIT - 100) -> list[str]:
    chunks, current = [], ""
    for line in lines:
        line = _fit(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            chunks.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    return [*chunks, current] if current else chunks


def _when(at: float) -> str:
    return time.strftime("%m-%d %H:%M", time.gmtime(at))
