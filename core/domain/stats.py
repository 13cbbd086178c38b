"""Statistics derived from the task projection: what a finished task adds to the counters, and
how the counters read back as success rate, p50/p95 durations, tokens and cost.

Counters live in 5-minute slots with durations in logarithmic buckets (each 10% wider than the
last), so a percentile is exact to within 10%. Everyone's counters (what `/aico status` reads)
are at most slots x buckets x outcomes rows however many tasks there were: a day is a sum over
a few thousand rows at most. Per-user and per-channel counters (history, budgets) also carry
the user and channel, and are read for one of them at a time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from core.domain.events import TaskView
from core.domain.task import TaskStatus

SLOT = 300  # seconds per counter slot
_BASE = 1.1  # bucket width ratio
_FLOOR = 0.01  # seconds: every duration below this is in bucket 0


@dataclass(frozen=True)
class Spender:
    """A user's or a channel's day: tasks finished, and what they cost."""

    who: str
    tasks: int
    cost: float


@dataclass(frozen=True)
class Count:
    """One row of counters: tasks that ended with `outcome` in `slot` with a duration in
    `bucket`, and what they used."""

    slot: int
    outcome: str
    bucket: int
    user: str
    channel: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    claude_bucket: int = -1  # Claude's time for a done task's answer, in a bucket; -1: none


def bucket(seconds: float) -> int:
    return max(0, math.ceil(math.log(max(seconds, _FLOOR) / _FLOOR, _BASE)))


def bucket_seconds(index: int) -> float:
    """The upper bound of a bucket, in seconds."""
    return _FLOOR * _BASE**index


def slot_of(at: float) -> int:
    return int(at // SLOT)


def day_of(at: float) -> str:
    """The UTC day `at` is in, as budgets and daily totals name it."""
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def count_for(before: TaskView | None, after: TaskView) -> Count | None:
    """What `after` adds to the counters: a row when the task has just ended, else None."""
    if not after.status.final or (before is not None and before.status.final):
        return None
    ended = after.finished_at or after.updated_at
    return Count(
        slot=slot_of(ended),
        outcome=after.status.value,
        bucket=bucket(ended - after.created_at),
        user=after.user,
        channel=after.channel,
        tokens_in=int(after.usage.get("input_tokens", 0) or 0),
        tokens_out=int(after.usage.get("output_tokens", 0) or 0),
        cost=after.cost,
        claude_bucket=(
            bucket(after.claude_ms / 1000)
            if after.status is TaskStatus.DONE and after.claude_ms > 0
            else -1
        ),
    )


@dataclass(frozen=True)
class Activity:
    """The recent load: when tasks arrived, and how long the ones done lately took to run."""

    arrivals: list[float]  # arrival times, oldest first
    service: list[float]  # seconds from start to finish, one per task done

    def rate(self, since: float, now: float) -> float:
        """Arrivals per second between `since` and `now`."""
        return sum(1 for a in self.arrivals if a >= since) / max(now - since, 1e-9)

    @property
    def mean_service(self) -> float:
        """The mean service time; 0 when nothing was done (unknown)."""
        return sum(self.service) / len(self.service) if self.service else 0.0


@dataclass
class Summary:
    """Tasks that ended in a window, read back from the counters."""

    done: int = 0
    failed: int = 0
    cancelled: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    durations: dict[int, int] = field(default_factory=dict)  # bucket -> done tasks

    def add(self, outcome: str, bucket_index: int, n: int, tin: int, tout: int, cost: float):
        if outcome == TaskStatus.DONE:
            self.done += n
            self.durations[bucket_index] = self.durations.get(bucket_index, 0) + n
        elif outcome == TaskStatus.FAILED:
            self.failed += n
        else:
            self.cancelled += n
        self.tokens_in += tin
        self.tokens_out += tout
        self.cost += cost

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.cancelled

    @property
    def success_rate(self) -> float | None:
        """Done among done and failed (cancelled ones say nothing); None without either."""
        judged = self.done + self.failed
        return self.done / judged if judged else None

    def percentile(self, q: float) -> float | None:
        """The duration (seconds) that a share `q` of the done tasks stayed within."""
        total = sum(self.durations.values())
        if not total:
            return None
        rank, seen = q * total, 0
        for index in sorted(self.durations):
            seen += self.durations[index]
            if seen >= rank:
                return bucket_seconds(index)
        return bucket_seconds(max(self.durations))


def start_of_day(now: float | None = None) -> float:
    """Midnight UTC of the day `now` is in: "today" for totals and budgets."""
    now = time.time() if now is None else now
    return now - now % 86400
