"""Where the system stands: the data behind `/aico status` and `aico status`, from the broker (queue
depth and consumers), the workers' heartbeats (live, busy, circuit breakers) and the event store
(tasks done and failed, success rate, durations, tokens and cost). Rendering is elsewhere."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.domain import pool
from core.domain.health import AGGREGATE as CHECK_AGGREGATE
from core.domain.health import CHECKS
from core.domain.pool import Host, PoolState
from core.domain.stats import Spender, Summary, day_of, start_of_day
from core.errors import AicoError
from core.ports import EventStore
from core.usecases.feedback import Feedback
from core.usecases.projects import running_projects, state_of
from core.usecases.repos import RepoState
from core.usecases.repos import states as repo_states

log = logging.getLogger(__name__)

LIVE_WITHIN = 15.0  # seconds: a worker heard from more recently than this is live
HEARTBEAT_EVERY = 5.0
PM, BOT = "pm", "bot"  # the kinds of heartbeat besides a task worker's (which has none)


def is_pm(beat: dict[str, Any]) -> bool:
    return beat.get("kind") == PM


def is_task_worker(beat: dict[str, Any]) -> bool:
    return "kind" not in beat


def check_levels(store: EventStore, names: Sequence[str] = CHECKS) -> dict[str, tuple[str, str]]:
    """Each health check's level and detail as its last change recorded them ("ok" before
    any): what /aico status, the Home and /metrics show."""
    levels = {}
    for name in names:
        last = store.latest(CHECK_AGGREGATE + name)
        data = last.data if last is not None else {}
        levels[name] = (str(data.get("level", "ok")), str(data.get("detail", "")))
    return levels


def failing_checks(store: EventStore) -> list[tuple[str, str, str]]:
    """The health checks not ok, as last recorded: (check, level, detail)."""
    return [(n, lv, d) for n, (lv, d) in check_levels(store).items() if lv != "ok"]


def pool_state(
    store: EventStore, now: float, beats: list[dict[str, Any]] | None = None
) -> PoolState:
    """The pool as the store has it: leader, decision, pin, forecast, and the live pm (from
    `beats`, the live heartbeats, when the caller has read them already)."""
    if beats is None:
        beats = store.workers(seen_since=now - LIVE_WITHIN)
    return PoolState(
        leader=store.latest(pool.LEADER),
        decision=store.latest(pool.DECISION),
        pin=pool.pin_of(store.latest(pool.PIN)),
        forecast=store.latest(pool.FORECAST),
        hosts=[Host.from_heartbeat(b) for b in beats if is_pm(b)],
    )


@dataclass(frozen=True)
class QueueState:
    name: str
    ready: int
    consumers: int


@dataclass(frozen=True)
class StatusReport:
    at: float
    queues: list[QueueState]
    broker_error: str  # why the queues could not be read, or ""
    workers: list[dict[str, Any]]
    hour: Summary
    day: Summary
    today: Summary = field(default_factory=Summary)
    top_users: list[Spender] = field(default_factory=list)  # today's, most spent first
    top_channels: list[Spender] = field(default_factory=list)
    pool: PoolState = field(default_factory=PoolState)
    failing: list[tuple[str, str, str]] = field(default_factory=list)  # (check, level, detail)
    repos: list[tuple[str, list[RepoState]]] = field(default_factory=list)  # each host's state
    feedback: dict[str, int] = field(default_factory=dict)  # today's clicks: good, bad
    projects: dict[str, int] = field(default_factory=dict)  # running ones, and their steps by state

    @property
    def busy(self) -> int:
        return sum(int(w.get("busy", 0)) for w in self.workers)

    @property
    def capacity(self) -> int:
        return sum(int(w.get("capacity", 0)) for w in self.workers)

    def breakers(self) -> dict[str, int]:
        """How many workers' Claude breaker is in each state."""
        states: dict[str, int] = {}
        for worker in self.workers:
            state = str(worker.get("breaker", {}).get("state", "unknown"))
            states[state] = states.get(state, 0) + 1
        return states


class Status:
    def __init__(
        self,
        store: EventStore,
        depth: Callable[[str], tuple[int, int]],
        queues: Sequence[str],
        clock: Callable[[], float] = time.time,
        repos: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.depth = depth
        self.queues = queues
        self.clock = clock
        self.repos = repos  # the names of AICO_REPOS

    def report(self) -> StatusReport:
        now = self.clock()
        queues, error = self._queues()
        beats = self.store.workers(seen_since=now - LIVE_WITHIN)
        return StatusReport(
            at=now,
            queues=queues,
            broker_error=error,
            workers=[b for b in beats if is_task_worker(b)],
            pool=pool_state(self.store, now, beats),
            failing=failing_checks(self.store),
            hour=self.store.summary(now - 3600),
            day=self.store.summary(now - 86400),
            today=self.store.summary(start_of_day(now)),
            top_users=self.store.top_spenders(day_of(now), "user"),
            top_channels=self.store.top_spenders(day_of(now), "channel"),
            repos=[(name, repo_states(self.store, name)) for name in self.repos],
            feedback=Feedback(self.store, self.clock).today(),
            projects=project_counts(self.store),
        )

    def _queues(self) -> tuple[list[QueueState], str]:
        try:
            return [QueueState(name, *self.depth(name)) for name in self.queues], ""
        except (AicoError, TimeoutError, OSError) as exc:
            log.warning("status: queues not readable: %s", exc)
            return [], str(exc) or type(exc).__name__


def project_counts(store: EventStore) -> dict[str, int]:
    """Projects running, and their steps by state (waiting, queued, running, done, …)."""
    counts: dict[str, int] = {}
    for project in running_projects(store):
        counts["projects"] = counts.get("projects", 0) + 1
        for state, n in state_of(store, project).counts().items():
            counts[state] = counts.get(state, 0) + n
    return counts
