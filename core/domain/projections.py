"""The event store's projections as pure functions: what one event changes in them, given the
task's view before and after it, and the same folded over a replay of every event.

A store applies these changes in the transaction that records the event (every backend the same
way), and a rebuild applies a replay's; no projection logic lives in a store adapter.

The projections: the task's row (its latest view), and three tables of counters that only grow,
each row keyed as named below, added to when a task has just ended: `stats` (per 5-minute slot,
outcome, duration bucket, user and channel), `stats_all` (the same rolled up over users and
channels: what /aico status reads) and `spend` (per UTC day, user or channel: tasks and cost, the
top spenders), and `claude_all` (per slot, the done tasks by the bucket of Claude's time for
the answer: the Claude latency histogram of /metrics). Budgets are the limits admins set, one
`budget_set` event each; the last one set for a day is the one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.domain.budget import AGGREGATE as BUDGET_AGGREGATE
from core.domain.events import Event, TaskView, apply
from core.domain.pool import SYSTEM as SYSTEM_AGGREGATES
from core.domain.stats import SLOT, Count, count_for, day_of

STATS = "stats"  # key (slot, outcome, bucket, user, channel); amounts (tasks, tokens in, out, cost)
TOTALS = "stats_all"  # key (slot, outcome, bucket); amounts (tasks, tokens in, tokens out, cost)
SPEND = "spend"  # key (day, "user" or "channel", who); amounts (tasks, cost)
CLAUDE = "claude_all"  # key (slot, bucket of Claude's time); amounts (done tasks,)
COUNTERS = (STATS, TOTALS, SPEND, CLAUDE)


@dataclass(frozen=True)
class Increment:
    """Add `amounts` to the row of the counters `table` keyed `key`; a new row starts at them."""

    table: str
    key: tuple[Any, ...]
    amounts: tuple[Any, ...]

    @property
    def row(self) -> tuple[Any, ...]:
        return (*self.key, *self.amounts)


@dataclass(frozen=True)
class Changes:
    """What one event changes: the task's row becomes `task`; the counters grow by `increments`
    (none unless the task has just ended)."""

    task: TaskView
    increments: tuple[Increment, ...] = ()


@dataclass(frozen=True)
class Budget:
    """A limit an admin set: `usd` for `who` (a user or a channel, by `scope`) on `day`."""

    scope: str
    who: str
    day: str
    usd: float

    @property
    def row(self) -> tuple[str, str, str, float]:
        return (self.scope, self.who, self.day, self.usd)


def changes(before: TaskView | None, after: TaskView) -> Changes:
    """The projections' share of the event that took a task from `before` to `after`."""
    count = count_for(before, after)
    return Changes(after, () if count is None else increments(count))


def increments(c: Count) -> tuple[Increment, ...]:
    """What one ended task adds to each table of counters."""
    amounts = (1, c.tokens_in, c.tokens_out, c.cost)
    day = day_of(c.slot * SLOT)
    claude = (Increment(CLAUDE, (c.slot, c.claude_bucket), (1,)),) if c.claude_bucket >= 0 else ()
    return (
        Increment(STATS, (c.slot, c.outcome, c.bucket, c.user, c.channel), amounts),
        Increment(TOTALS, (c.slot, c.outcome, c.bucket), amounts),
        Increment(SPEND, (day, "user", c.user), (1, c.cost)),
        Increment(SPEND, (day, "channel", c.channel), (1, c.cost)),
        *claude,
    )


def budget(data: dict[str, Any]) -> Budget:
    """The limit a `budget_set` event's data sets (it replaces any set before for that day)."""
    return Budget(data["scope"], data["who"], data["day"], data["usd"])


@dataclass
class Replay:
    """The projections as the events fed so far (in the order they were recorded) make them."""

    views: dict[str, TaskView] = field(default_factory=dict)
    budgets: dict[tuple[str, str, str], Budget] = field(default_factory=dict)
    _sums: dict[tuple[str, tuple[Any, ...]], list[Any]] = field(default_factory=dict)

    def feed(
        self, aggregate_id: str, type_: str, data: dict[str, Any], at: float, version: int, id_: str
    ) -> None:
        """One recorded event: a task's, a budget's or the system's."""
        if aggregate_id.startswith(SYSTEM_AGGREGATES):
            return  # the system's events (core.domain.pool) project nothing of tasks
        if aggregate_id.startswith(BUDGET_AGGREGATE):
            limit = budget(data)
            self.budgets[limit.scope, limit.who, limit.day] = limit
            return
        before = self.views.get(aggregate_id)
        self.views[aggregate_id] = after = apply(
            before, Event(aggregate_id, type_, data, at, version, id_)
        )
        for increment in changes(before, after).increments:
            sums = self._sums.get((increment.table, increment.key))
            if sums is None:
                self._sums[increment.table, increment.key] = list(increment.amounts)
            else:  # in event order, as the appends added them one at a time: the same float sums
                for i, amount in enumerate(increment.amounts):
                    sums[i] += amount

    def increments(self, table: str) -> list[Increment]:
        """One per row of the counters `table`: what it adds up to, from nothing."""
        return [
            Increment(name, key, tuple(sums))
            for (name, key), sums in self._sums.items()
            if name == table
        ]
