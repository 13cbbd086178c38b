"""The figures Prometheus scrapes at `GET /metrics` (prometheus_client), read when it asks: from
the event store (tasks by status, today's totals and durations, the workers' heartbeats with
their breakers, the pool's decision, the health checks) and from the broker (queue depths and
consumers). Worker-side figures reach the bot through those two, never through
prometheus_client's multiprocess mode.

A scrape stays cheap however long the history: a count per status, today's 5-minute counter
slots, the live heartbeats, the latest events of a few system aggregates, one passive declare
per queue. A source that cannot be read leaves its figures out (missing, never wrong) and the
rest is still answered; `aico_source_up{source}` says which, and the outage is logged once when
it starts and once when it ends. A source that is slow to fail is not asked again in the same
scrape, so an outage costs one wait, not one per figure."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from core.domain import pool
from core.domain.health import CHECKS, Level
from core.domain.stats import Summary, bucket, bucket_seconds, start_of_day
from core.ports import EventStore
from core.usecases.status import LIVE_WITHIN, check_levels, is_pm, is_task_worker

log = logging.getLogger(__name__)
T = TypeVar("T")

STORE, BROKER = "store", "broker"
SOURCES = (STORE, BROKER)
SLOW = 1.0  # seconds: a source this slow to fail is away; it is not asked again this scrape
CHECK_UP = {Level.OK: 1.0, Level.DEGRADED: 0.5, Level.DOWN: 0.0}
LEVELS = {level.value for level in Level}
BREAKER_STATES = ("closed", "open", "half_open")
# The duration histogram's `le` bounds are the store's own buckets (10% apart) nearest above
# these seconds, so every count in it is exact (the label is the bucket's bound as it is).
DURATION_BUCKETS = tuple(
    bucket(s) for s in (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
)
DURATIONS = "aico_task_duration_seconds"
CLAUDE_TIMES = "aico_claude_seconds"


class PoolCollector(Collector):
    """Every figure of `GET /metrics`: the pool (its first figures), the tasks, today's totals,
    the breakers, the health checks and the queues."""

    def __init__(
        self,
        store: EventStore,
        depth: Callable[[str], tuple[int, int]],
        queues: Sequence[str],
        clock: Callable[[], float],
        checks: Sequence[str] = CHECKS,
    ) -> None:
        self.store, self.depth, self.queues, self.clock = store, depth, queues, clock
        self.checks = checks
        self._outages = _Outages()

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        scrape = _Scrape()
        families = [
            *(scrape.read(STORE, lambda: self._workers(now)) or []),
            *(scrape.read(STORE, self._tasks) or []),
            *(scrape.read(STORE, lambda: _today(self.store.summary(start_of_day(now)))) or []),
            *(
                scrape.read(STORE, lambda: [_claude(self.store.claude_times(start_of_day(now)))])
                or []
            ),
            *(scrape.read(STORE, self._checks) or []),
            *self._queues(scrape),
        ]
        families.append(_sources_up(scrape.errors))
        self._outages.update(scrape.errors)
        return iter(families)

    def _workers(self, now: float) -> list[Metric]:
        beats = self.store.workers(seen_since=now - LIVE_WITHIN)
        workers = [b for b in beats if is_task_worker(b)]
        decision = self.store.latest(pool.DECISION)
        return [
            _gauge(
                "aico_workers_desired",
                "Task workers the scaling policy wants for the whole cluster",
                float(decision.data["target"]) if decision else float("nan"),
            ),
            _gauge("aico_workers_live", "Task workers heard from lately", len(workers)),
            _gauge(
                "aico_worker_slots_busy",
                "Claude calls in flight over all task workers",
                sum(int(b.get("busy", 0)) for b in workers),
            ),
            _gauge(
                "aico_worker_slots",
                "Claude calls the live task workers can make at once (their slots)",
                sum(int(b.get("capacity", 0)) for b in workers),
            ),
            _gauge("aico_pm_live", "aico pm processes heard from lately", sum(map(is_pm, beats))),
            _breakers(workers),
        ]

    def _tasks(self) -> list[Metric]:
        family = GaugeMetricFamily("aico_tasks", "Tasks in each status now", labels=["status"])
        for status, n in self.store.task_counts().items():
            family.add_metric([status], n)
        return [family]

    def _checks(self) -> list[Metric]:
        levels = check_levels(self.store, self.checks)
        known = {name: Level(lv) for name, (lv, _) in levels.items() if lv in LEVELS}
        up = GaugeMetricFamily(
            "aico_check_up",
            "A health check's level: 1 ok, 0.5 degraded, 0 down (as the elected pm last judged)",
            labels=["check"],
        )
        for name, level in known.items():
            up.add_metric([name], CHECK_UP[level])
        firing = _gauge(
            "aico_alerts_firing",
            "Health checks not ok now (degraded or down)",
            sum(level is not Level.OK for level in known.values()),
        )
        return [up, firing]

    def _queues(self, scrape: _Scrape) -> list[Metric]:
        ready = GaugeMetricFamily("aico_queue_ready", "Messages ready in a queue", labels=["queue"])
        consumers = GaugeMetricFamily(
            "aico_queue_consumers", "Consumers of a queue", labels=["queue"]
        )
        for queue in self.queues:
            depth = scrape.read(BROKER, functools.partial(self.depth, queue))
            if depth is not None:
                ready.add_metric([queue], depth[0])
                consumers.add_metric([queue], depth[1])
        return [ready, consumers]


def _today(day: Summary) -> list[Metric]:
    tokens = GaugeMetricFamily(
        "aico_tokens_today",
        "Claude tokens of the tasks that ended today (UTC), by direction",
        labels=["direction"],
    )
    tokens.add_metric(["in"], day.tokens_in)
    tokens.add_metric(["out"], day.tokens_out)
    finished = GaugeMetricFamily(
        "aico_tasks_finished_today", "Tasks that ended today (UTC), by outcome", labels=["outcome"]
    )
    for outcome, n in (("done", day.done), ("failed", day.failed), ("cancelled", day.cancelled)):
        finished.add_metric([outcome], n)
    cost = _gauge("aico_cost_usd_today", "USD spent on the tasks that ended today (UTC)", day.cost)
    return [_durations(day), tokens, finished, cost]


def _durations(day: Summary) -> HistogramMetricFamily:
    """Today's done tasks by duration, cumulative; no _sum (the store keeps counts per bucket,
    not the durations), but _count."""
    buckets = [
        (
            floatToGoString(bucket_seconds(k)),
            float(sum(n for i, n in day.durations.items() if i <= k)),
        )
        for k in DURATION_BUCKETS
    ]
    family = HistogramMetricFamily(
        DURATIONS,
        "Seconds from submission to the end of the tasks done today (UTC); starts again at "
        "midnight UTC",
        buckets=[*buckets, ("+Inf", float(day.done))],
    )
    family.samples.append(Sample(DURATIONS + "_count", {}, float(day.done)))
    return family


def _claude(times: dict[int, int]) -> HistogramMetricFamily:
    """Today's done tasks by Claude's time for their answer, on the same exact buckets."""
    total = float(sum(times.values()))
    buckets = [
        (floatToGoString(bucket_seconds(k)), float(sum(n for i, n in times.items() if i <= k)))
        for k in DURATION_BUCKETS
    ]
    family = HistogramMetricFamily(
        CLAUDE_TIMES,
        "Seconds Claude took to answer, for the tasks done today (UTC); starts again at midnight",
        buckets=[*buckets, ("+Inf", total)],
    )
    family.samples.append(Sample(CLAUDE_TIMES + "_count", {}, total))
    return family


def _breakers(workers: list[dict]) -> GaugeMetricFamily:
    states = Counter(str((w.get("breaker") or {}).get("state", "unknown")) for w in workers)
    family = GaugeMetricFamily(
        "aico_breakers", "Live task workers whose Claude breaker is in each state", labels=["state"]
    )
    for state in dict.fromkeys((*BREAKER_STATES, *states)):
        family.add_metric([state], states[state])
    return family


def _sources_up(errors: Mapping[str, Exception]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "aico_source_up",
        "1 if every figure from this source was read in this scrape, 0 if some are missing",
        labels=["source"],
    )
    for source in SOURCES:
        family.add_metric([source], 0.0 if source in errors else 1.0)
    return family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


@dataclass
class _Scrape:
    """One scrape's reads: what failed, per source, and the sources given up on."""

    errors: dict[str, Exception] = field(default_factory=dict)
    away: set[str] = field(default_factory=set)

    def read(self, source: str, part: Callable[[], T]) -> T | None:
        """`part()`, or None if `source` cannot be read now."""
        if source in self.away:
            return None
        started = time.monotonic()
        try:
            return part()
        except Exception as exc:  # the source is away: its figures are missing, not wrong
            self.errors.setdefault(source, exc)
            if time.monotonic() - started >= SLOW:
                self.away.add(source)
            return None


class _Outages:
    """Says once that a source cannot be read, and once that it can again, however often
    Prometheus scrapes in between (scrapes may run on several threads)."""

    def __init__(self) -> None:
        self._away: set[str] = set()
        self._lock = threading.Lock()

    def update(self, errors: Mapping[str, Exception]) -> None:
        with self._lock:
            for source in SOURCES:
                if source in errors and source not in self._away:
                    self._away.add(source)
                    log.warning(
                        "metrics: the %s cannot be read (%s); its figures are left out until "
                        "it can",
                        source,
                        errors[source],
                    )
                elif source not in errors and source in self._away:
                    self._away.discard(source)
                    log.info("metrics: the %s can be read again", source)


def exposition(collector: Collector) -> Callable[[], bytes]:
    """What `GET /metrics` answers, freshly collected."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return lambda: generate_latest(registry)
