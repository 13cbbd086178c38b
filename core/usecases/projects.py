"""Projects: a goal the PM plans into steps, run in parallel on the pool, assembled into one answer.

A project is a task (mode "project") whose thread holds the live plan. Its task worker asks the
planner for the plan (core/usecases/planning.py) and records it (`project_planned`, with the
estimate and whether the requester must confirm it first). Each step is then a task of its own
(source "step", in the project's thread, with an id derived from the project's and the step's,
so recording it twice is recording it once): queued when its inputs are answered, done by a task
worker with all of a task's guarantees (claims, retries, dead-lettering, the breaker) and records
(tokens, cost). The last step ("final") assembles the answer from the others' and is the one
answer shown in the thread; the others only move the plan on.

`advance` is the conductor, and it holds no state: it reads the project's plan and its steps'
views and queues what is ready, so any process may run it any number of times and a process that
dies in the middle is replaced by the next call (a task worker calls it when a step is answered,
the result worker when one ends, the elected pm's sweep every few seconds). What it decides:

- a step whose needs are all answered is queued, at most `parallel` in flight;
- a step that failed or was cancelled fails the project with the reason (what finished is kept),
  and the steps not finished are cancelled;
- a project that reached its spend limit stops: its queued steps are cancelled and it says so;
- when "final" is done, the project is done, with the cost of all its steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from core.domain import events
from core.domain.events import TaskView
from core.domain.messages import RESULTS, TASKS, ResultMessage, TaskMessage
from core.domain.plan import FINAL, Limits, Plan, critical_path, final_prompt, ready, step_prompt
from core.domain.task import TaskStatus, derived_task_id
from core.errors import InvalidInput
from core.ports import EventStore

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, str], Future[None]]
PUBLISH_WAIT = 30.0


@dataclass(frozen=True)
class ProjectLimits:
    """Per project (AICO_PROJECT_*): steps, depth, steps in flight, spend, and the estimate above
    which the requester confirms before anything runs."""

    steps: int = 12
    depth: int = 4
    parallel: int = 8
    spend_usd: float = 5.0
    confirm_usd: float = 1.0

    @property
    def plan(self) -> Limits:
        return Limits(max_steps=self.steps, max_depth=self.depth)


def step_task_id(project_id: str, step_id: str) -> str:
    """The task id of a project's step: derived, so recording a step again is a no-op."""
    return derived_task_id(project_id, step_id)


@dataclass(frozen=True)
class StepState:
    id: str
    title: str
    needs: tuple[str, ...]
    task: TaskView | None  # None: not recorded yet

    @property
    def state(self) -> str:
        """waiting, queued, running, done, failed, cancelled."""
        if self.task is None:
            return "waiting"
        status = self.task.status
        if status is TaskStatus.DONE or (self.task.answered and not status.final):
            return "done"
        if status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            return status.value
        if status is TaskStatus.RUNNING:
            return "running"
        return "queued" if status is TaskStatus.QUEUED else "waiting"

    @property
    def seconds(self) -> float:
        t = self.task
        if t is None or not t.started_at:
            return 0.0
        return max(0.0, (t.finished_at or time.time()) - t.started_at)


@dataclass(frozen=True)
class ProjectState:
    """A project as its events and its steps' say: what `/aico show`, the live plan and the
    conductor read."""

    project: TaskView
    plan: Plan | None
    estimate: float | None
    needs_confirm: bool
    confirmed: bool
    steps: list[StepState] = field(default_factory=list)
    plan_cost: float = 0.0  # what asking for the plan cost

    @property
    def cost(self) -> float:
        """USD so far: the planning, and each step's (each step is a task of its own, counted
        once in the day's spend; the project's own record carries the planning only)."""
        return self.plan_cost + sum(s.task.cost for s in self.steps if s.task is not None)

    def counts(self) -> dict[str, int]:
        tally: dict[str, int] = {}
        for step in self.steps:
            tally[step.state] = tally.get(step.state, 0) + 1
        return tally

    def critical(self) -> tuple[int, int]:
        """(steps done, steps) on the critical path (by the steps' durations so far)."""
        if self.plan is None:
            return 0, 0
        durations = {s.id: s.seconds or 1.0 for s in self.steps}
        _, path = critical_path(self.plan, durations)
        done = {s.id for s in self.steps if s.state == "done"}
        return sum(1 for sid in path if sid in done), len(path)

    def step(self, step_id: str) -> StepState | None:
        return next((s for s in self.steps if s.id == step_id), None)


def state_of(store: EventStore, project: TaskView) -> ProjectState:
    planned = _latest(store, project.id, events.PROJECT_PLANNED)
    if planned is None:
        return ProjectState(project, None, None, False, False)
    plan = Plan.of(planned["plan"])
    confirmed = _latest(store, project.id, events.PROJECT_CONFIRMED) is not None
    ids = [*plan.ids, FINAL]
    titles = {s.id: s.title for s in plan.steps} | {FINAL: "Assemble the answer"}
    needs = {s.id: s.needs for s in plan.steps} | {FINAL: tuple(plan.ids)}
    views = {v.step: v for v in store.thread(project.channel, project.thread_ts) if v.project}
    steps = [StepState(sid, titles[sid], needs[sid], views.get(sid)) for sid in ids]
    estimate = planned.get("estimate")
    confirm = bool(planned.get("needs_confirm"))
    plan_cost = float(planned.get("plan_cost") or 0.0)
    return ProjectState(project, plan, estimate, confirm, confirmed, steps, plan_cost)


@dataclass
class Projects:
    store: EventStore
    publish: Publish
    limits: ProjectLimits = field(default_factory=ProjectLimits)
    clock: Callable[[], float] = time.time

    # -- the plan ------------------------------------------------------------------------------

    def planned(
        self,
        project: TaskView,
        plan: Plan,
        estimate: float | None,
        budget_left: float | None,
        plan_cost: float | None = None,
    ) -> ProjectState:
        """Record the plan; ask the requester to confirm it when its estimate is over the
        project threshold or over what their budget has left (or cannot be priced)."""
        over = estimate is None or estimate > self.limits.confirm_usd
        over = over or (budget_left is not None and (estimate or 0.0) > budget_left)
        data = {
            "plan": plan.record(),
            "estimate": estimate,
            "needs_confirm": over,
            "plan_cost": plan_cost or 0.0,
        }
        self.store.append(project.id, events.PROJECT_PLANNED, data, project.key("planned"))
        return state_of(self.store, self.store.task(project.id) or project)

    def confirm(self, project_id: str, user: str, admins: frozenset[str]) -> str:
        project = self._project(project_id)
        if user != project.user and user not in admins:
            raise InvalidInput(
                f"Only <@{project.user}>, who asked for it, or an admin can start it."
            )
        state = state_of(self.store, project)
        if project.status.final:
            raise InvalidInput(f"Project `{project.id}` is already {project.status.value}.")
        if not state.needs_confirm or state.confirmed:
            raise InvalidInput(f"Project `{project.id}` is already running.")
        self.store.append(
            project.id, events.PROJECT_CONFIRMED, {"by": user}, project.key("confirmed")
        )
        self.advance(project.id)
        return f"Project `{project.id}` confirmed: its steps start now."

    # -- the conductor -------------------------------------------------------------------------

    def advance(self, project_id: str) -> list[str]:
        """Queue what is ready, fail or stop what must be, finish what is done; the step ids
        queued. Safe to call from any process, any number of times."""
        project = self.store.task(project_id)
        if project is None or project.mode != "project" or project.status.final:
            return []
        state = state_of(self.store, project)
        if state.plan is None or (state.needs_confirm and not state.confirmed):
            return []
        if failed := [s for s in state.steps if s.state in ("failed", "cancelled")]:
            self._fail(state, failed[0])
            return []
        final = state.step(FINAL)
        if final is not None and final.task is not None and final.task.status is TaskStatus.DONE:
            self._done(state)
            return []
        if state.cost >= self.limits.spend_usd:
            self._over_budget(state)
            return []
        return self._queue_ready(state)

    def _queue_ready(self, state: ProjectState) -> list[str]:
        assert state.plan is not None
        done = {s.id for s in state.steps if s.state == "done"}
        started = {  # queued or further; a step recorded but not queued (a crash) is queued again
            s.id for s in state.steps if s.task and s.task.status is not TaskStatus.SUBMITTED
        }
        in_flight = len(started - done)
        room = max(0, self.limits.parallel - in_flight)
        queued = []
        for step_id in ready(state.plan, done, started)[:room]:
            self._queue(state, step_id)
            queued.append(step_id)
        return queued

    def _queue(self, state: ProjectState, step_id: str) -> None:
        project, plan = state.project, state.plan
        assert plan is not None
        task_id = step_task_id(project.id, step_id)
        step = None if step_id == FINAL else plan.step(step_id)
        data = {
            "user": project.user,
            "channel": project.channel,
            "prompt": plan.final if step is None else step.prompt,
            "thread_ts": project.thread_ts,
            "source": "step",
            "project": project.id,
            "step": step_id,
        }
        if step is not None and step.repo:
            data["repo"] = step.repo
        view = self.store.append(task_id, events.SUBMITTED, data, f"{task_id}:submitted")
        view = view or self.store.task(task_id)
        assert view is not None
        if view.status is not TaskStatus.SUBMITTED:
            return  # queued already (this call raced another)
        message = TaskMessage.of(view)
        self.publish(TASKS, message.encode(), view.id).result(PUBLISH_WAIT)
        self.store.append(view.id, events.QUEUED, {}, view.key("queued"))
        log.info("project %s: step %s queued as task %s", project.id, step_id, view.id)

    def _fail(self, state: ProjectState, step: StepState) -> None:
        project = state.project
        error = step.task.error if step.task is not None else ""
        reason = f"step “{step.title}” {step.state}" + (f": {error}" if error else "")
        self._cancel_unfinished(state, by="", running=False)  # what runs may finish, and is kept
        self._report(project, "failed", error=reason)
        log.warning("project %s: %s", project.id, reason)

    def _over_budget(self, state: ProjectState) -> None:
        project = state.project
        self._cancel_unfinished(state, by="")
        reason = (
            f"it reached its spend limit (${self.limits.spend_usd:.2f}, AICO_PROJECT_MAX_USD) "
            f"after ${state.cost:.2f}; the steps not started were stopped"
        )
        self._report(project, "failed", error=reason)

    def _done(self, state: ProjectState) -> None:
        project = state.project
        data = {
            "cost_usd": state.plan_cost,  # the steps' costs are their own tasks'
            "steps_cost_usd": state.cost - state.plan_cost,
            "started_at": project.started_at,
            "steps": len(state.steps),
        }
        self.store.append(project.id, events.COMPLETED, data, project.key("completed"))
        log.info("project %s: done, %d steps, $%.4f", project.id, len(state.steps), state.cost)

    def stop(self, project_id: str, user: str, admins: frozenset[str]) -> TaskView:
        """Stop a project: every step that has not finished is cancelled, and the project."""
        project = self._project(project_id)
        if user != project.user and user not in admins:
            raise InvalidInput(
                f"Only <@{project.user}>, who asked for it, or an admin can stop it."
            )
        if project.status.final:
            raise InvalidInput(f"Project `{project.id}` is already {project.status.value}.")
        self._cancel_unfinished(state_of(self.store, project), by=user)
        key = project.key("cancelled")
        view = self.store.append(project.id, events.CANCELLED, {"by": user}, key)
        self._report(project, "cancelled")  # the thread shows it
        log.info("project %s: stopped by %s", project.id, user)
        return view or self.store.task(project.id) or project

    def retry(self, project_id: str, user: str, admins: frozenset[str]) -> str:
        """Run a failed project's failed and cancelled steps again (what they need is kept, so
        with them what depends on them); its plan and its finished steps stay."""
        project = self._project(project_id)
        if user != project.user and user not in admins:
            raise InvalidInput(
                f"Only <@{project.user}>, who asked for it, or an admin can retry it."
            )
        if project.status is not TaskStatus.FAILED:
            raise InvalidInput(
                f"Project `{project.id}` is {project.status.value}: "
                "only a failed one can be retried."
            )
        state = state_of(self.store, project)
        again = [s for s in state.steps if s.task and s.state in ("failed", "cancelled")]
        for step in again:
            assert step.task is not None
            key = f"{step.task.id}:retried:{step.task.generation + 1}"
            self.store.append(step.task.id, events.RETRIED, {"by": user}, key)
        generation = project.generation + 1
        self.store.append(
            project.id, events.RETRIED, {"by": user}, f"{project.id}:retried:{generation}"
        )
        data = {"worker": "conductor", "generation": generation}
        self.store.append(project.id, events.STARTED, data, f"{project.id}:start:{generation}:0")
        self.advance(project.id)
        names = ", ".join(s.title for s in again) or "nothing"
        return f"Project `{project.id}`: running again {names}."

    def _cancel_unfinished(self, state: ProjectState, by: str, running: bool = True) -> None:
        """Cancel the steps that have not finished (those not started only, unless `running`)."""
        for step in state.steps:
            task = step.task
            if task is None or task.status.final or task.answered:
                continue
            if running or task.status is not TaskStatus.RUNNING:
                self.store.append(task.id, events.CANCELLED, {"by": by}, task.key("cancelled"))
                if step.id == FINAL:  # its answer may be streaming: the thread stops it
                    self._report(task, "cancelled")

    def _report(self, project: TaskView, event: str, **fields: Any) -> None:
        message = ResultMessage(
            project.id, event, project.channel, project.thread_ts, at=self.clock(), **fields
        )
        self.publish(RESULTS, message.encode(), f"{project.id}:{event}").result(PUBLISH_WAIT)

    def _project(self, project_id: str) -> TaskView:
        project = self.store.task(project_id.strip().strip("`").lower())
        if project is None or project.mode != "project":
            raise InvalidInput(f"There is no project `{project_id[:20]}`.")
        return project

    # -- what a step's worker asks -------------------------------------------------------------

    def prompt_of(self, step_task: TaskView) -> str:
        """A step's whole prompt: its own, with the results of the steps it needs quoted; for
        "final", the goal and every step's result."""
        project = self.store.task(step_task.project)
        if project is None:
            raise InvalidInput(f"step {step_task.id}: its project {step_task.project} is gone")
        state = state_of(self.store, project)
        assert state.plan is not None, "a step is recorded after its plan"
        results = {s.id: self._answer(s.task) for s in state.steps if s.state == "done" and s.task}
        if step_task.step == FINAL:
            return final_prompt(state.plan, project.prompt, results)
        return step_prompt(state.plan, state.plan.step(step_task.step), results)

    def _answer(self, task: TaskView) -> str:
        answered = _latest(self.store, task.id, events.ANSWERED)
        return str(answered.get("text", "")) if answered else ""


def _latest(store: EventStore, task_id: str, type_: str) -> dict[str, Any] | None:
    for event in reversed(store.events(task_id)):
        if event.type == type_:
            return dict(event.data)
    return None


def sweep(projects: Projects) -> int:
    """Move every unfinished project on; how many steps were queued."""
    queued = 0
    for project in running_projects(projects.store):
        try:
            queued += len(projects.advance(project.id))
        except Exception as exc:  # one project must not hold up the others
            log.warning("project %s: not moved on: %s", project.id, exc)
    return queued


def running_projects(store: EventStore) -> Sequence[TaskView]:
    """Projects not finished: what the pm's sweep moves on."""
    return [
        t
        for status in (TaskStatus.RUNNING, TaskStatus.QUEUED)
        for t in store.tasks_in(status, mode="project")
    ]
