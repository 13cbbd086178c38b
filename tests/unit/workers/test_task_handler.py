"""The task handler against a real event store: Claude is asked at most once per attempt, and
the budget of attempts ends in a clear failure."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from core.adapters.claude import Completion
from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.breaker import BreakerState, CircuitBreaker
from core.domain.messages import DELIVERY_LIMIT, TaskMessage
from core.errors import ModelError, Reject, TryLater, Withheld
from workers.task.handler import TaskHandler

TASK = "t000000001"


class Model:
    """Claude's stand-in: answers, or raises the errors it is given, and counts the asks."""

    def __init__(self, *errors: ModelError) -> None:
        self.errors = list(errors)
        self.asked = 0

    def complete(self, prompt: str, history=(), on_text=None, ready=None) -> Completion:
        if ready is not None and not ready():
            raise Withheld("not claimed")
        self.asked += 1
        if self.errors:
            raise self.errors.pop(0)
        return Completion(f"answer to {prompt}", "claude-test", {"output_tokens": 3}, 12.0)


class Published(list):
    def __call__(self, queue, message, message_id, delay=0.0):
        future: Future[None] = Future()
        if not delay:
            future.set_result(None)
        self.append((message.event, message, future))
        return future

    def events(self) -> list[str]:
        return [event for event, _, future in self if not future.cancelled()]


@pytest.fixture
def store(tmp_path):
    store = SqliteEventStore(tmp_path / "aico.db")
    data = {"user": "U1", "channel": "C1", "prompt": "do it"}
    store.append(TASK, events.SUBMITTED, data)
    store.append(TASK, events.POSTED, {"thread_ts": "1.000"})
    store.append(TASK, events.QUEUED, {})
    yield store
    store.close()


def delivery(count: int = 0) -> SimpleNamespace:
    body = TaskMessage(TASK, "do it", "U1", "C1", "1.000", 1.0).encode()
    return SimpleNamespace(body=body, delivery_count=count)


def handler(store, model, breaker=None, stopping=None, hold_limit=1.0) -> TaskHandler:
    return TaskHandler(store, model, breaker or CircuitBreaker("claude"), stopping, hold_limit)


def test_an_answer_is_recorded_before_it_is_reported(store):
    model, published = Model(), Published()
    handler(store, model)(delivery(), published)

    assert model.asked == 1 and published.events() == ["completed"]
    task = store.task(TASK)
    assert task.answered and task.attempts == 1


def test_a_redelivered_answered_task_reports_the_recorded_answer_without_asking(store):
    handler(store, Model())(delivery(0), Published())
    model, published = Model(), Published()

    handler(store, model)(delivery(1), published)  # the first worker died before its ack

    assert model.asked == 0
    assert [(e, m.text) for e, m, _ in published] == [("completed", "answer to do it")]


def test_only_the_first_attempts_answer_is_reported_as_the_first(store):
    # The result worker posts a `first` answer without recording its intent: only the answer of
    # the first delivery's first claim may say so; a redelivery's, and a re-report, may not
    model, published = Model(ModelError("overloaded", transient=True)), Published()
    with pytest.raises(TryLater):
        handler(store, model)(delivery(0), published)  # attempt 1 failed: nothing reported
    handler(store, model)(delivery(1), published)  # attempt 2 answered
    handler(store, model)(delivery(2), published)  # that worker died before its ack: re-reported
    assert [m.first for e, m, _ in published if e == "completed"] == [False, False]

    fresh = TaskMessage("t000000002", "do it", "U1", "C1", "2.000", 1.0)
    store.append(fresh.task_id, events.SUBMITTED, {"user": "U1", "channel": "C1", "prompt": "x"})
    store.append(fresh.task_id, events.QUEUED, {"thread_ts": "2.000"})
    published = Published()
    handler(store, Model())(SimpleNamespace(body=fresh.encode(), delivery_count=0), published)
    assert [m.first for e, m, _ in published if e == "completed"] == [True]


def test_a_second_copy_of_one_delivery_does_not_ask_again(store):
    first = handler(store, Model(ModelError("overloaded", transient=True)))
    with pytest.raises(TryLater):
        first(delivery(0), Published())  # claimed delivery 0, then gave it back
    model, published = Model(), Published()

    handler(store, model)(delivery(0), published)  # a copy of that same delivery

    assert model.asked == 0 and published == []
    handler(store, model)(delivery(1), published)  # the redelivery is a new attempt
    assert model.asked == 1 and store.task(TASK).attempts == 2


def test_a_copy_withheld_for_want_of_its_claim_frees_the_breakers_one_probe(store):
    # Given a half-open breaker (one probe at a time) and a delivery whose copy claimed it
    now = [0.0]
    breaker = CircuitBreaker("claude", minimum_calls=1, open_for=5.0, clock=lambda: now[0])
    breaker.acquire(0)
    breaker.record_failure()  # open
    now[0] = 6.0  # half-open
    store.append(TASK, events.STARTED, {"generation": 0, "delivery": 1}, f"{TASK}:start:0:0")
    model = Model()

    # When the other copy comes, Claude is not asked for it
    handler(store, model, breaker)(delivery(0), Published())
    assert model.asked == 0

    # Then the probe it held is free for the next delivery, which is asked
    handler(store, model, breaker, hold_limit=0.1)(delivery(1), Published())
    assert model.asked == 1 and breaker.state is BreakerState.CLOSED


def test_a_finished_task_is_dropped(store):
    store.append(TASK, events.FAILED, {"error": "cancelled by someone"})
    model, published = Model(), Published()

    handler(store, model)(delivery(), published)

    assert model.asked == 0 and published == []


def test_a_transient_failure_gives_the_delivery_back_and_counts_in_the_breaker(store):
    breaker = CircuitBreaker("claude", minimum_calls=1)
    model, published = Model(ModelError("overloaded", transient=True)), Published()

    with pytest.raises(TryLater):
        handler(store, model, breaker)(delivery(), published)

    assert published.events() == ["retrying"], "the thread is told another attempt follows"
    retrying = published[-1][1]
    assert (retrying.error, retrying.attempt) == ("overloaded", 1)
    assert breaker.state is BreakerState.OPEN


def test_the_last_attempt_failing_ends_the_task_with_the_reason(store):
    published = Published()
    model = Model(ModelError("Claude answered 529: overloaded", transient=True))

    with pytest.raises(Reject):
        handler(store, model)(delivery(DELIVERY_LIMIT), published)

    ((event, message, _),) = [p for p in published if not p[2].cancelled()]
    assert event == "failed"
    assert f"gave up after {DELIVERY_LIMIT + 1} attempts" in message.error


def test_a_refused_request_fails_at_once_and_does_not_trip_the_breaker(store):
    breaker = CircuitBreaker("claude", minimum_calls=1)
    published = Published()

    with pytest.raises(Reject):
        handler(store, Model(ModelError("bad request", transient=False)), breaker)(
            delivery(), published
        )

    assert published.events() == ["failed"]
    assert breaker.state is BreakerState.CLOSED and breaker.snapshot()["calls"] == 0


def test_a_task_the_store_does_not_know_is_dead_lettered_without_asking(store):
    model, published = Model(), Published()
    body = TaskMessage("t000000404", "do it", "U1", "C1", "1.000", 1.0).encode()

    with pytest.raises(Reject, match="not in the event store"):
        handler(store, model)(SimpleNamespace(body=body, delivery_count=0), published)

    assert model.asked == 0 and published == []


def test_an_unreadable_task_is_failed_in_its_thread_and_dead_lettered(store):
    model, published = Model(), Published()
    body = b'{"kind": "task", "v": 1, "task_id": "%s", "channel": "C1", "thread_ts": "1.000"}'

    with pytest.raises(Reject):
        handler(store, model)(
            SimpleNamespace(body=body % TASK.encode(), delivery_count=0), published
        )

    assert model.asked == 0 and published.events() == ["failed"]
    failed = published[0][1]
    assert (failed.task_id, failed.thread_ts) == (TASK, "1.000")
    assert failed.error.startswith("the task could not be read")


def test_while_the_breaker_is_open_a_delivery_waits_and_is_never_claimed(store):
    breaker = CircuitBreaker("claude", minimum_calls=1, open_for=60)
    breaker.try_acquire()
    breaker.record_failure()
    stopping = threading.Event()
    stopping.set()  # the worker is stopping: give the delivery back instead of waiting
    model = Model()

    with pytest.raises(TryLater):
        handler(store, model, breaker, stopping)(delivery(), Published())

    assert model.asked == 0 and store.task(TASK).attempts == 0


class GatedModel(Model):
    """Claude's stand-in that holds each call until it is let go, and counts calls at once."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.changed = threading.Condition()
        self.now = self.most = 0

    def complete(self, prompt: str, history=(), on_text=None, ready=None) -> Completion:
        with self.changed:
            self.now += 1
            self.most = max(self.most, self.now)
            self.changed.notify_all()
        self.go.wait(10)
        with self.changed:
            self.now -= 1
        return super().complete(prompt, history, on_text, ready)

    def wait_in_flight(self, calls: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.now >= calls, timeout=10)


def submitted(store, task_id: str) -> SimpleNamespace:
    data = {"user": "U1", "channel": "C1", "prompt": f"do {task_id}"}
    store.append(task_id, events.SUBMITTED, data)
    store.append(task_id, events.POSTED, {"thread_ts": "1.000"})
    store.append(task_id, events.QUEUED, {})
    body = TaskMessage(task_id, f"do {task_id}", "U1", "C1", "1.000", 1.0).encode()
    return SimpleNamespace(body=body, delivery_count=0)


def test_more_threads_than_slots_never_ask_claude_more_than_the_slots_at_once(store):
    model, published = GatedModel(), Published()
    work = TaskHandler(store, model, CircuitBreaker("claude"), slots=2)
    tasks = [submitted(store, f"t00000010{i}") for i in range(4)]
    threads = [threading.Thread(target=work, args=(d, published)) for d in tasks]
    for thread in threads:
        thread.start()
    assert model.wait_in_flight(2), "the two slots busy, the two other tasks waiting for one"
    model.go.set()
    for thread in threads:
        thread.join(10)

    assert model.most == 2 and model.asked == 4
    assert published.events().count("completed") == 4


class WatchedSlots(threading.BoundedSemaphore):
    """The handler's slots, telling when someone waits for one."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if blocking:
            self.waiting.set()
        return super().acquire(blocking, timeout)


def test_a_task_cancelled_while_it_waits_for_a_slot_is_not_asked(store):
    model, published = GatedModel(), Published()
    work = TaskHandler(store, model, CircuitBreaker("claude"), slots=1)
    work._slots = slots = WatchedSlots(1)
    first, second = submitted(store, "t000000201"), submitted(store, "t000000202")
    busy = threading.Thread(target=work, args=(first, published))
    busy.start()
    assert model.wait_in_flight(1)
    waiting = threading.Thread(target=work, args=(second, published))
    waiting.start()
    assert slots.waiting.wait(10), "the second task waits for the slot"
    assert store.task("t000000202").attempts == 0, "a task waiting for a slot is not started"
    store.append("t000000202", events.CANCELLED, {"by": "U1"})
    model.go.set()
    busy.join(10)
    waiting.join(10)

    assert model.asked == 1, "only the first task reached Claude"
    assert published.events() == ["completed"]
    assert store.task("t000000202").attempts == 0


class Remembering(Model):
    """Claude's stand-in that keeps the history each ask came with."""

    def __init__(self) -> None:
        super().__init__()
        self.histories: list[list] = []

    def complete(self, prompt: str, history=(), on_text=None, ready=None) -> Completion:
        self.histories.append(list(history))
        return super().complete(prompt, history, on_text, ready)


TURN = "t000000002"


def reply_to_first(store) -> SimpleNamespace:
    """The first task started (its answer not recorded yet), and a reply in its thread queued."""
    store.append(TASK, events.STARTED, {"generation": 0})
    data = {"user": "U1", "channel": "C1", "prompt": "shorter", "thread_ts": "1.000"}
    store.append(TURN, events.SUBMITTED, {**data, "conversation": TASK})
    store.append(TURN, events.QUEUED, {})
    body = TaskMessage(TURN, "shorter", "U1", "C1", "1.000", 1.0).encode()
    return SimpleNamespace(body=body, delivery_count=0)


def test_a_reply_sent_as_the_answer_showed_gets_that_answer_in_its_history(store):
    # Given a reply that comes while the answer before it is being recorded
    model = Remembering()
    turn = reply_to_first(store)
    answered = {"text": "the notes", "model": "m"}
    recorder = threading.Timer(0.3, store.append, (TASK, events.ANSWERED, answered))
    recorder.start()

    # When the reply is handled
    handler(store, model)(turn, Published())
    recorder.join()

    # Then Claude gets the turn before it, with its answer
    assert model.histories == [[("do it", "the notes")]]
    assert store.task(TURN).answered


def test_a_reply_to_a_turn_never_answered_is_answered_without_it(store):
    # Given a reply to a turn whose worker was killed before it answered
    model = Remembering()

    # When the reply is handled
    handler(store, model)(reply_to_first(store), Published())

    # Then it is answered after the wait, with no history
    assert model.histories == [[]]
    assert store.task(TURN).answered
