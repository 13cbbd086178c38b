"""workers.runtime.Runtime on the broker twin (tests/twins/broker.py): consume -> handle ->
publish -> ack only once what the handler published is confirmed; Reject dead-letters, any other
error gives the delivery back; one task's deliveries in order, other tasks' never behind them;
pause and resume; a stop drains before it closes.

The runtime's link is `broker`; the test publishes its messages through `feeder`, another link
to the same broker (as the bot would), so that holding the runtime's confirms holds only its own.
No sleeps: every wait is on the twin's state or on an event a handler sets.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator

import pytest

from core.domain.messages import DEAD, DEAD_WATCH, RESULTS, TASKS, ResultMessage, TaskMessage
from core.errors import Reject, TryLater
from tests.twins.broker import MemoryBroker
from workers.runtime import Runtime

WAIT = 10.0


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    link = MemoryBroker(name="worker")
    yield link
    link.close()
    assert link.errors == [], "nothing settled twice, no callback failed"


@pytest.fixture
def feeder(broker) -> Iterator[MemoryBroker]:
    link = MemoryBroker(node=broker.node, name="feeder")
    yield link
    link.close()


def task(task_id: str) -> bytes:
    return TaskMessage(task_id.split(":")[0], "p", "U1", "C1", "1.0", time.time()).encode()


def result(task_id: str, event: str = "completed") -> ResultMessage:
    return ResultMessage(task_id, event, "C1", "1.0", at=time.time())


def send(feeder: MemoryBroker, *message_ids: str) -> None:
    for message_id in message_ids:
        feeder.publish(TASKS, task(message_id), message_id).result(WAIT)


class Running:
    """A Runtime's run() on a thread of its own, as a worker process runs it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.thread = threading.Thread(target=runtime.run, kwargs={"drain_timeout": WAIT})
        self.thread.start()

    def stop(self) -> None:
        self.runtime.stop()
        self.thread.join(WAIT + 10)
        assert not self.thread.is_alive(), "the runtime did not stop"


@pytest.fixture
def run() -> Iterator:
    started: list[Running] = []

    def start(*args, **kwargs) -> Running:
        started.append(Running(Runtime(*args, **kwargs)))
        return started[-1]

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


def settled(broker: MemoryBroker, message_id: str) -> list[str]:
    return [
        action for queue, mid, action in broker.settlements if (queue, mid) == (TASKS, message_id)
    ]


def results(broker: MemoryBroker) -> list[str]:
    return [m.message_id for m in broker.ready(RESULTS)]


# -- settling ---------------------------------------------------------------------------------


def test_a_delivery_is_acked_only_once_what_its_handler_published_is_confirmed(broker, feeder, run):
    def handler(delivery, publish):
        publish(RESULTS, result("t1"), "t1:completed")

    broker.hold_confirms()
    run(broker, TASKS, handler, concurrency=1)
    send(feeder, "t1")

    broker.wait_for(lambda: broker.held == 1)
    assert settled(broker, "t1") == [] and broker.unacked(TASKS) == 1, "not before the confirm"

    broker.confirm_held()
    broker.wait_for(lambda: settled(broker, "t1") == ["ack"])
    assert results(broker) == ["t1:completed"]
    assert broker.unacked(TASKS) == 0 and broker.ready(TASKS) == []


def test_a_delivery_whose_publish_is_not_confirmed_is_given_back(broker, feeder, run):
    attempts = []

    def handler(delivery, publish):
        attempts.append(delivery.delivery_count)
        publish(RESULTS, result("t1"), f"t1:completed:{delivery.delivery_count}")

    broker.fail_next_publish()
    run(broker, TASKS, handler, concurrency=1)
    send(feeder, "t1")

    broker.wait_for(lambda: settled(broker, "t1") == ["requeue", "ack"])
    assert attempts == [0, 1]
    assert results(broker) == ["t1:completed:1"], "only the confirmed attempt's result"


def test_a_delivery_held_until_a_lost_confirm_is_given_back(broker, feeder, run):
    def handler(delivery, publish):
        publish(RESULTS, result("t1"), f"t1:{delivery.delivery_count}")

    broker.hold_confirms()
    run(broker, TASKS, handler, concurrency=1)
    send(feeder, "t1")
    broker.wait_for(lambda: broker.held == 1)

    broker.fail_held()

    broker.wait_for(lambda: settled(broker, "t1") == ["requeue", "ack"])
    assert results(broker) == ["t1:1"]


def test_a_reject_dead_letters_once_the_notice_is_confirmed(broker, feeder, run):
    def handler(delivery, publish):
        publish(RESULTS, result("t1", "failed"), "t1:failed")
        raise Reject("the task cannot be done")

    run(broker, TASKS, handler, concurrency=1)
    send(feeder, "t1")

    broker.wait_for(lambda: settled(broker, "t1") == ["reject"])
    assert results(broker) == ["t1:failed"]
    for dead_queue in (DEAD, DEAD_WATCH):
        (dead,) = broker.ready(dead_queue)
        assert (dead.message_id, dead.death_reason) == ("t1", "rejected")


def test_an_undecodable_message_is_dead_lettered(broker, feeder, run):
    def handler(delivery, publish):
        TaskMessage.decode(delivery.body)  # a DecodeError is a Reject

    run(broker, TASKS, handler, concurrency=1)
    feeder.publish(TASKS, b"not json", "t1").result(WAIT)

    broker.wait_for(lambda: settled(broker, "t1") == ["reject"])
    assert [m.message_id for m in broker.ready(DEAD)] == ["t1"]


@pytest.mark.parametrize("error", [RuntimeError("a bug"), TryLater("not now")])
def test_any_other_error_gives_the_delivery_back_for_another_attempt(broker, feeder, run, error):
    attempts, later = [], []

    def handler(delivery, publish):
        attempts.append(delivery.delivery_count)
        if delivery.delivery_count == 0:
            later.append(publish(RESULTS, result("t1", "retrying"), "t1:retrying", delay=60))
            raise error

    run(broker, TASKS, handler, concurrency=1)
    send(feeder, "t1")

    broker.wait_for(lambda: settled(broker, "t1") == ["requeue", "ack"])
    assert attempts == [0, 1]
    (delayed,) = later
    assert delayed.cancelled(), "a delayed report of the failed attempt is never sent"
    assert broker.ready(DEAD) == []


# -- lanes ------------------------------------------------------------------------------------


def lane(key: str, lanes: int) -> int:
    return zlib.crc32(key.encode()) % lanes


def test_ordered_runs_one_tasks_deliveries_one_at_a_time_in_order(broker, feeder, run):
    other = "t2"
    release, other_ran = threading.Event(), threading.Event()
    started: list[str] = []
    lock = threading.Lock()

    def handler(delivery, publish):
        with lock:
            started.append(delivery.message_id)
        if delivery.message_id == "t1:1":
            assert release.wait(WAIT)
        if delivery.message_id == f"{other}:1":
            other_ran.set()

    run(broker, TASKS, handler, concurrency=2, ordered=True)
    send(feeder, "t1:1", "t1:2", f"{other}:1", "t1:3")

    assert other_ran.wait(WAIT), "another task's lane is free"
    with lock:
        assert started == ["t1:1", f"{other}:1"], "t1:2 waits for t1:1, though a worker is idle"
    release.set()

    broker.wait_for(lambda: all(settled(broker, f"t1:{n}") == ["ack"] for n in (1, 2, 3)))
    assert [m for m in started if m.startswith("t1:")] == ["t1:1", "t1:2", "t1:3"]


def test_ordered_never_holds_a_task_behind_another_tasks_slow_delivery(broker, feeder, run):
    # Given two tasks whose ids a hash would put in one of 8 lanes, the first one held
    other = next(k for k in (f"t{n}" for n in range(2, 999)) if lane(k, 8) == lane("t1", 8))
    release, other_ran = threading.Event(), threading.Event()

    def handler(delivery, publish):
        if delivery.message_id == "t1:1":
            assert release.wait(WAIT)
        else:
            other_ran.set()

    run(broker, TASKS, handler, concurrency=8, ordered=True)
    send(feeder, "t1:1", f"{other}:1")

    # Then the other task's delivery runs while the first one's is still held
    assert other_ran.wait(WAIT), "a free worker took the other task"
    broker.wait_for(lambda: settled(broker, f"{other}:1") == ["ack"])
    assert settled(broker, "t1:1") == []
    release.set()
    broker.wait_for(lambda: settled(broker, "t1:1") == ["ack"])


# -- pause, resume, stop ----------------------------------------------------------------------


def test_a_pause_leaves_messages_in_the_queue_and_a_resume_takes_them_again(broker, feeder, run):
    paused = threading.Event()
    handled: list[str] = []

    def handler(delivery, publish):
        handled.append(delivery.message_id)

    run(broker, TASKS, handler, concurrency=1, paused=paused.is_set)
    send(feeder, "t1")
    broker.wait_for(lambda: settled(broker, "t1") == ["ack"])

    paused.set()
    broker.wait_for(lambda: broker.consumers(TASKS) == 0)
    send(feeder, "t2")
    assert [m.message_id for m in broker.ready(TASKS)] == ["t2"] and handled == ["t1"]

    paused.clear()
    broker.wait_for(lambda: settled(broker, "t2") == ["ack"])
    assert handled == ["t1", "t2"]


def test_a_stop_finishes_what_is_in_flight_before_it_closes(broker, feeder, run):
    started, release = threading.Event(), threading.Event()

    def handler(delivery, publish):
        started.set()
        assert release.wait(WAIT)
        publish(RESULTS, result(delivery.message_id), f"{delivery.message_id}:completed")

    running = run(broker, TASKS, handler, concurrency=1)
    send(feeder, "t1", "t2")  # both handed to the runtime (its prefetch is 3)
    assert started.wait(WAIT)
    broker.wait_for(lambda: broker.unacked(TASKS) == 2)

    running.runtime.stop()
    broker.wait_for(lambda: broker.active(TASKS) == 0)  # the consumer is cancelled
    send(feeder, "t3")
    assert not broker.closed, "not while t1 and t2 are in hand"
    release.set()
    running.stop()

    assert settled(broker, "t1") == ["ack"] and settled(broker, "t2") == ["ack"]
    assert results(broker) == ["t1:completed", "t2:completed"]
    assert broker.closed
    left = broker.ready(TASKS)
    assert [(m.message_id, m.delivery_count) for m in left] == [("t3", 0)], "for another worker"
