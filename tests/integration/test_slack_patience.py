"""Slack outages (README "Slack outages"): posts that fail because Slack is failing (5xx) or
unreachable are tried again with backoff (1, 2, 4 … 30 s) for up to 20 minutes, and a task's
answer still arrives in its thread, once, when Slack is back.

The stack's processes keep their SLACK_API_URL: "unreachable" is the fake Slack's server stopped,
and started again on the same port with the same workspace, as Slack's would be after an outage.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

import core.slack.patience
from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.errors import SlackError
from core.slack.patience import MAX_WAIT, SLACK_PATIENCE, with_patience
from tests.integration.stack import Stack, fresh_vhost, wait_until
from tests.integration.test_e2e import CHANNEL, parent_of, task_id_of, wait_for_answer

PROMPT = "weather the storm"
ANSWER = f"Answer to: {PROMPT}"


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude):
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude).start()
    yield running
    running.stop()


def recorded(stack, task_id: str) -> list[str]:
    """The types of the task's events in the event store, oldest first."""
    store = SqliteEventStore(stack.workdir / "data" / "aico.db")
    try:
        return [e.type for e in store.events(task_id)]
    finally:
        store.close()


def answered_once(slack, task_id: str) -> dict:
    """The task's parent once its thread shows the answer with its receipt (not a glimpse of it
    being written); the thread must hold just that one message."""

    def final(reply: dict) -> bool:  # a streamed answer's text is the message's, not its blocks'
        shown = reply.get("text", "") + json.dumps(reply["blocks"])
        return ANSWER in shown and " out tokens" in shown

    def answered():
        parent = parent_of(slack, task_id)
        replies = slack.replies(CHANNEL, parent["ts"]) if parent else []
        return parent if any(final(r) for r in replies) else None

    parent = slack.wait_for(answered, 45)
    replies = slack.replies(CHANNEL, parent["ts"])
    assert len(replies) == 1, [r["text"] for r in replies]
    assert len(slack.messages(CHANNEL)) == 1, "one parent message"
    return parent


def test_slack_failing_with_5xx_the_answer_arrives_once_when_it_recovers(stack, slack, claude):
    # Given a task Claude is working on (its parent message is posted)
    claude.latency = 2.0
    task_id = task_id_of(stack.command(f"task {PROMPT}")[1])
    claude.wait_for(lambda fake: fake.in_flight == 1, timeout=20)
    before = len(slack.calls)

    # When Slack answers 503 to the next posts and 500 to the next updates
    slack.fail_next("chat.postMessage", count=3, status=503)
    slack.fail_next("chat.update", count=3, status=500)

    # Then the answer arrives in the thread once Slack recovers: one result message, Done
    answered_once(slack, task_id)
    _parent, replies = wait_for_answer(slack, task_id, timeout=20)
    assert len(replies) == 1
    tried = [c for c in slack.calls[before:] if c.method in ("chat.postMessage", "chat.update")]
    assert len(tried) >= 4, "Slack's failures were met, and tried again"
    assert len(claude.calls) == 1, "Slack's trouble cost no second Claude call"


def test_slack_unreachable_while_the_answer_is_posted_it_arrives_once_when_back(
    stack, slack, claude
):
    # Given a task Claude is working on (its parent message is posted)
    claude.latency = 0.3
    task_id = task_id_of(stack.command(f"task {PROMPT}")[1])
    claude.wait_for(lambda fake: fake.in_flight == 1, timeout=20)

    # When Slack goes away (connections refused on its port) before the answer is posted
    slack.stop()
    wait_until(lambda: events.ANSWERED in recorded(stack, task_id), timeout=20)
    time.sleep(2.5)  # the outage: the result worker's tries at once and 1 s later are refused
    assert events.REPLIED not in recorded(stack, task_id)
    assert events.COMPLETED not in recorded(stack, task_id), "not done before it is shown"
    slack.start()  # Slack is back, on the same port

    # Then the answer arrives, once
    answered_once(slack, task_id)
    wait_for_answer(slack, task_id, timeout=20)
    assert events.COMPLETED in recorded(stack, task_id)


def test_slack_unreachable_when_a_task_is_asked_for_it_is_posted_and_answered_once(
    stack, slack, claude
):
    # Given Slack unreachable (its response_url made beforehand, as Slack's would be)
    response_url = slack.new_response_url(channel=CHANNEL)
    slack.stop()

    # When someone asks for a task, it is acked at once and recorded, but cannot be posted yet
    status, body, elapsed = stack.sender.command(f"task {PROMPT}", response_url=response_url)
    assert status == 200 and elapsed < 3.0
    task_id = task_id_of(body)
    wait_until(lambda: events.SUBMITTED in recorded(stack, task_id), timeout=10)
    time.sleep(2.5)  # the outage: the bot's tries at once and 1 s later are refused
    assert events.POSTED not in recorded(stack, task_id)
    slack.start()

    # Then once Slack is back its parent message is posted once, and answered in its thread
    answered_once(slack, task_id)
    wait_for_answer(slack, task_id, timeout=20)
    assert len(slack.calls_to("chat.postMessage")) == 2, "the parent and the answer, once each"


def test_slack_failing_as_a_task_ends_its_message_still_comes_to_say_done(stack, slack, claude):
    # Given Slack answering 503 to the next two chat.update calls
    slack.fail_next("chat.update", count=2, status=503)

    # When a quick task is answered
    task_id = task_id_of(stack.command(f"task {PROMPT}")[1])
    answered_once(slack, task_id)

    # Then its message in the channel comes to say Done once Slack recovers (after 2 failures:
    # patience would try again 1 s, then 2 s later)
    wait_for_answer(slack, task_id, timeout=10)


# -- core.slack.patience.with_patience on a clock the test holds ---------------------------


class Waits:
    """The clock `with_patience` reads, and its `stopping` event: waiting moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self.stop_after: int | None = None

    def monotonic(self) -> float:
        return self.now

    def is_set(self) -> bool:
        return self.stop_after is not None and len(self.waits) >= self.stop_after

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return self.is_set()


@pytest.fixture
def waits(monkeypatch) -> Waits:
    clock = Waits()
    monkeypatch.setattr(core.slack.patience, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


def failing(*errors: SlackError, then: str = "ok"):
    """An attempt that raises `errors` one by one, then returns `then`; it counts its calls."""
    left = list(errors)

    def attempt():
        attempt.calls += 1
        if left:
            raise left.pop(0)
        return then

    attempt.calls = 0
    return attempt


def unavailable(n: int) -> SlackError:
    return SlackError("service_unavailable", f"Slack answered 503 (#{n})", transient=True)


def test_patience_waits_1_2_4_up_to_30_s_between_tries_and_then_succeeds(waits):
    attempt = failing(*(unavailable(n) for n in range(7)))

    assert with_patience(attempt, "post", stopping=waits) == "ok"
    assert attempt.calls == 8
    assert waits.waits == [1, 2, 4, 8, 16, 30, 30]


def test_patience_gives_up_with_the_last_error_after_its_time(waits):
    errors = [unavailable(n) for n in range(1000)]
    attempt = failing(*errors)

    with pytest.raises(SlackError) as gave_up:
        with_patience(attempt, "post", patience=SLACK_PATIENCE, stopping=waits)

    assert gave_up.value is errors[attempt.calls - 1], "the last error, not the first"
    assert sum(waits.waits) <= SLACK_PATIENCE < sum(waits.waits) + MAX_WAIT
    assert max(waits.waits) == MAX_WAIT
    assert sum(waits.waits) > 19 * 60, "it kept trying for about 20 minutes"


def test_a_short_patience_gives_up_sooner(waits):
    errors = [unavailable(n) for n in range(10)]
    attempt = failing(*errors)

    with pytest.raises(SlackError) as gave_up:
        with_patience(attempt, "post", patience=10, stopping=waits)

    assert waits.waits == [1, 2, 4], "a fourth wait (8 s) would end after 10 s"
    assert attempt.calls == 4 and gave_up.value is errors[3]


def test_a_refusal_that_is_not_transient_is_not_tried_again(waits):
    refused = SlackError("channel_not_found", "Slack refused: channel_not_found")
    attempt = failing(refused)

    with pytest.raises(SlackError) as raised:
        with_patience(attempt, "post", stopping=waits)

    assert raised.value is refused and attempt.calls == 1 and waits.waits == []


def test_stopping_ends_the_waiting_with_the_error(waits):
    waits.stop_after = 2
    attempt = failing(*(unavailable(n) for n in range(10)))

    with pytest.raises(SlackError):
        with_patience(attempt, "post", stopping=waits)

    assert attempt.calls == 2 and waits.waits == [1, 2]


def test_patience_really_waits_on_the_real_clock():
    """No fake clock: a patience shorter than the first wait gives up at once, a longer one
    waits (for real) and tries again."""
    event = threading.Event()
    quick = failing(unavailable(0))
    with pytest.raises(SlackError):
        with_patience(quick, "post", patience=0.5, stopping=event)
    assert quick.calls == 1

    again = failing(unavailable(0))
    assert with_patience(again, "post", patience=5, stopping=event) == "ok"
    assert again.calls == 2
