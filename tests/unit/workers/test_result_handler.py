"""The result worker's one-message rule, against a real event store and an in-memory Slack."""

from __future__ import annotations

import itertools
import json
import time
from types import SimpleNamespace

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.messages import ResultMessage, TaskMessage
from core.domain.pricing import Prices
from core.domain.text import INLINE_LIMIT
from core.errors import SlackError
from core.slack.metadata import is_about
from workers.result.dead import DeadLetterHandler
from workers.result.handler import REPLY_EVENT, ResultHandler

TASK = "t000000001"


class MemorySlack:
    """The Notifier port in memory: messages by ts, with their metadata."""

    def __init__(self) -> None:
        parent = {"text": "Task t000000001", "thread_ts": None, "metadata": {}}
        self.messages: dict[str, dict] = {"1.000": parent}
        self.posts = 0
        self.statuses: list[str] = []
        self._ts = (f"{n}.000" for n in itertools.count(100))

    def post(self, channel, text, blocks, thread_ts=None, metadata=None) -> str:
        self.posts += 1
        ts = next(self._ts)
        message = {"text": text, "blocks": blocks, "thread_ts": thread_ts, "metadata": metadata}
        self.messages[ts] = {**message, "metadata": metadata or {}}
        return ts

    def update(self, channel, ts, text, blocks) -> None:
        self.messages[ts].update(text=text, blocks=blocks)

    def find_message(self, channel, event_type, key, thread_ts="", generation=None) -> str:
        found = (ts for ts, m in self.messages.items() if is_about(m, event_type, key, generation))
        return next(found, "")

    def set_status(self, channel, thread_ts, status) -> None:
        self.statuses.append(status)

    def has_file(self, channel, thread_ts, filename) -> bool:
        return False

    def replies(self) -> list[str]:
        return [m["text"] for m in self.messages.values() if m["thread_ts"] == "1.000"]


@pytest.fixture
def store(tmp_path):
    store = SqliteEventStore(tmp_path / "aico.db")
    store.append(TASK, events.SUBMITTED, {"user": "U1", "channel": "C1", "prompt": "do it"})
    store.append(TASK, events.POSTED, {"thread_ts": "1.000"})
    store.append(TASK, events.QUEUED, {})
    store.append(TASK, events.STARTED, {"generation": 0})
    yield store
    store.close()


def report(event: str, redelivered=False, **fields) -> SimpleNamespace:
    message = ResultMessage(TASK, event, "C1", "1.000", at=time.time(), **fields)
    return SimpleNamespace(body=message.encode(), redelivered=redelivered)


class LosingSlack(MemorySlack):
    """Posts the next message, then fails as a connection lost before Slack's answer would."""

    def __init__(self) -> None:
        super().__init__()
        self.lose = 1

    def post(self, channel, text, blocks, thread_ts=None, metadata=None) -> str:
        ts = super().post(channel, text, blocks, thread_ts, metadata)
        if self.lose:
            self.lose -= 1
            raise SlackError("connection_lost", transient=True)
        return ts


def recorded(store) -> list[str]:
    return [e.type for e in store.events(TASK)]


def receipt_of(reply: dict) -> str:
    """The line under an answer: its last context block (the feedback buttons come after)."""
    contexts = [b for b in reply["blocks"] if b["type"] == "context"]
    return contexts[-1]["elements"][0]["text"]


def test_working_then_the_answer_is_one_message(store):
    slack = MemorySlack()
    results = ResultHandler(store, slack)

    results(report("started"), None)
    results(report("completed", text="the answer", model="m"), None)

    assert slack.posts == 1
    assert slack.replies() == ["the answer"]
    assert store.task(TASK).status == "done"
    assert slack.statuses == ["is working on it…", ""], "progress shown, then taken away"


def test_the_receipt_shows_the_cost_and_the_event_records_it(store):
    # Given prices for the model, and an answer from its dated id
    slack = MemorySlack()
    results = ResultHandler(store, slack, prices=Prices.parse("claude-x=3/15"))
    usage = {"input_tokens": 1_000, "output_tokens": 2_000}

    # When its answer is reported
    results(report("completed", text="a", model="claude-x-2025", usage=usage, claude_ms=1500), None)

    # Then the receipt under the answer says what it cost, and so does the event
    (reply,) = [m for m in slack.messages.values() if m["thread_ts"] == "1.000"]
    assert receipt_of(reply) == ("claude-x-2025 · 1,000 in / 2,000 out tokens · $0.0330 · 1.5 s")
    (completed,) = [e for e in store.events(TASK) if e.type == events.COMPLETED]
    assert completed.data["cost_usd"] == pytest.approx(0.033)


def test_an_answer_from_an_unpriced_model_says_its_cost_is_unknown(store):
    slack = MemorySlack()
    usage = {"input_tokens": 1, "output_tokens": 1}
    ResultHandler(store, slack)(report("completed", text="a", model="m", usage=usage), None)

    (reply,) = [m for m in slack.messages.values() if m["thread_ts"] == "1.000"]
    assert "· cost unknown ·" in receipt_of(reply)
    (completed,) = [e for e in store.events(TASK) if e.type == events.COMPLETED]
    assert completed.data["cost_usd"] is None


def test_a_post_whose_outcome_was_lost_is_found_not_repeated(store):
    # Given a worker that posted the result message but died before recording its ts
    slack = MemorySlack()
    store.append(TASK, events.REPLY_PENDING, {})
    metadata = {"event_type": REPLY_EVENT, "event_payload": {"task_id": TASK}}
    slack.post("C1", "Working on it", [], "1.000", metadata)

    # When the report is handled again
    ResultHandler(store, slack)(report("completed", text="the answer"), None)

    # Then that message is completed, and nothing else is posted
    assert slack.posts == 1 and slack.replies() == ["the answer"]


def test_an_intent_without_a_message_posts_it(store):
    slack = MemorySlack()
    store.append(TASK, events.REPLY_PENDING, {})  # the post itself never reached Slack

    ResultHandler(store, slack)(report("completed", text="the answer"), None)

    assert slack.posts == 1 and slack.replies() == ["the answer"]


def test_the_first_attempts_answer_is_posted_with_one_record_after_it(store):
    slack = MemorySlack()

    ResultHandler(store, slack)(report("completed", text="the answer", first=True), None)

    assert slack.posts == 1 and slack.replies() == ["the answer"]
    assert events.REPLY_PENDING not in recorded(store)
    (ts,) = [ts for ts, m in slack.messages.items() if m["thread_ts"] == "1.000"]
    assert store.task(TASK).reply_ts == ts and store.task(TASK).status == "done"


def test_a_first_answer_delivered_again_after_a_crash_is_found_not_posted_twice(store):
    # Given a worker that posted the first attempt's answer and died before recording anything
    slack = MemorySlack()
    metadata = {"event_type": REPLY_EVENT, "event_payload": {"task_id": TASK}}
    slack.post("C1", "the answer", [], "1.000", metadata)

    # When the broker delivers its report again (marked redelivered) to another worker
    again = report("completed", redelivered=True, text="the answer", first=True)
    ResultHandler(store, slack)(again, None)

    # Then that message is the answer, and nothing else is posted
    assert slack.posts == 1 and slack.replies() == ["the answer"]
    assert store.task(TASK).status == "done"


def test_a_first_answer_whose_post_lost_its_answer_is_found_not_posted_twice(store):
    slack = LosingSlack()  # the post happens; the worker hears only that the connection broke

    ResultHandler(store, slack)(report("completed", text="the answer", first=True), None)

    assert slack.posts == 1 and slack.replies() == ["the answer"]
    assert store.task(TASK).status == "done"


def test_a_later_report_of_an_answer_looks_for_a_first_one_posted_without_its_record(store):
    # Given the first report's post, made and never recorded (its worker died)
    slack = MemorySlack()
    metadata = {"event_type": REPLY_EVENT, "event_payload": {"task_id": TASK}}
    slack.post("C1", "the answer", [], "1.000", metadata)

    # When another report of the answer comes first (a task worker that answered again)
    ResultHandler(store, slack)(report("completed", text="the answer, again"), None)

    # Then the one message shows it
    assert slack.posts == 1 and slack.replies() == ["the answer, again"]


def test_a_retried_tasks_answer_never_takes_the_earlier_generations_message(store):
    # Given a task that failed (its failure shown in the thread) and was retried
    slack = MemorySlack()
    results = ResultHandler(store, slack)
    results(report("failed", error="Claude refused"), None)
    store.append(TASK, events.RETRIED, {"by": "U1"})
    store.append(TASK, events.QUEUED, {})
    store.append(TASK, events.STARTED, {"generation": 1})

    # When the new generation's answer comes in a report that must look before posting
    results(report("completed", redelivered=True, text="the answer", first=True), None)

    # Then the failure stays as it was, and the answer is a message of its own
    assert [r.split(":")[0] for r in slack.replies()][1:] == ["the answer"]
    assert "the answer" not in slack.replies()[0]
    assert store.task(TASK).status == "done"


def test_a_dead_lettered_task_with_a_recorded_answer_gets_its_answer(store):
    slack = MemorySlack()
    answer = {"text": "the answer", "model": "m", "usage": {}, "claude_ms": 5.0}
    store.append(TASK, events.ANSWERED, answer)
    body = TaskMessage(TASK, "do it", "U1", "C1", "1.000", 1.0).encode()
    dead = SimpleNamespace(body=body, message_id=TASK, death_reason="delivery_limit")

    DeadLetterHandler(store, ResultHandler(store, slack))(dead, None)

    assert slack.replies() == ["the answer"] and store.task(TASK).status == "done"


def test_a_dead_lettered_task_without_an_answer_is_failed_with_the_reason(store):
    slack = MemorySlack()
    body = TaskMessage(TASK, "do it", "U1", "C1", "1.000", 1.0).encode()
    dead = SimpleNamespace(body=body, message_id=TASK, death_reason="delivery_limit")

    DeadLetterHandler(store, ResultHandler(store, slack))(dead, None)

    (reply,) = slack.replies()
    assert "no attempt finished" in reply and store.task(TASK).status == "failed"


def test_a_message_rejected_on_purpose_is_left_alone(store):
    slack = MemorySlack()
    body = TaskMessage(TASK, "do it", "U1", "C1", "1.000", 1.0).encode()
    dead = SimpleNamespace(body=body, message_id=TASK, death_reason="rejected")

    DeadLetterHandler(store, ResultHandler(store, slack))(dead, None)

    assert slack.posts == 0 and store.task(TASK).status == "running"


def shown(slack: MemorySlack) -> str:
    """Everything the task's one result message shows."""
    (reply,) = [m for m in slack.messages.values() if m["thread_ts"] == "1.000"]
    return json.dumps(reply["blocks"])


def test_an_attempt_that_broke_off_takes_back_its_half_answer(store):
    # Given an attempt that showed part of its answer, then failed
    slack = MemorySlack()
    results = ResultHandler(store, slack)
    results(report("started", attempt=1), None)
    results(report("progress", text="the first half of", attempt=1), None)

    # When the task worker says it is trying again
    results(
        report("retrying", error="Claude's answer broke off (overloaded_error)", attempt=1), None
    )

    # Then the half-answer is gone from the thread, which says a new attempt follows
    assert "the first half of" not in shown(slack)
    assert "trying again" in shown(slack) and "overloaded_error" in shown(slack)
    assert slack.posts == 1


def test_a_glimpse_of_an_earlier_attempt_never_shows_over_a_later_one(store):
    slack = MemorySlack()
    results = ResultHandler(store, slack)
    results(report("started", attempt=1), None)
    store.append(TASK, events.STARTED, {"generation": 0, "delivery": 2})  # attempt 2 claimed
    results(report("started", attempt=2), None)

    results(report("progress", text="stale words of attempt one", attempt=1), None)
    results(report("progress", text="fresh words of attempt two", attempt=2), None)

    assert "stale words" not in shown(slack) and "fresh words" in shown(slack)


def test_an_answer_cut_at_the_length_limit_says_so_in_the_thread_and_the_receipt(store):
    slack = MemorySlack()
    ResultHandler(store, slack)(
        report("completed", text="the start of it", model="m", stop_reason="max_tokens"), None
    )
    assert "the start of it" in shown(slack) and "AICO_MAX_TOKENS" in shown(slack)
    assert "cut at the length limit" in shown(slack)
    assert store.task(TASK).status == "done"


def test_claude_declining_is_shown_as_such_not_as_an_error(store):
    slack = MemorySlack()
    ResultHandler(store, slack)(
        report("completed", text="I can't help with that.", model="m", stop_reason="refusal"),
        None,
    )
    assert "Claude declined this task" in shown(slack) and "I can't help" in shown(slack)
    assert "failed" not in shown(slack)


class LateSharingSlack(MemorySlack):
    """Slack as it shares an upload: a moment after the upload is complete. The first upload's
    answer is lost (the call worked, the connection dropped before the answer came)."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads = 0
        self.looks_before_shared = 0

    def upload(self, channel, thread_ts, content, filename, comment) -> None:
        self.uploads += 1
        self.looks_before_shared = 2  # shared only after two more looks
        if self.uploads == 1:
            raise SlackError("connection_error", "Slack unreachable", transient=True)

    def has_file(self, channel, thread_ts, filename) -> bool:
        if not self.uploads:
            return False
        self.looks_before_shared -= 1
        return self.looks_before_shared < 0


def test_an_upload_whose_answer_was_lost_is_looked_for_before_it_is_made_again(store):
    # Given an answer too long for a message, and Slack losing the answer to its upload
    slack = LateSharingSlack()
    results = ResultHandler(store, slack, patience=30)

    # When the result worker tries again
    results(report("completed", text="x " * INLINE_LIMIT, model="m"), None)

    # Then it found the file Slack shared late, instead of uploading it twice
    assert slack.uploads == 1
    assert store.task(TASK).status == "done"


def test_a_report_that_comes_before_the_thread_is_recorded_goes_to_the_reports_thread(tmp_path):
    # Given a task queued while the relay was still recording its parent's ts (the message
    # carries the thread; the store does not know it yet)
    store = SqliteEventStore(tmp_path / "early.db")
    store.append(TASK, events.SUBMITTED, {"user": "U1", "channel": "C1", "prompt": "do it"})
    store.append(TASK, events.STARTED, {"generation": 0})
    slack = MemorySlack()
    results = ResultHandler(store, slack)

    # When its progress and answer are reported
    results(report("started"), None)
    results(report("completed", text="the answer", model="m"), None)

    # Then they are in the thread of the report, as one message, and the parent says Done
    assert slack.posts == 1
    assert slack.replies() == ["the answer"]
    assert store.task(TASK).status == "done"
    assert slack.messages["1.000"]["text"].startswith(
        f"Task {TASK} from <@U1>: :white_check_mark: Done"
    )
    store.close()


def test_an_answer_posted_anew_is_recorded_with_the_completion(store):
    slack = MemorySlack()
    results = ResultHandler(store, slack)

    results(report("completed", text="the answer", model="m"), None)

    # its intent before the post, then one append that says where it is and that it is done
    (ts,) = [ts for ts, m in slack.messages.items() if m["thread_ts"] == "1.000"]
    kinds = [e.type for e in store.events(TASK)]
    assert kinds[-2:] == [events.REPLY_PENDING, events.COMPLETED]
    assert store.task(TASK).reply_ts == ts

    # and a copy of the report that comes again finds the task done: nothing posted again
    results(report("completed", text="the answer", model="m"), None)
    assert slack.posts == 1
