"""A task worker's part in projects (core/usecases/projects.py): planning a project, and giving a
step its whole prompt; after either, the conductor moves the project on at once (the result
worker and the pm's sweep do it too: the conductor is idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.domain.events import TaskView
from core.domain.plan import Cost, Plan, estimate
from core.usecases.planning import Planner
from core.usecases.projects import Projects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedAnswer:
    """The planner's work as an answer: the plan's title is its text."""

    text: str
    model: str
    usage: dict[str, Any]
    ms: float
    stop_reason: str
    plan: Plan


@dataclass
class ProjectWork:
    projects: Projects
    planner: Planner
    cost: Cost  # USD of a request's usage at the configured model's price
    max_tokens: int
    budget_left: Callable[[str, str], float | None]  # (user, channel) -> USD left today, or None
    context_tokens: int = 0

    def plan(self, goal: str, model: str) -> PlannedAnswer:
        """Claude's plan for `goal` (repaired once if invalid; PlanRejected if still invalid)."""
        plan, usage = self.planner.plan(goal)
        title = f"Plan: {plan.title} ({len(plan.steps)} steps)"
        return PlannedAnswer(title, model, usage, 0.0, "tool_use", plan)

    def planned(self, project: TaskView, plan: Plan, usage: dict[str, Any]) -> None:
        """The plan recorded with its estimate and what asking for it cost, then the first
        steps queued (unless the estimate waits for the requester's go-ahead)."""
        guess = estimate(
            plan, project.prompt, self.cost, self.max_tokens, None, self.context_tokens
        )
        left = self.budget_left(project.user, project.channel)
        self.projects.planned(project, plan, guess, left, self.cost(usage))
        self.projects.advance(project.id)

    def prompt_of(self, step: TaskView) -> str:
        return self.projects.prompt_of(step)

    def answered(self, step: TaskView) -> None:
        """A step was answered: what needed it may start now."""
        try:
            self.projects.advance(step.project)
        except Exception as exc:  # the result worker and the sweep move it on too
            log.warning("project %s: not moved on after %s: %s", step.project, step.id, exc)
