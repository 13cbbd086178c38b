"""The recovery sweep against a real event store: only stranded tasks are queued again, once,
and an older copy of their message can no longer start."""

from __future__ import annotations

import time
from concurrent.futures import Future

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.messages import ResultMessage, TaskMessage
from core.errors import Conflict
from core.usecases.recovery import MAX_RECOVERIES, Recovery

HOUR = 3600.0


class Broker:
    def __init__(self, ready: int = 0) -> None:
        self.ready = ready
        self.published: list[tuple[str, bytes]] = []

    def publish(self, queue: str, body: bytes, message_id: str) -> Future[None]:
        self.published.append((queue, body))
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def depth(self, queue: str) -> tuple[int, int]:
        return self.ready, 1


@pytest.fixture
def store(tmp_path):
    store = SqliteEventStore(tmp_path / "aico.db")
    yield store
    store.close()


def queued_task(store, task_id: str) -> None:
    data = {"user": "U1", "channel": "C1", "prompt": f"task {task_id}"}
    store.append(task_id, events.SUBMITTED, data)
    store.append(task_id, events.POSTED, {"thread_ts": "1.0"})
    store.append(task_id, events.QUEUED, {})


def sweep(store, broker, later: float = HOUR) -> list[str]:
    recovery = Recovery(
        store,
        broker.publish,
        broker.depth,
        "tasks",
        "results",
        stale_after=HOUR / 2,
        clock=lambda: time.time() + later,
    )
    return recovery.sweep()


def test_a_stranded_task_is_queued_again_with_a_new_generation(store):
    queued_task(store, "a")
    broker = Broker()

    assert sweep(store, broker) == ["a"]

    ((queue, body),) = broker.published
    assert queue == "tasks" and TaskMessage.decode(body).generation == 1
    assert store.task("a").generation == 1
    with pytest.raises(Conflict):  # the lost copy, should it turn up, cannot start any more
        store.append("a", events.STARTED, {"generation": 0})


def test_nothing_is_stranded_while_task_messages_wait_in_the_queue(store):
    queued_task(store, "a")
    broker = Broker(ready=3)
    assert sweep(store, broker) == [] and broker.published == []


def test_a_task_that_moved_recently_is_not_stranded(store):
    queued_task(store, "a")
    broker = Broker()
    assert sweep(store, broker, later=0) == [] and broker.published == []


def test_a_task_stranded_too_often_is_failed_with_the_reason(store):
    queued_task(store, "a")
    for generation in range(1, MAX_RECOVERIES + 1):
        store.append("a", events.REQUEUED, {"generation": generation})
    broker = Broker()

    assert sweep(store, broker) == ["a"]

    ((queue, body),) = broker.published
    failed = ResultMessage.decode(body)
    assert queue == "results" and failed.event == "failed"
    assert "lost" in failed.error
