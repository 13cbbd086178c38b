"""Answers streamed natively, and agent sessions with a stop button, through the real processes.

Given the whole stack against a private RabbitMQ node, the fake Claude writing slowly and the
fake Slack with its agent platform (streams, sessions, the stop button: the app subscribes to
`agent_session_stopped`), each way in gets ONE streamed answer in the right thread, with text
visible within a second of Claude's first token; a stream Slack ends, a failed attempt and the
stop button each still leave one answer; without streams and sessions, today's glimpses and
status line come back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from aico.fakes.signing import SlackSender
from aico.fakes.slack import SUBSCRIBED_EVENTS, FakeSlack
from tests.integration.stack import BOT_TOKEN, Stack, fresh_vhost

pytestmark = pytest.mark.integration

CHANNEL, OWNER = "C0CHAN1", "U0USER1"
WORDS = 60
LATENCY = 3.0  # Claude's answer: headers after 1.5 s, then a word every ~25 ms


def words(prompt_body: dict) -> str:
    return " ".join(f"word{i}" for i in range(WORDS))


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    events = SUBSCRIBED_EVENTS | {"agent_session_stopped"}
    with FakeSlack(bot_token=BOT_TOKEN, bot_events=frozenset(events)) as fake:
        yield fake


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude) -> Iterator[Stack]:
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude).start()

    def deliver(body: dict) -> None:  # Slack's Events API, signed, to the bot
        with SlackSender(running.url, running.sender.secret) as sender:
            sender.event(body)

    slack.on_event.append(deliver)
    claude.latency, claude.responder = LATENCY, words
    yield running
    codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"{codes}\n{running.logs()}"


def ask(stack: Stack, slack: FakeSlack, way: str, text: str) -> tuple[str, str]:
    """A person asks aico `text` by `way`; (channel, thread ts) where the answer belongs."""
    if way == "task":
        stack.command(f"task {text}", user_id=OWNER)
        parent = slack.wait_for(lambda: _parent(slack, text), 15)
        return CHANNEL, parent["ts"]
    channel = CHANNEL if way == "mention" else slack.dm_channel(OWNER)
    said = f"<@{slack.bot_user_id}> {text}" if way == "mention" else text
    slack.user_posts(channel, said, user=OWNER)
    asked = [m for m in slack.messages(channel) if m.get("user") == OWNER][-1]
    return channel, asked["ts"]


def _parent(slack: FakeSlack, text: str) -> dict | None:
    return next((m for m in slack.messages(CHANNEL) if text in json.dumps(m.get("blocks"))), None)


def answers(slack: FakeSlack, channel: str, thread_ts: str) -> list[dict]:
    """aico's replies in the thread."""
    return [m for m in slack.replies(channel, thread_ts) if m.get("bot_id")]


def finished(slack: FakeSlack, channel: str, thread_ts: str, timeout: float = 30.0) -> dict:
    """The thread's one answer once its receipt is there (fails if there is more than one)."""

    def done():
        shown = answers(slack, channel, thread_ts)
        return shown if any("tokens" in json.dumps(m.get("blocks")) for m in shown) else None

    (answer,) = slack.wait_for(done, timeout)
    return answer


def first_text_after_first_token(slack: FakeSlack, claude, channel: str) -> float:
    """Seconds from Claude's first token (the fake's headers come after latency / 2, the first
    delta right after) to the first text of the answer in Slack (the stream's start)."""
    offset = time.time() - time.monotonic()  # FakeClaude counts monotonic, FakeSlack wall time
    (call,) = [c for c in claude.calls if c.status == 200]
    first_token = call.at + offset + LATENCY / 2
    starts = [c for c in slack.calls_to("chat.startStream") if c.params.get("channel") == channel]
    return starts[0].at - first_token


@pytest.mark.parametrize("way", ["task", "mention", "dm"])
def test_each_way_in_gets_one_streamed_answer_in_its_thread_within_a_second(
    stack, slack, claude, way
):
    # When a person asks by this way in
    channel, thread_ts = ask(stack, slack, way, f"explain queues ({way})")

    # Then one answer comes in that thread, streamed: its text grew, then it was stopped
    answer = finished(slack, channel, thread_ts)
    (stream,) = slack.streams(channel)
    assert (stream.ts, stream.thread_ts, stream.state) == (answer["ts"], thread_ts, "stopped")
    assert stream.text == words({}) and answer["text"] == words({})
    assert len(stream.appends) >= 2, "it grew while Claude wrote"
    assert answer["metadata"]["event_payload"]["task_id"]
    # And its first text showed within a second of Claude's first token
    assert first_text_after_first_token(slack, claude, channel) < 1.0
    # And the thread's session was processing while Claude worked, and is active now
    session = slack.wait_for(lambda: slack.session(channel, thread_ts), 5)
    slack.wait_for(lambda: slack.session(channel, thread_ts)["status"] == "active", 5)
    assert session["history"][0] == "processing"
    assert session["title"] == f"explain queues ({way})"
    assert slack.assistant_statuses == [], "the session says it, not the status line"


def test_a_stream_slack_ends_mid_answer_still_ends_as_one_whole_answer(stack, slack, claude):
    # Given Slack ending streams after 2 s, and Claude writing for longer
    slack.stream_max_age = 2.0
    claude.latency = 8.0

    channel, thread_ts = ask(stack, slack, "task", "a long explanation")

    # Then the answer still ends complete in its one message, each word once
    answer = finished(slack, channel, thread_ts, timeout=40)
    (stream,) = slack.streams(channel)
    assert stream.ts == answer["ts"] and stream.state == "expired"
    sections = [b["text"]["text"] for b in answer["blocks"] if b["type"] == "section"]
    assert " ".join(sections).split() == words({}).split(), "each word once, in order"
    assert answer["metadata"]["event_payload"]["task_id"]


def test_a_failed_attempt_mid_stream_never_leaves_two_answers(stack, slack, claude):
    # Given Claude breaking off mid-answer once (an overloaded error event after 20 words)
    claude.fault_next("error_event", after_deltas=20)

    channel, thread_ts = ask(stack, slack, "task", "try twice")

    # Then the retried attempt's answer is the one answer in the thread
    answer = finished(slack, channel, thread_ts, timeout=60)
    assert f"word{WORDS - 1}" in answer["text"] + json.dumps(answer["blocks"])
    assert len(answers(slack, channel, thread_ts)) == 1
    assert len([c for c in claude.calls if c.status == 200]) == 2


def test_the_stop_button_cancels_the_task_and_the_session_leaves_processing(stack, slack, claude):
    # Given a task Claude is writing slowly, its answer streaming
    claude.latency = 12.0
    channel, thread_ts = ask(stack, slack, "task", "slow work")
    slack.wait_for(lambda: slack.streams(channel), 20)

    # When its requester presses the session's stop button
    slack.press_stop(channel, thread_ts, user=OWNER)

    # Then the task is cancelled: its thread says so once, and the session is no longer
    # processing
    def cancelled():
        shown = answers(slack, channel, thread_ts)
        return shown if any("was cancelled" in m["text"] for m in shown) else None

    (said,) = slack.wait_for(cancelled, 20)
    assert "word" not in json.dumps(said["blocks"]), "the half answer is taken back"
    slack.wait_for(lambda: slack.session(channel, thread_ts)["status"] == "active", 10)
    parent = _parent(slack, "slow work")
    slack.wait_for(lambda: "Cancelled" in json.dumps(_parent(slack, "slow work")["blocks"]), 10)
    assert parent is not None


def test_without_streams_and_sessions_the_glimpses_and_the_status_line_come_back(
    stack, slack, claude
):
    # Given a workspace that offers neither streams nor agent sessions
    slack.streaming_enabled = slack.sessions_enabled = False
    claude.latency = 5.0

    # When a first task learns it, and a second comes after
    first = ask(stack, slack, "task", "the old way")
    first_answer = finished(slack, *first, timeout=40)
    second = ask(stack, slack, "task", "the old way again")
    second_answer = finished(slack, *second, timeout=40)

    # Then each answer shows in one message, with glimpses of it as Claude wrote; the second
    # task, once streams are known to be missing, says "working" first, as before streams
    for answer, said_working in ((first_answer, False), (second_answer, True)):
        shown = [json.dumps(v.get("blocks")) for v in answer.get("history", [])]
        assert any("Claude is writing" in s for s in shown)
        assert any("Working on task" in s for s in shown) or not said_working
        assert f"word{WORDS - 1}" in json.dumps(answer["blocks"])
    slack.wait_for(lambda: len(slack.assistant_statuses) == 4, 10)
    assert [(s["thread_ts"], s["status"]) for s in slack.assistant_statuses] == [
        (first[1], "is working on it…"),
        (first[1], ""),
        (second[1], "is working on it…"),
        (second[1], ""),
    ]
    assert slack.streams() == [] and slack.sessions() == []
    assert len(slack.calls_to("chat.startStream")) == 1, "asked once, then remembered"
    assert len(slack.calls_to("agents.sessions.setStatus")) == 1
