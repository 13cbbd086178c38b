"""A project's live plan in its thread: Slack's plan block (a task card per step, with its state,
duration and cost), a line of progress (steps done, the critical path, the cost so far against
the estimate) and its buttons (Confirm when the estimate asks for it, Stop while it runs, Retry
once a step failed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.domain.pricing import usd
from core.domain.task import TaskStatus
from core.domain.text import escape, preview

if TYPE_CHECKING:
    from core.usecases.projects import ProjectState, StepState

STOP_ACTION = "aico_project_stop"
CONFIRM_ACTION = "aico_project_confirm"
RETRY_ACTION = "aico_project_retry"
PLAN_IT_ACTION = "aico_plan_it"  # under an answer: its request as a project


def plan_it_button(task_id: str) -> dict[str, Any]:
    return _button("Plan it", PLAN_IT_ACTION, task_id, "")


CARD_STATUS = {  # a step's state -> the task card's status (Block Kit: pending, in_progress, …)
    "waiting": "pending",
    "queued": "pending",
    "running": "in_progress",
    "done": "complete",
    "failed": "error",
    "cancelled": "error",
}
TITLE_LIMIT = 150


def plan_blocks(state: ProjectState, reason: str = "") -> tuple[str, list[dict[str, Any]]]:
    """The project's message: its plan, its progress and its buttons."""
    project = state.project
    title = state.plan.title if state.plan else "Planning…"
    fallback = f"Project {project.id}: {title}"
    if state.plan is None:
        line = f":brain: Planning project `{project.id}`…"
        return fallback, [_section(line)]
    cards = [_card(step) for step in state.steps]
    body: list[dict[str, Any]] = [
        {"type": "plan", "title": preview(title, TITLE_LIMIT), "tasks": cards},
        _section(_progress(state, reason)),
    ]
    if buttons := _buttons(state):
        body.append({"type": "actions", "elements": buttons})
    return fallback, body


def _card(step: StepState) -> dict[str, Any]:
    facts = []
    if step.needs:
        facts.append("after " + ", ".join(step.needs))
    if step.seconds:
        facts.append(f"{step.seconds:.1f} s")
    if step.task is not None and step.task.cost:
        facts.append(usd(step.task.cost))
    if step.task is not None and step.task.error:
        facts.append(step.task.error)
    card: dict[str, Any] = {
        "type": "task_card",
        "task_id": step.id,
        "title": preview(step.title, TITLE_LIMIT),
        "status": CARD_STATUS[step.state],
    }
    if facts:
        card["details"] = _rich(preview(" · ".join(facts), 500))
    return card


def _progress(state: ProjectState, reason: str) -> str:
    project, counts = state.project, state.counts()
    done, total = counts.get("done", 0), len(state.steps)
    on_path, path = state.critical()
    estimate = f" (estimate {usd(state.estimate)})" if state.estimate is not None else ""
    line = (
        f"*Project* `{project.id}` · {done} of {total} steps done · critical path "
        f"{on_path} of {path} · {usd(state.cost)} so far{estimate}"
    )
    if state.needs_confirm and not state.confirmed and not project.status.final:
        line += (
            "\n:raised_hand: The estimate is over the project threshold or your budget: "
            "press Confirm to start."
        )
    if project.status is TaskStatus.DONE:
        line += "\n:white_check_mark: Done: the answer is below."
    elif project.status is TaskStatus.CANCELLED:
        who = f" by <@{project.cancelled_by}>" if project.cancelled_by else ""
        line += f"\n:no_entry_sign: Stopped{who}; what had finished is kept."
    elif reason or project.status is TaskStatus.FAILED:
        line += f"\n:x: Failed: {escape(preview(reason or project.error, 1500))}"
    return line


def _buttons(state: ProjectState) -> list[dict[str, Any]]:
    project = state.project
    if project.status is TaskStatus.FAILED:
        return [_button("Retry failed steps", RETRY_ACTION, project.id, "primary")]
    if project.status.final:
        return []
    buttons = []
    if state.needs_confirm and not state.confirmed:
        buttons.append(_button("Confirm", CONFIRM_ACTION, project.id, "primary"))
    buttons.append(_button("Stop", STOP_ACTION, project.id, "danger"))
    return buttons


def _button(label: str, action_id: str, value: str, style: str) -> dict[str, Any]:
    button = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }
    return button | ({"style": style} if style else {})


def _section(text: str) -> dict[str, Any]:
    shown = text if len(text) <= 2900 else text[:2899] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": shown}}


def _rich(text: str) -> dict[str, Any]:
    return {
        "type": "rich_text",
        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
    }
