"""`GET /metrics` tells the truth: what a real SQLite store and the broker twin were told comes out
of the exposition, parsed as Prometheus parses it; and a store or a broker that is away leaves
its figures out (logged once), never wrong, while the rest is still answered."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.adapters import sqlite_store
from core.adapters.metrics import PoolCollector, exposition
from core.domain import events, pool
from core.domain.health import AGGREGATE, CHANGED, CHECKS
from core.domain.messages import DEAD, RESULTS, TASKS
from core.domain.stats import start_of_day

QUEUES = (TASKS, RESULTS, DEAD)
TODAY = start_of_day(time.time()) + 60.0  # a minute into today (UTC)
YESTERDAY = TODAY - 7200.0

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def figures(collector: PoolCollector) -> Figures:
    """Every sample of one scrape, as Prometheus reads the text: (name, labels) -> value."""
    text = exposition(collector)().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fig(scraped: Figures, name: str, **labels: str) -> float:
    return scraped[(name, tuple(sorted(labels.items())))]


def names(scraped: Figures) -> set[str]:
    return {name for name, _ in scraped}


@pytest.fixture
def clock(monkeypatch):
    """The time the store stamps events with (heartbeats keep the real time)."""
    stamp = SimpleNamespace(at=TODAY, monotonic=time.monotonic, sleep=time.sleep)
    stamp.time = lambda: stamp.at
    monkeypatch.setattr(sqlite_store, "time", stamp)
    return stamp


def run(store, clock, task_id: str, start: float, end: float, last: str, **data) -> None:
    """A task submitted at `start`, carried as far as its `last` event at `end`."""
    clock.at = start
    store.append(task_id, events.SUBMITTED, {"user": "U1", "channel": "C1", "prompt": "p"})
    store.append(task_id, events.QUEUED, {})
    if last == events.QUEUED:
        return
    if last != events.CANCELLED:
        store.append(task_id, events.STARTED, {"generation": 0, "delivery": 0})
    clock.at = end
    if last != events.STARTED:
        store.append(task_id, last, data)


def done(store, clock, task_id: str, start: float, seconds: float, tin: int, tout: int, usd):
    usage = {"input_tokens": tin, "output_tokens": tout}
    run(store, clock, task_id, start, start + seconds, events.COMPLETED, usage=usage, cost_usd=usd)


def collector(store, broker=None, depth=None) -> PoolCollector:
    depth = depth or (lambda queue: broker.queue_depth(queue).result(2.0))
    return PoolCollector(store, depth, QUEUES, time.time)


def test_every_figure_is_what_the_store_and_the_broker_were_told(store, broker, clock):
    # Given tasks done today in 3 s, 40 s and 700 s, one failed, one cancelled, one done
    # yesterday, one running, one queued
    done(store, clock, "today1", TODAY, 3.0, 100, 10, 0.25)
    done(store, clock, "today2", TODAY + 10, 40.0, 200, 20, 0.5)
    done(store, clock, "today3", TODAY + 20, 700.0, 300, 30, 1.0)
    failed = {"error": "refused", "usage": {"input_tokens": 7, "output_tokens": 0}}
    run(store, clock, "failed1", TODAY, TODAY + 5, events.FAILED, **failed)
    run(store, clock, "cancel1", TODAY, TODAY + 1, events.CANCELLED, by="U1")
    done(store, clock, "yester1", YESTERDAY, 30.0, 5000, 500, 9.0)
    run(store, clock, "running1", TODAY, TODAY, events.STARTED)
    run(store, clock, "queued1", TODAY, TODAY, events.QUEUED)

    # And three task workers (breakers closed, open, half open), a pm and a bot heard from
    store.heartbeat("w1", {"busy": 2, "capacity": 2, "breaker": {"state": "closed"}})
    store.heartbeat("w2", {"busy": 1, "capacity": 2, "breaker": {"state": "open"}})
    store.heartbeat("w3", {"busy": 0, "capacity": 2, "breaker": {"state": "half_open"}})
    store.heartbeat("pm1", {"kind": "pm", "host": "h1"})
    store.heartbeat("bot:h1", {"kind": "bot", "host": "h1"})
    store.record(pool.DECISION, "scaled", {"target": 4})

    # And the broker down once, then up; the disk degraded; the store's check recovered
    store.record(AGGREGATE + "broker", CHANGED, {"level": "down"})
    store.record(AGGREGATE + "broker", CHANGED, {"level": "ok"})
    store.record(AGGREGATE + "disk", CHANGED, {"level": "degraded"})
    store.record(AGGREGATE + "store", CHANGED, {"level": "down"})

    # And two tasks waiting in aico.tasks, one consumer of aico.results, a dead letter
    for n in range(2):
        broker.publish(TASKS, b"{}", f"m{n}").result(2)
    broker.publish(DEAD, b"{}", "dead1").result(2)
    broker.consume(RESULTS, 1, lambda delivery: None)
    broker.wait_for(lambda: broker.node.consumers(RESULTS) == 1)

    # When Prometheus scrapes
    got = figures(collector(store, broker))

    # Then the tasks by status are the store's
    by_status = {"submitted": 0, "queued": 1, "running": 1, "done": 4, "failed": 1, "cancelled": 1}
    assert {s: fig(got, "aico_tasks", status=s) for s in by_status} == by_status

    # And today's histogram counts today's done tasks, cumulatively, at the store's bounds
    buckets = {
        float(dict(labels)["le"]): value
        for (name, labels), value in got.items()
        if name == "aico_task_duration_seconds_bucket"
    }
    assert buckets[float("inf")] == 3 == fig(got, "aico_task_duration_seconds_count")
    assert all(buckets[le] == sum(d <= le for d in (3.0, 40.0, 700.0)) for le in buckets)
    assert [buckets[le] for le in sorted(buckets)][:2] == [0, 0]
    assert "aico_task_duration_seconds_sum" not in names(got)  # the store keeps no sum

    # And today's tokens, cost and outcomes leave yesterday's out
    assert fig(got, "aico_tokens_today", direction="in") == 100 + 200 + 300 + 7
    assert fig(got, "aico_tokens_today", direction="out") == 10 + 20 + 30
    assert fig(got, "aico_cost_usd_today") == pytest.approx(1.75)
    outcomes = {o: fig(got, "aico_tasks_finished_today", outcome=o) for o in ("done", "failed")}
    assert outcomes == {"done": 3, "failed": 1}
    assert fig(got, "aico_tasks_finished_today", outcome="cancelled") == 1

    # And the workers, their slots and breakers are the heartbeats'
    assert fig(got, "aico_workers_live") == 3
    assert fig(got, "aico_worker_slots_busy") == 3
    assert fig(got, "aico_worker_slots") == 6
    assert fig(got, "aico_pm_live") == 1
    assert fig(got, "aico_workers_desired") == 4
    breakers = {s: fig(got, "aico_breakers", state=s) for s in ("closed", "open", "half_open")}
    assert breakers == {"closed": 1, "open": 1, "half_open": 1}

    # And each check says its last change; a check never changed is ok
    expected = {name: 1.0 for name in CHECKS} | {"disk": 0.5, "store": 0.0}
    assert {c: fig(got, "aico_check_up", check=c) for c in CHECKS} == expected
    assert fig(got, "aico_alerts_firing") == 2

    # And the queues are the broker's
    assert {q: fig(got, "aico_queue_ready", queue=q) for q in QUEUES} == {
        TASKS: 2,
        RESULTS: 0,
        DEAD: 1,
    }
    assert fig(got, "aico_queue_consumers", queue=RESULTS) == 1
    assert fig(got, "aico_queue_consumers", queue=TASKS) == 0
    assert fig(got, "aico_source_up", source="store") == 1
    assert fig(got, "aico_source_up", source="broker") == 1


def test_an_empty_store_says_zero_and_no_decision_yet(store, broker):
    got = figures(collector(store, broker))
    assert fig(got, "aico_tasks", status="done") == 0
    assert fig(got, "aico_task_duration_seconds_bucket", le="+Inf") == 0
    assert fig(got, "aico_workers_live") == 0
    assert fig(got, "aico_alerts_firing") == 0
    assert fig(got, "aico_workers_desired") != fig(got, "aico_workers_desired")  # NaN: unknown


def test_a_broker_away_leaves_the_queues_out_and_is_logged_once(store, broker, caplog):
    # Given a broker that cannot be reached, and a task worker heard from
    store.heartbeat("w1", {"busy": 1, "capacity": 2, "breaker": {"state": "closed"}})
    broker.connected.clear()
    metrics = collector(store, broker)

    # When Prometheus scrapes twice
    with caplog.at_level(logging.INFO, logger="core.adapters.metrics"):
        first, second = figures(metrics), figures(metrics)

        # Then the queue figures are missing, not zero, and the store's are there
        for got in (first, second):
            assert not {"aico_queue_ready", "aico_queue_consumers"} & names(got)
            assert fig(got, "aico_source_up", source="broker") == 0
            assert fig(got, "aico_source_up", source="store") == 1
            assert fig(got, "aico_workers_live") == 1

        # And the outage is logged once; its end once, when the broker is back
        broker.connected.set()
        back = figures(metrics)
        figures(metrics)
    assert fig(back, "aico_queue_ready", queue=TASKS) == 0
    said = [r.getMessage() for r in caplog.records]
    assert sum("broker cannot be read" in m for m in said) == 1
    assert sum("broker can be read again" in m for m in said) == 1


class AwayStore:
    """A store whose server is gone: every read fails (as PostgreSQL's pool does)."""

    def __getattr__(self, name: str):
        def fail(*args, **kwargs):
            raise ConnectionError("connection refused")

        return fail


def test_a_store_away_leaves_its_figures_out_and_the_queues_are_still_answered(broker, caplog):
    broker.publish(TASKS, b"{}", "m1").result(2)
    metrics = collector(AwayStore(), broker)

    with caplog.at_level(logging.WARNING, logger="core.adapters.metrics"):
        first, second = figures(metrics), figures(metrics)

    for got in (first, second):
        assert fig(got, "aico_queue_ready", queue=TASKS) == 1
        assert fig(got, "aico_source_up", source="store") == 0
        left_out = {"aico_tasks", "aico_workers_live", "aico_check_up", "aico_tokens_today"}
        assert not left_out & names(got)
    assert sum("store cannot be read" in r.getMessage() for r in caplog.records) == 1


def test_a_broker_that_hangs_is_waited_for_once_a_scrape(store, monkeypatch):
    # Given a broker whose answers time out
    monkeypatch.setattr("core.adapters.metrics.SLOW", 0.0)
    asked = []

    def depth(queue: str) -> tuple[int, int]:
        asked.append(queue)
        raise TimeoutError

    # When Prometheus scrapes
    got = figures(collector(store, depth=depth))

    # Then it asked once, not once per queue, and the store's figures are there
    assert asked == [TASKS]
    assert fig(got, "aico_source_up", source="broker") == 0
    assert fig(got, "aico_tasks", status="done") == 0


def test_one_queue_missing_leaves_only_that_queue_out(store):
    def depth(queue: str) -> tuple[int, int]:
        if queue == DEAD:
            raise LookupError(f"no queue {queue!r}")
        return (5, 1)

    got = figures(collector(store, depth=depth))
    assert fig(got, "aico_queue_ready", queue=TASKS) == 5
    assert fig(got, "aico_queue_ready", queue=RESULTS) == 5
    assert ("aico_queue_ready", (("queue", DEAD),)) not in got
    assert fig(got, "aico_source_up", source="broker") == 0


def test_claudes_time_for_todays_done_answers_is_a_histogram(store, broker):
    for task_id, claude_ms in (("a", 1500.0), ("b", 30000.0)):
        store.append(task_id, events.SUBMITTED, {"user": "U", "channel": "C", "prompt": "p"})
        store.append(task_id, events.ANSWERED, {"usage": {}, "claude_ms": claude_ms})
        store.append(task_id, events.COMPLETED, {"claude_ms": claude_ms})
    store.append("c", events.SUBMITTED, {"user": "U", "channel": "C", "prompt": "p"})
    store.append("c", events.FAILED, {"error": "no"})  # no answer: not in it

    got = figures(collector(store, broker))

    buckets = {
        float(dict(labels)["le"]): value
        for (name, labels), value in got.items()
        if name == "aico_claude_seconds_bucket"
    }
    assert buckets[float("inf")] == 2 == fig(got, "aico_claude_seconds_count")
    assert all(buckets[le] == sum(s <= le for s in (1.5, 30.0)) for le in buckets if le < 1e9)
    assert store.rebuild() == 3  # and the histogram is derived again from the events
    again = figures(collector(store, broker))
    assert {k: v for k, v in again.items() if k[0].startswith("aico_claude")} == {
        k: v for k, v in got.items() if k[0].startswith("aico_claude")
    }
