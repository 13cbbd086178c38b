"""End to end through the real processes, started from the Procfile lines.

Given a private RabbitMQ node, the fake Slack and the fake Claude, when a person runs `/aico …`,
then what Slack would show them is checked: the ack, the parent message, the answer in its thread.
"""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest

from aico.fakes.signing import SlackSender, slash_command_body
from aico.fakes.slack import FakeSlack
from core.domain.text import INLINE_LIMIT
from tests.integration.stack import BOT_TOKEN, Stack, event_store, fresh_vhost

CHANNEL = "C0CHAN1"


@pytest.fixture
def stack(rabbit, tmp_path, slack, claude):
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude).start()
    yield running
    codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"{codes}\n{running.logs()}"


@pytest.fixture
def plain_slack():
    """A workspace without Slack's agent platform (no streams, no sessions): aico shows progress
    with a "working on it" message that chat.update glimpses replace (test_streaming.py covers
    the platform)."""
    with FakeSlack(bot_token=BOT_TOKEN, streaming_enabled=False, sessions_enabled=False) as fake:
        yield fake


@pytest.fixture
def plain_stack(rabbit, tmp_path, plain_slack, claude):
    running = Stack(tmp_path, fresh_vhost(rabbit), plain_slack, claude).start()
    yield running
    running.stop()


def task_id_of(ack_body: str) -> str:
    return json.loads(ack_body)["text"].split("`")[1]


def parent_of(slack: FakeSlack, task_id: str) -> dict | None:
    return next(
        (m for m in slack.messages(CHANNEL) if f"`{task_id}`" in m["text"] + str(m.get("blocks"))),
        None,
    )


def wait_for_answer(
    slack: FakeSlack, task_id: str, timeout: float = 20.0, status: str = "Done"
) -> tuple[dict, list]:
    """The parent message once its status says `status`, and the replies in its thread."""

    def arrived():
        parent = parent_of(slack, task_id)
        if parent and status in json.dumps(parent.get("blocks")):
            return parent, slack.replies(CHANNEL, parent["ts"])
        return None

    return slack.wait_for(arrived, timeout)


def test_a_task_is_acked_fast_and_answered_in_its_own_thread(stack, slack, claude):
    status, body, elapsed = stack.command("task Write a haiku about queues")

    assert status == 200 and elapsed < 3.0
    task_id = task_id_of(body)
    parent, replies = wait_for_answer(slack, task_id)
    assert "<@U0USER1>" in parent["text"]
    assert "Write a haiku about queues" in json.dumps(parent["blocks"])
    assert len(replies) == 1
    assert "Answer to: Write a haiku about queues" in json.dumps(replies[0]["blocks"])
    assert claude.prompts() == ["Write a haiku about queues"]


def test_several_tasks_at_once_land_each_in_its_own_thread(stack, slack, claude):
    prompts = [f"task number {i}: summarise chapter {i}" for i in range(12)]
    acks: dict[str, str] = {}

    def send(prompt):
        with SlackSender(stack.url, stack.sender.secret) as sender:
            _, body, _ = sender.command(f"task {prompt}", response_url=slack.new_response_url())
        acks[prompt] = task_id_of(body)

    threads = [threading.Thread(target=send, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for prompt, task_id in acks.items():
        parent, replies = wait_for_answer(slack, task_id)
        assert prompt in json.dumps(parent["blocks"])
        assert [f"Answer to: {prompt}" in json.dumps(r["blocks"]) for r in replies] == [True]
    assert len(claude.calls) == len(prompts)
    assert claude.max_in_flight > 1, "one task worker asks Claude several things at once"


@pytest.mark.parametrize("how", ["forged", "stale"])
def test_forged_and_stale_requests_get_401_and_queue_nothing(stack, slack, claude, how):
    body = slash_command_body("task delete everything", response_url=slack.new_response_url())
    if how == "forged":
        result = SlackSender(stack.url, "not-the-secret").post(body)
    else:
        result = stack.sender.post(body, timestamp=int(time.time()) - 6 * 60)

    assert result[0] == 401
    status, _ack, _ = stack.command("help")  # the bot is alive and has done nothing else
    assert status == 200
    assert slack.messages(CHANNEL) == []
    assert claude.calls == []


def test_an_empty_task_gets_a_clear_answer_and_queues_nothing(stack, slack, claude):
    _, body, _ = stack.command("task   ")
    assert "/aico task &lt;what to do&gt;" in json.loads(body)["text"]
    assert slack.messages(CHANNEL) == []


def test_an_oversized_task_is_refused_with_the_limit(stack, slack, claude):
    _, body, _ = stack.command("task " + "x" * 4001)
    assert "limit is 4,000" in json.loads(body)["text"]
    _, help_body, _ = stack.command("help")
    assert "4,000 characters" in json.loads(help_body)["text"]
    assert slack.messages(CHANNEL) == []


def test_non_ascii_and_hostile_text_arrives_intact_and_pings_no_one(stack, slack, claude):
    prompt = "Übersetze «日本語» <!channel> & <@U999> 🚀"
    _, body, _ = stack.command(f"task {prompt}")
    parent, replies = wait_for_answer(slack, task_id_of(body))

    assert claude.prompts() == [prompt]
    shown = json.dumps(parent["blocks"], ensure_ascii=False) + json.dumps(
        replies[0]["blocks"], ensure_ascii=False
    )
    assert "<!channel>" not in shown and "<@U999>" not in shown
    assert "&lt;!channel&gt; &amp; &lt;@U999&gt;" in shown
    assert "Übersetze «日本語»" in shown and "🚀" in shown


@pytest.mark.parametrize("text", ["frobnicate now", "STATUSS"])
def test_an_unknown_verb_gets_the_help(stack, slack, text):
    _, body, _ = stack.command(text)
    answer = json.loads(body)["text"]
    assert f"I don't know `{text.split()[0]}`" in answer
    assert "/aico task &lt;what to do&gt;" in answer


def test_help(stack):
    status, body, _ = stack.command("help")
    assert status == 200
    assert "/aico task &lt;what to do&gt;" in json.loads(body)["text"]


def test_a_long_answer_arrives_as_a_file_in_the_thread(stack, slack, claude):
    claude.responder = lambda request: "A long report. " * (INLINE_LIMIT // 10)
    _, body, _ = stack.command("task write the long report")
    task_id = task_id_of(body)
    parent, _ = wait_for_answer(slack, task_id)

    # Slack shares an uploaded file a moment after the upload is complete
    answer, attached = slack.wait_for(
        lambda: (replies := slack.replies(CHANNEL, parent["ts"])) and len(replies) == 2 and replies
    )
    assert "A long report." in json.dumps(answer["blocks"])
    assert f"aico-{task_id}.md" in json.dumps(answer["blocks"]), "says where the rest is"
    content = slack.file_content(attached["files"][0]["id"]).decode()
    assert content == "A long report. " * (INLINE_LIMIT // 10)


def test_a_claude_error_becomes_a_clear_failure_in_the_thread(stack, slack, claude):
    claude.fail_next(count=1, status=400)
    _, body, _ = stack.command("task this will be refused")
    task_id = task_id_of(body)
    _, replies = wait_for_answer(slack, task_id, timeout=20, status="Failed")
    assert len(replies) == 1
    assert f"Task `{task_id}` failed: Claude answered 400" in replies[0]["text"]


def test_a_channel_the_bot_is_not_in_gets_told_how_to_fix_it(stack, slack, claude):
    slack.not_in_channel.add("C0SECRET")
    url = slack.new_response_url(channel="C0SECRET")
    _, body, _ = stack.command("task hello", channel_id="C0SECRET", response_url=url)
    task_id = task_id_of(body)

    posts = slack.wait_for(lambda: slack.responses_for(url), 10)
    assert f"Task `{task_id}` failed" in posts[0].payload["text"]
    assert "/invite @aico" in posts[0].payload["text"]
    assert claude.calls == []


def test_a_slow_task_shows_working_on_it_before_the_answer(plain_stack, plain_slack, claude):
    stack, slack = plain_stack, plain_slack
    claude.latency = 1.5
    _, body, _ = stack.command("task think hard about this")
    task_id = task_id_of(body)

    def working():
        parent = parent_of(slack, task_id)
        return parent if parent and "Working on it" in json.dumps(parent["blocks"]) else None

    parent = slack.wait_for(working, 10)
    (placeholder,) = slack.wait_for(lambda: slack.replies(CHANNEL, parent["ts"]), 5)
    # "Working on task …", or already the answer being written (its first glimpse)
    assert f"task `{task_id}`" in placeholder["text"]
    assert "Working on task" in placeholder["text"] or "writing the answer" in placeholder["text"]
    assert [s["status"] for s in slack.assistant_statuses] == ["is working on it…"]
    _, replies = wait_for_answer(slack, task_id)
    assert [r["ts"] for r in replies] == [placeholder["ts"]], "the same message, completed"
    slack.wait_for(lambda: len(slack.assistant_statuses) == 2, 5)
    assert slack.assistant_statuses[-1]["status"] == "", "and the progress line is gone"
    assert "Answer to: think hard about this" in json.dumps(replies[0]["blocks"])


def test_a_quick_task_goes_from_queued_to_done_without_a_status_flip(stack, slack, claude):
    _, body, _ = stack.command("task quick one")
    parent, _ = wait_for_answer(slack, task_id_of(body))
    statuses = [json.dumps(v.get("blocks")) for v in parent.get("history", [])] + [
        json.dumps(parent["blocks"])
    ]
    assert not any("Working on it" in s for s in statuses)
    assert "Queued" in statuses[0] and "Done" in statuses[-1]


def test_slack_rate_limits_are_waited_out_and_the_answer_posted_once(stack, slack, claude):
    slack.fail_next("chat.postMessage", count=2, status=429, retry_after=1)
    _, body, _ = stack.command("task survive a rate limit")
    _, replies = wait_for_answer(slack, task_id_of(body), timeout=30)
    assert len(replies) == 1
    assert "Answer to: survive a rate limit" in json.dumps(replies[0]["blocks"])
    assert len(slack.messages(CHANNEL)) == 1


@pytest.fixture
def impatient_stack(rabbit, tmp_path, slack, claude):
    running = Stack(tmp_path, fresh_vhost(rabbit), slack, claude, AICO_CLAUDE_TIMEOUT="0.5")
    yield running.start()
    running.stop()


def test_claude_not_answering_in_time_costs_an_attempt_not_the_task(impatient_stack, slack, claude):
    claude.hang_next(count=3, seconds=5)  # the first try and the SDK's two retries
    _, body, _ = impatient_stack.command("task answered on the second attempt")
    task_id = task_id_of(body)
    _, replies = wait_for_answer(slack, task_id, timeout=30)

    assert len(replies) == 1
    assert "Answer to: answered on the second attempt" in json.dumps(replies[0]["blocks"])
    assert [c.status for c in claude.calls].count(200) == 1
    with event_store(impatient_stack) as store:
        assert store.task(task_id).attempts == 2, "the timed-out attempt, then the answered one"


def test_posts_to_one_channel_are_paced(rabbit, tmp_path, slack, claude):
    paced = Stack(
        tmp_path,
        fresh_vhost(rabbit),
        slack,
        claude,
        AICO_SLACK_CHANNEL_RATE="2",
        AICO_SLACK_CHANNEL_BURST="1",
    ).start()
    try:
        ids = [task_id_of(paced.command(f"task paced {i}")[1]) for i in range(4)]
        for task_id in ids:
            wait_for_answer(slack, task_id, timeout=30)
    finally:
        paced.stop()

    posts = [c for c in slack.calls_to("chat.postMessage") if not c.params.get("thread_ts")]
    gaps = [b.at - a.at for a, b in itertools.pairwise(posts)]
    assert len(posts) == 4 and min(gaps) > 0.4, gaps  # 2 a second, not all at once


def test_the_answer_streams_into_its_message_as_claude_writes_it(plain_stack, plain_slack, claude):
    stack, slack = plain_stack, plain_slack
    # Given Claude writing a long answer slowly (6 s)
    claude.latency = 6.0
    claude.responder = lambda request: " ".join(f"word{i}" for i in range(400))
    task_id = task_id_of(stack.command("task write slowly")[1])

    # Then the result message shows the answer growing before it is done, and ends complete
    _, replies = wait_for_answer(slack, task_id, timeout=40)
    (message,) = replies
    shown = [json.dumps(v.get("blocks")) for v in message.get("history", [])]
    glimpses = [s for s in shown if "Claude is writing" in s]
    assert glimpses, "no partial answer was shown"
    assert "word0" in glimpses[0] and "word399" not in glimpses[0]
    assert "word399" in json.dumps(message["blocks"])
