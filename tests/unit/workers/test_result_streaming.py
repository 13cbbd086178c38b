"""The result worker streams answers natively: on the Notifier's in-memory twin (Slack's rules for
streams and sessions) and a real event store, with a clock the tests move.

What is checked is what a person sees in the thread: one answer message per task, its text
exactly the answer (nothing lost, nothing repeated), the session's status, and which way the
answer came (stream, post, update) when Slack says no.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.messages import ResultMessage, TaskMessage
from core.domain.text import INLINE_LIMIT
from core.errors import SlackError
from tests.twins.notifier import MemoryNotifier
from workers.result import handler as result_handler
from workers.result.dead import DeadLetterHandler
from workers.result.handler import REPLY_EVENT, STREAM_BURST, ResultHandler

CHANNEL, USER = "C0GENERAL", "U0OWNER"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    store = SqliteEventStore(tmp_path / "aico.db")
    yield store
    store.close()


@pytest.fixture
def slack() -> MemoryNotifier:
    return MemoryNotifier()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def results(store, slack, clock) -> ResultHandler:
    return ResultHandler(store, slack, patience=10, clock=clock)


_n = iter(range(1, 10_000))


def running_task(store, slack, prompt: str = "write the release notes") -> tuple[str, str]:
    """A task posted in its thread and claimed by a worker: (task id, thread ts)."""
    task_id = f"t{next(_n):09d}"
    thread_ts = slack.post(CHANNEL, f"Task {task_id}", [])
    store.append(task_id, events.SUBMITTED, {"user": USER, "channel": CHANNEL, "prompt": prompt})
    store.append(task_id, events.POSTED, {"thread_ts": thread_ts})
    store.append(task_id, events.QUEUED, {})
    store.append(task_id, events.STARTED, {"generation": 0})
    return task_id, thread_ts


def report(task: tuple[str, str], event: str, attempt: int = 1, **fields) -> ResultMessage:
    task_id, thread_ts = task
    return ResultMessage(
        task_id, event, CHANNEL, thread_ts, at=time.time(), attempt=attempt, **fields
    )


def answer(task, text: str, **fields) -> ResultMessage:
    return report(task, "completed", text=text, model="m", **fields)


def the_reply(slack: MemoryNotifier, thread_ts: str) -> dict:
    """The thread's one reply (the test fails if there are more or none)."""
    (reply,) = slack.replies(CHANNEL, thread_ts)
    return reply


def called(slack: MemoryNotifier, *methods: str) -> list[str]:
    return [m for m, _ in slack.calls if m in methods]


def write(results, clock, task, *pieces: str, step: float = 1.0) -> None:
    """Claude writes `pieces`, one progress report each `step` seconds (each report has the
    whole text so far, this call's pieces after the earlier calls' for the task)."""
    for piece in pieces:
        _so_far[task] = _so_far.get(task, "") + piece
        clock.now += step
        results.handle(report(task, "progress", text=_so_far[task]))


_so_far: dict[tuple[str, str], str] = {}


def test_an_answer_streams_into_one_message_that_ends_with_its_receipt(results, slack, clock):
    # Given a task that started
    task = running_task(slack=slack, store=results.store)
    results.handle(report(task, "started"))
    assert slack.replies(CHANNEL, task[1]) == [], "no placeholder: the stream starts on text"
    assert slack.sessions[(CHANNEL, task[1])]["status"] == "processing"
    assert slack.sessions[(CHANNEL, task[1])]["title"] == "write the release notes"

    # When Claude writes, then answers
    write(results, clock, task, "Once upon ", "a time & <@U1> ")
    results.handle(answer(task, "Once upon a time & <@U1> the end."))

    # Then the answer is one streamed message: its text exactly the answer (escaped, so that it
    # pings no one), the receipt and the feedback buttons under it, findable by its metadata
    reply = the_reply(slack, task[1])
    assert reply["text"] == "Once upon a time &amp; &lt;@U1&gt; the end."
    assert slack.streams[reply["ts"]]["appends"] == [
        "Once upon ",
        "a time &amp; &lt;@U1&gt; ",
        "the end.",
    ]
    assert slack.streams[reply["ts"]]["state"] == "stopped"
    assert [b["type"] for b in reply["blocks"]][-3:] == ["context", "actions", "context_actions"]
    assert reply["metadata"]["event_type"] == REPLY_EVENT
    assert called(slack, "post", "update", "start_stream", "stop_stream") == [
        "post",  # the thread's parent, by the test
        "update",  # the parent message says "Working on it"
        "start_stream",
        "stop_stream",
        "update",  # the parent message says "Done"
    ]
    assert slack.sessions[(CHANNEL, task[1])]["history"] == ["processing", "active"]
    assert results.store.task(task[0]).reply_ts == reply["ts"]


def test_appends_are_buffered_and_the_stop_carries_what_was_held_back(results, slack, clock):
    task = running_task(results.store, slack)
    results.handle(report(task, "started"))

    write(results, clock, task, "a", "b", "c", "d", step=0.1)  # faster than one append a 0.5 s
    results.handle(answer(task, "abcde"))

    reply = the_reply(slack, task[1])
    assert reply["text"] == "abcde"
    assert len(slack.streams[reply["ts"]]["appends"]) < 5, "not one call per report"


def test_beyond_the_budget_of_streams_answers_are_posted_without_one(results, slack, clock):
    # Given more tasks writing at once than the workspace's budget of streams
    tasks = [running_task(results.store, slack) for _ in range(STREAM_BURST + 3)]

    # When each writes and answers, with no time passing
    for n, task in enumerate(tasks):
        results.handle(report(task, "progress", text=f"answer {n} so far"))
    for n, task in enumerate(tasks):
        results.handle(answer(task, f"answer {n} so far, and done"))

    # Then the budget's worth streamed, the rest were posted (no wait), each answer once
    streamed = {s["thread_ts"] for s in slack.streams.values()}
    assert len(streamed) == STREAM_BURST
    for n, task in enumerate(tasks):
        reply = the_reply(slack, task[1])
        assert f"answer {n} so far, and done" in reply["text"] + str(reply["blocks"])


def test_a_rate_limited_start_posts_the_answer_at_once(results, slack, clock):
    task = running_task(results.store, slack)
    slack.fail_next("start_stream", code="ratelimited")

    began = time.monotonic()
    write(results, clock, task, "first words")
    results.handle(answer(task, "first words and the rest"))

    assert time.monotonic() - began < 1, "nothing waited for the rate limit"
    reply = the_reply(slack, task[1])
    assert "first words and the rest" in str(reply["blocks"])
    assert slack.streams == {}


def test_where_streaming_is_refused_the_glimpses_come_back_and_it_is_not_asked_again(
    results, slack, clock
):
    slack.streams_enabled = False
    first, second = running_task(results.store, slack), running_task(results.store, slack)

    write(results, clock, first, "one")
    write(results, clock, second, "two", step=3)
    results.handle(answer(first, "one done"))
    results.handle(answer(second, "two done"))

    assert called(slack, "start_stream") == ["start_stream"], "asked once, then remembered"
    for task, text in ((first, "one done"), (second, "two done")):
        reply = the_reply(slack, task[1])
        assert text in str(reply["blocks"])


def test_a_stream_slack_ends_rolls_over_to_updates_of_the_same_message(results, slack, clock):
    # Given an answer streaming
    task = running_task(results.store, slack)
    write(results, clock, task, "The first part. ")
    ts = the_reply(slack, task[1])["ts"]

    # When Slack ends the stream (its time limit) while Claude goes on writing
    slack.end_stream(ts)
    write(results, clock, task, "The second part. ", step=3)
    results.handle(answer(task, "The first part. The second part. The end."))

    # Then the same message shows the whole answer once, and nothing was posted
    reply = the_reply(slack, task[1])
    assert reply["ts"] == ts
    shown = str(reply["blocks"])
    assert shown.count("The first part.") == 1 and "The end." in shown
    assert reply["metadata"]["event_type"] == REPLY_EVENT
    assert called(slack, "post") == ["post"], "only the test's parent"


def test_an_append_whose_outcome_is_unknown_rolls_over_without_repeating_text(
    results, slack, clock
):
    task = running_task(results.store, slack)
    write(results, clock, task, "Alpha. ")
    slack.lose_answer_next("append_stream")  # Slack took it, the answer was lost

    write(results, clock, task, "Beta. ", step=3)
    results.handle(answer(task, "Alpha. Beta. Gamma."))

    reply = the_reply(slack, task[1])
    assert str(reply["blocks"]).count("Beta.") == 1 and "Gamma." in str(reply["blocks"])
    assert slack.streams[reply["ts"]]["state"] == "stopped"


def test_a_retried_attempt_takes_back_the_half_answer_and_ends_in_the_same_message(
    results, slack, clock
):
    # Given attempt 1 streaming half an answer, then failing
    task = running_task(results.store, slack)
    results.handle(report(task, "started"))
    write(results, clock, task, "the first half of")
    ts = the_reply(slack, task[1])["ts"]
    results.handle(report(task, "retrying", error="overloaded_error"))

    # Then its stream is stopped and the message says a new attempt follows
    reply = the_reply(slack, task[1])
    assert "the first half of" not in str(reply["blocks"]) and "trying again" in reply["text"]
    assert slack.streams[ts]["state"] == "stopped"
    assert slack.sessions[(CHANNEL, task[1])]["status"] == "processing", "still working"

    # When attempt 2 writes and answers
    results.store.append(task[0], events.STARTED, {"generation": 0, "delivery": 2})
    results.handle(report(task, "started", attempt=2))
    write(results, clock, task, "a whole new answer", step=3)
    results.handle(report(task, "completed", attempt=2, text="a whole new answer.", model="m"))

    # Then it is shown in that same message: one answer in the thread
    reply = the_reply(slack, task[1])
    assert reply["ts"] == ts and "a whole new answer." in str(reply["blocks"])
    assert len(slack.streams) == 1


def test_a_lost_answer_to_the_start_finds_the_stream_instead_of_starting_another(
    results, slack, clock
):
    task = running_task(results.store, slack)
    slack.lose_answer_next("start_stream")  # the stream began; the worker never heard its ts

    write(results, clock, task, "Hello")  # tried again after the transient failure
    write(results, clock, task, " world")
    results.handle(answer(task, "Hello world"))

    reply = the_reply(slack, task[1])
    assert reply["text"] == "Hello world" and len(slack.streams) == 1
    assert called(slack, "find_stream") == ["find_stream"]


def test_a_worker_that_died_between_start_and_record_leaves_one_message(store, slack, clock):
    # Given a worker that started a stream and died before recording its ts
    task = running_task(store, slack)
    slack.lose_answer_next("start_stream")
    with pytest.raises(SlackError):
        ResultHandler(store, slack, patience=0, clock=clock).handle(
            report(task, "progress", text="Hello")
        )

    # When a new worker gets the same report again, then the rest
    fresh = ResultHandler(store, slack, patience=10, clock=clock)
    fresh.handle(report(task, "progress", text="Hello"))
    clock.now += 1
    fresh.handle(report(task, "progress", text="Hello there"))
    fresh.handle(answer(task, "Hello there, done"))

    # Then the stream it had started is the one answer
    reply = the_reply(slack, task[1])
    assert reply["text"] == "Hello there, done" and len(slack.streams) == 1


def test_a_restarted_worker_finishes_a_recorded_stream_by_updating_it(store, slack, clock):
    task = running_task(store, slack)
    ResultHandler(store, slack, clock=clock).handle(report(task, "progress", text="Partial "))

    fresh = ResultHandler(store, slack, clock=clock)  # memory lost: what the stream holds
    fresh.handle(answer(task, "Partial answer, finished."))

    reply = the_reply(slack, task[1])
    assert "Partial answer, finished." in str(reply["blocks"])
    assert str(reply["blocks"]).count("Partial") == 1
    assert slack.streams[reply["ts"]]["state"] == "stopped"


def test_a_cancelled_task_stops_its_stream_and_its_session(results, slack, clock):
    task = running_task(results.store, slack)
    results.handle(report(task, "started"))
    write(results, clock, task, "some words")
    results.store.append(task[0], events.CANCELLED, {"by": USER})

    results.handle(report(task, "cancelled"))

    reply = the_reply(slack, task[1])
    assert "was cancelled" in reply["text"] and "some words" not in str(reply["blocks"])
    assert slack.streams[reply["ts"]]["state"] == "stopped"
    assert slack.sessions[(CHANNEL, task[1])]["status"] == "active"


def test_a_rate_limited_stop_replaces_the_stream_with_a_posted_answer(results, slack, clock):
    task = running_task(results.store, slack)
    write(results, clock, task, "Most of it")
    slack.fail_next("stop_stream", code="ratelimited")

    results.handle(answer(task, "Most of it, and all of it"))

    reply = the_reply(slack, task[1])
    assert "Most of it, and all of it" in str(reply["blocks"])
    assert reply["metadata"]["event_type"] == REPLY_EVENT
    assert results.store.task(task[0]).reply_ts == reply["ts"]


def test_a_long_answer_streams_its_start_and_ends_with_the_whole_as_a_file(results, slack, clock):
    task = running_task(results.store, slack)
    long = "word " * (INLINE_LIMIT // 4)
    write(results, clock, task, long[:500], long[500:])

    results.handle(answer(task, long))

    replies = slack.replies(CHANNEL, task[1])
    streamed, shared = replies
    assert len(streamed["text"]) <= INLINE_LIMIT and long.startswith(streamed["text"])
    assert "is in `aico-" in str(streamed["blocks"])
    assert [f["content"] for f in shared["files"]] == [long]


def test_where_sessions_are_refused_the_status_line_says_it_and_that_is_remembered(
    results, slack, clock
):
    slack.sessions_enabled = False
    first, second = running_task(results.store, slack), running_task(results.store, slack)

    for task in (first, second):
        results.handle(report(task, "started"))
        results.handle(answer(task, "done"))

    assert called(slack, "set_session") == ["set_session"]
    assert [(s["thread_ts"], s["status"]) for s in slack.statuses] == [
        (first[1], "is working on it…"),
        (first[1], ""),
        (second[1], "is working on it…"),
        (second[1], ""),
    ]


def test_a_dead_lettered_task_leaves_processing(store, slack, clock):
    task = running_task(store, slack)
    results = ResultHandler(store, slack, clock=clock)
    results.handle(report(task, "started"))
    body = TaskMessage(task[0], "do it", USER, CHANNEL, task[1], 1.0).encode()
    dead = SimpleNamespace(body=body, message_id=task[0], death_reason="delivery_limit")

    DeadLetterHandler(store, ResultHandler(store, slack, clock=clock))(dead, None)

    assert store.task(task[0]).status == "failed"
    assert slack.sessions[(CHANNEL, task[1])]["status"] == "active"


def test_progress_of_a_task_with_a_stream_budget_spent_keeps_the_two_second_pace(
    store, slack, clock, monkeypatch
):
    monkeypatch.setattr(result_handler, "STREAM_BURST", 0)
    results = ResultHandler(store, slack, clock=clock)
    task = running_task(store, slack)

    write(results, clock, task, *[f"w{i} " for i in range(10)], step=0.0)

    assert called(slack, "start_stream") == []
    assert len(called(slack, "post", "update")) <= 1 + result_handler.PROGRESS_BURST
