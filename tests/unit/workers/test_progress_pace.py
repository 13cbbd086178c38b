"""The pace of the answer streaming into its result message.

README, "Progress": glimpses of the answer come every 2 s at most per task, and at most one
`chat.update` glimpse every 2 s in all (after a short burst); a glimpse beyond that is skipped,
never the answer. The task worker keeps the per-task pace, the result worker the overall one.
Both run here against a real event store; Slack is the Notifier port in memory.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

import workers.result.handler as result_handler
import workers.task.handler as task_handler
from core.adapters.claude import Completion
from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.breaker import CircuitBreaker
from core.domain.messages import ResultMessage, TaskMessage
from workers.result.handler import PROGRESS_BURST, PROGRESS_RATE, Allowance, ResultHandler
from workers.task.handler import PROGRESS_AFTER, PROGRESS_EVERY, TaskHandler

WRITING = ":writing_hand: Claude is writing"  # how a glimpse of the answer starts
# Reports name their attempt (1, 2, …) where the message has that field: a glimpse of an older
# attempt is not shown. Each task here is in its first attempt.
FIRST_ATTEMPT = (
    {"attempt": 1} if "attempt" in {f.name for f in dataclasses.fields(ResultMessage)} else {}
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MemorySlack:
    """The Notifier port in memory: every call recorded, messages by ts."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []  # (method, ts, text)
        self.messages: dict[str, dict] = {}
        self._ts = (f"{n}.000000" for n in itertools.count(100))

    def post(self, channel, text, blocks, thread_ts=None, metadata=None) -> str:
        ts = next(self._ts)
        self.messages[ts] = {"thread_ts": thread_ts, "text": text, "metadata": metadata or {}}
        self.calls.append(("post", ts, text))
        return ts

    def update(self, channel, ts, text, blocks) -> None:
        self.messages.setdefault(ts, {"thread_ts": None, "metadata": {}})["text"] = text
        self.calls.append(("update", ts, text))

    def find_message(self, channel, event_type, key, thread_ts="", generation=None) -> str:
        return ""

    def set_status(self, channel, thread_ts, status) -> None:
        self.calls.append(("status", thread_ts, status))

    def has_file(self, channel, thread_ts, filename) -> bool:
        return False

    def upload(self, channel, thread_ts, content, filename, comment) -> None:
        self.calls.append(("upload", thread_ts, filename))

    def ephemeral(self, channel, user, text, thread_ts="") -> None:
        self.calls.append(("ephemeral", thread_ts, text))

    def glimpses(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] in ("post", "update") and c[2].startswith(WRITING)]

    def result_message(self, thread_ts: str) -> str:
        (reply,) = [m for m in self.messages.values() if m["thread_ts"] == thread_ts]
        return reply["text"]


@pytest.fixture
def store(tmp_path):
    store = SqliteEventStore(tmp_path / "aico.db")
    yield store
    store.close()


def running_task(store, n: int) -> tuple[str, str]:
    """Task n, submitted, posted (its thread is `<n>.000`) and started; (task id, thread ts)."""
    task_id, thread_ts = f"t{n:09d}", f"{n}.000"
    store.append(task_id, events.SUBMITTED, {"user": "U1", "channel": "C1", "prompt": "write"})
    store.append(task_id, events.POSTED, {"thread_ts": thread_ts})
    store.append(task_id, events.QUEUED, {})
    store.append(task_id, events.STARTED, {"generation": 0})
    return task_id, thread_ts


def report(task_id: str, thread_ts: str, event: str, **fields) -> ResultMessage:
    return ResultMessage(task_id, event, "C1", thread_ts, at=time.time(), **FIRST_ATTEMPT, **fields)


# -- the result worker: one glimpse every 2 s in all ---------------------------------------


def test_the_allowance_gives_a_burst_then_one_every_two_seconds_and_never_waits():
    clock = Clock()
    allowance = Allowance(PROGRESS_RATE, PROGRESS_BURST, clock=clock)

    assert [allowance.take() for _ in range(PROGRESS_BURST + 3)] == [True] * PROGRESS_BURST + [
        False
    ] * 3
    clock.now += 1.9
    assert not allowance.take(), "not yet 2 s since the burst ran out"
    clock.now += 0.1
    assert [allowance.take(), allowance.take()] == [True, False]

    clock.now += 3600  # a long quiet spell earns a burst, not an hour's worth
    assert sum(allowance.take() for _ in range(100)) == PROGRESS_BURST


def test_a_burst_of_progress_for_many_tasks_shows_a_few_glimpses_and_every_answer(
    store, monkeypatch
):
    # Given the result worker's allowance on a clock that does not move during the burst
    clock = Clock()
    monkeypatch.setattr(result_handler, "Allowance", functools.partial(Allowance, clock=clock))
    slack = MemorySlack()
    results = ResultHandler(store, slack)
    tasks = [running_task(store, n) for n in range(1, 7)]

    # When 6 tasks report 10 glimpses each at once
    for i in range(10):
        for task_id, thread_ts in tasks:
            results.handle(report(task_id, thread_ts, "progress", text=f"part {i} of it"))

    # Then only the allowance's burst of them reaches Slack
    assert len(slack.glimpses()) == PROGRESS_BURST

    # And when every task completes right after, with the allowance spent, each answer shows
    for n, (task_id, thread_ts) in enumerate(tasks):
        results.handle(report(task_id, thread_ts, "completed", text=f"answer {n}", model="m"))
    for n, (task_id, thread_ts) in enumerate(tasks):
        assert slack.result_message(thread_ts) == f"answer {n}", "one message, the answer"
        assert store.task(task_id).status == "done"
    assert len(slack.glimpses()) == PROGRESS_BURST, "no glimpse was owed and shown later"

    # And 2 s later, one glimpse more may go
    later = running_task(store, 7)
    clock.now += 1 / PROGRESS_RATE
    for i in range(3):
        results.handle(report(*later, "progress", text=f"later part {i}"))
    assert len(slack.glimpses()) == PROGRESS_BURST + 1


def test_on_the_real_clock_a_burst_of_glimpses_stays_within_the_pace(store):
    slack = MemorySlack()
    results = ResultHandler(store, slack)
    tasks = [running_task(store, n) for n in range(1, 5)]

    began = time.monotonic()
    for i in range(15):
        for task_id, thread_ts in tasks:
            results.handle(report(task_id, thread_ts, "progress", text=f"part {i}"))
    elapsed = time.monotonic() - began
    for task_id, thread_ts in tasks:
        results.handle(report(task_id, thread_ts, "completed", text="done", model="m"))

    # At most the burst, and one more for every 2 s the burst took: whatever this machine's speed
    assert 1 <= len(slack.glimpses()) <= PROGRESS_BURST + int(elapsed * PROGRESS_RATE) + 1
    assert [slack.result_message(thread_ts) for _, thread_ts in tasks] == ["done"] * 4


# -- the task worker: a glimpse every 2 s at most per task ---------------------------------


class Published(list):
    """The task worker's publish: records each report with the fake clock's time."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, queue, message, message_id, delay=0.0):
        future: Future[None] = Future()
        if not delay:
            future.set_result(None)
        self.append((self.clock.now, message.event, message.text))
        return future


class StreamingModel:
    """Claude writing its answer a word every 0.25 s for 10 s, on the fake clock."""

    def __init__(self, clock: Clock, words: int = 40, step: float = 0.25) -> None:
        self.clock, self.words, self.step = clock, words, step

    def complete(self, prompt, history=(), on_text=None, ready=None) -> Completion:
        assert ready is None or ready(), "asked for an attempt that was not claimed"
        pieces: list[str] = []
        for i in range(self.words):
            self.clock.now += self.step
            pieces.append(f"w{i} ")
            if on_text is not None:
                on_text(list(pieces))
        return Completion("".join(pieces), "claude-test", {"output_tokens": self.words}, 1.0)


def test_a_task_worker_reports_a_glimpse_every_two_seconds_at_most(store, monkeypatch):
    # Given the task worker's clock in the test's hands
    clock = Clock()
    fake_time = SimpleNamespace(monotonic=clock, time=time.time, sleep=time.sleep)
    monkeypatch.setattr(task_handler, "time", fake_time)
    task_id, thread_ts = "t000000001", "1.000"
    store.append(task_id, events.SUBMITTED, {"user": "U1", "channel": "C1", "prompt": "write"})
    store.append(task_id, events.POSTED, {"thread_ts": thread_ts})
    store.append(task_id, events.QUEUED, {})
    body = TaskMessage(task_id, "write", "U1", "C1", thread_ts, 1.0).encode()
    published = Published(clock)
    begin = clock.now

    # When Claude streams 40 pieces over 10 s
    handler = TaskHandler(store, StreamingModel(clock), CircuitBreaker("claude"))
    handler(SimpleNamespace(body=body, delivery_count=0), published)

    # Then a glimpse went out at most every 2 s, none in the first PROGRESS_AFTER, each with
    # the answer so far; and the answer itself after them
    glimpses = [(at - begin, text) for at, event, text in published if event == "progress"]
    times = [at for at, _ in glimpses]
    assert 3 <= len(glimpses) <= 10 / PROGRESS_EVERY
    assert times[0] >= PROGRESS_AFTER
    assert all(b - a >= PROGRESS_EVERY for a, b in itertools.pairwise(times))
    for at, text in glimpses:
        assert text == "".join(f"w{i} " for i in range(round(at / 0.25)))
    assert [event for _, event, _ in published][-1] == "completed"
