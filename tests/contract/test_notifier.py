"""What every Notifier must do: the same tests on the in-memory twin (tests/twins/notifier.py) and
on SlackNotifier, the real slack_sdk WebClient against FakeSlack (aico/fakes/slack.py).

Each backend comes with its Slack (`slack`): the twin is its own; the real notifier's is the
FakeSlack it talks to (files shared at once, `file_share_delay=0`). Both show messages, replies
and ephemerals the same way and keep a `not_in_channel` set; `Faults` tells each how to fail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from aico.fakes.slack import FakeSlack
from core.adapters.slack import SlackNotifier, web_client
from core.errors import SlackError
from tests.twins.notifier import MemoryNotifier

TOKEN = "xoxb-contract"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
CHANNEL = "C0CONTRACT"
USER = "U0ASKER"
# The Slack API method each Notifier call begins with, for FakeSlack to fail it.
API = {
    "post": "chat.postMessage",
    "update": "chat.update",
    "find_message": "conversations.history",
    "ephemeral": "chat.postEphemeral",
    "upload": "files.getUploadURLExternal",
    "start_stream": "chat.startStream",
    "append_stream": "chat.appendStream",
    "stop_stream": "chat.stopStream",
    "set_session": "agents.sessions.setStatus",
}


@dataclass
class Backend:
    notifier: Any
    slack: Any  # MemoryNotifier or FakeSlack: messages / replies / message / ephemerals

    def fail_next(self, method: str, transient: bool) -> None:
        if isinstance(self.slack, FakeSlack):
            if transient:
                self.slack.fail_next(API[method], status=500)
            else:
                self.slack.fail_next(API[method], status=200, error="channel_not_found")
        else:
            self.slack.fail_next(method, transient=transient)

    def lose_answer_next(self, method: str) -> None:
        is_fake = isinstance(self.slack, FakeSlack)
        self.slack.lose_answer_next(API[method] if is_fake else method)

    def rate_limit_next(self, method: str) -> None:
        """A 429 with a long Retry-After for the next call to `method`."""
        if isinstance(self.slack, FakeSlack):
            self.slack.fail_next(API[method], status=429, retry_after=30)
        else:
            self.slack.fail_next(method, code="ratelimited")

    def end_stream(self, ts: str) -> None:
        """Slack ends the stream itself (its time limit)."""
        if isinstance(self.slack, FakeSlack):
            self.slack.advance(self.slack.stream_max_age + 1)
        else:
            self.slack.end_stream(ts)

    def stream_text(self, ts: str) -> str:
        if isinstance(self.slack, FakeSlack):
            return self.slack.stream(CHANNEL, ts).text
        return self.slack.stream_text(ts)

    def session(self, thread_ts: str) -> str:
        if isinstance(self.slack, FakeSlack):
            return (self.slack.session(CHANNEL, thread_ts) or {}).get("status", "")
        return self.slack.sessions.get((CHANNEL, thread_ts), {}).get("status", "")

    def without(self, feature: str) -> None:
        """A workspace without streams (`streams`) or agent sessions (`sessions`)."""
        if isinstance(self.slack, FakeSlack):
            setattr(
                self.slack, f"{'streaming' if feature == 'streams' else 'sessions'}_enabled", False
            )
        else:
            setattr(self.slack, f"{feature}_enabled", False)

    def statuses(self) -> list[dict]:
        if isinstance(self.slack, FakeSlack):
            return self.slack.assistant_statuses
        return self.slack.statuses

    def response_url(self) -> str:
        if isinstance(self.slack, FakeSlack):
            return self.slack.new_response_url(CHANNEL)
        return "https://hooks.slack.test/commands/T0/1/abc"

    def responses(self, url: str) -> list[str]:
        if isinstance(self.slack, FakeSlack):
            return [r.payload.get("text") for r in self.slack.responses_for(url)]
        return [r["text"] for r in self.slack.responses if r["url"] == url]


@pytest.fixture(params=["twin", "slack"])
def backend(request, monkeypatch) -> Iterator[Backend]:
    if request.param == "twin":
        twin = MemoryNotifier()
        yield Backend(twin, twin)
        return
    for name in PROXY_VARS:  # slack_sdk ignores NO_PROXY
        monkeypatch.delenv(name, raising=False)
    with FakeSlack(bot_token=TOKEN, file_share_delay=0) as fake:
        yield Backend(SlackNotifier(web_client(TOKEN, fake.api_url, timeout=5)), fake)


def meta(event_type: str, task_id: str) -> dict:
    return {"event_type": event_type, "event_payload": {"task_id": task_id}}


def test_a_post_is_found_among_the_channels_latest_by_its_metadata(backend):
    notifier = backend.notifier
    ts = notifier.post(CHANNEL, "Task t1", [], metadata=meta("aico_task", "t1"))
    notifier.post(CHANNEL, "Task t2", [], metadata=meta("aico_task", "t2"))

    assert ts and notifier.find_message(CHANNEL, "aico_task", "t1") == ts
    assert notifier.find_message(CHANNEL, "aico_result", "t1") == "", "another event type"
    assert notifier.find_message(CHANNEL, "aico_task", "t3") == ""
    assert [m["text"] for m in backend.slack.messages(CHANNEL)] == ["Task t1", "Task t2"]


def test_a_reply_is_in_its_thread_and_found_there(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [], metadata=meta("aico_task", "t1"))
    reply = notifier.post(CHANNEL, "the answer", [], parent, meta("aico_result", "t1"))
    under_reply = notifier.post(CHANNEL, "more", [], thread_ts=reply)

    replies = backend.slack.replies(CHANNEL, parent)
    assert [(m["ts"], m["text"]) for m in replies] == [(reply, "the answer"), (under_reply, "more")]
    assert [m["text"] for m in backend.slack.messages(CHANNEL)] == ["Task t1"]
    assert notifier.find_message(CHANNEL, "aico_result", "t1", thread_ts=parent) == reply
    assert notifier.find_message(CHANNEL, "aico_task", "t1", thread_ts=parent) == parent
    assert notifier.find_message(CHANNEL, "aico_result", "t1") == "", "not among the channel's"


def test_a_reply_is_found_by_its_tasks_generation_when_one_is_asked_for(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [], metadata=meta("aico_task", "t1"))
    first = notifier.post(CHANNEL, "it failed", [], parent, meta("aico_result", "t1"))
    again = {"event_type": "aico_result", "event_payload": {"task_id": "t1", "generation": 1}}
    second = notifier.post(CHANNEL, "the answer", [], parent, again)

    def find(generation):
        return notifier.find_message(CHANNEL, "aico_result", "t1", parent, generation)

    assert (find(0), find(1), find(2)) == (first, second, "")  # no generation: the 0th
    assert find(None) == first, "any generation: the first found"


def test_looking_in_a_thread_that_does_not_exist_is_a_permanent_error(backend):
    with pytest.raises(SlackError) as caught:
        backend.notifier.find_message(CHANNEL, "aico_result", "t1", thread_ts="1.000001")
    assert (caught.value.code, caught.value.transient) == ("thread_not_found", False)


def test_an_update_changes_the_text(backend):
    notifier = backend.notifier
    ts = notifier.post(CHANNEL, "working…", [])
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "done"}}]
    notifier.update(CHANNEL, ts, "done", blocks)

    shown = backend.slack.message(CHANNEL, ts)
    assert (shown["text"], shown["blocks"]) == ("done", blocks)


def test_an_update_of_a_message_that_does_not_exist_is_a_permanent_error(backend):
    with pytest.raises(SlackError) as caught:
        backend.notifier.update(CHANNEL, "1.000001", "done", [])
    assert (caught.value.code, caught.value.transient) == ("message_not_found", False)


def test_a_file_uploaded_in_a_thread_is_found_there(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [])
    assert not notifier.has_file(CHANNEL, parent, "t1.md")

    notifier.upload(CHANNEL, parent, "# a long answer", "t1.md", "The answer is attached")

    assert notifier.has_file(CHANNEL, parent, "t1.md")
    assert not notifier.has_file(CHANNEL, parent, "t2.md")
    (shared,) = backend.slack.replies(CHANNEL, parent)
    assert shared["text"] == "The answer is attached"
    assert [f["name"] for f in shared["files"]] == ["t1.md"]


def test_an_ephemeral_reaches_the_user(backend):
    parent = backend.notifier.post(CHANNEL, "Task t1", [])
    backend.notifier.ephemeral(CHANNEL, USER, "only you see this", thread_ts=parent)

    (note,) = backend.slack.ephemerals(CHANNEL)
    assert (note["user"], note["text"], note["thread_ts"]) == (USER, "only you see this", parent)


def test_a_status_shows_under_a_thread_and_a_refused_one_never_raises(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [])
    reply = notifier.post(CHANNEL, "an answer", [], thread_ts=parent)

    notifier.set_status(CHANNEL, parent, "is working on it…")
    notifier.set_status(CHANNEL, reply, "is working on it…")  # Slack refuses a reply's ts

    assert [(s["thread_ts"], s["status"]) for s in backend.statuses()] == [
        (parent, "is working on it…")
    ]


def test_respond_answers_through_the_response_url(backend):
    url = backend.response_url()
    backend.notifier.respond(url, "done")
    assert backend.responses(url) == ["done"]


@pytest.mark.parametrize("method", ["post", "update", "find_message", "ephemeral", "upload"])
@pytest.mark.parametrize("transient", [True, False], ids=["5xx", "refused"])
def test_slacks_failures_are_slack_errors_that_say_whether_to_try_again(backend, method, transient):
    notifier = backend.notifier
    ts = notifier.post(CHANNEL, "Task t1", [])
    calls = {
        "post": lambda: notifier.post(CHANNEL, "again", [], metadata=meta("aico_task", "t2")),
        "update": lambda: notifier.update(CHANNEL, ts, "changed", []),
        "find_message": lambda: notifier.find_message(CHANNEL, "aico_task", "t1"),
        "ephemeral": lambda: notifier.ephemeral(CHANNEL, USER, "psst"),
        "upload": lambda: notifier.upload(CHANNEL, ts, "text", "t1.md", "attached"),
    }
    backend.fail_next(method, transient=transient)

    with pytest.raises(SlackError) as caught:
        calls[method]()

    assert caught.value.transient is transient
    if not transient:
        assert caught.value.code == "channel_not_found"
    assert [m["text"] for m in backend.slack.messages(CHANNEL)] == ["Task t1"]
    assert backend.slack.replies(CHANNEL, ts) == [] and backend.slack.ephemerals() == []
    calls[method]()  # the failure was for the next call only


def test_a_channel_aico_is_not_in_refuses_a_post_for_good(backend):
    backend.slack.not_in_channel.add(CHANNEL)
    with pytest.raises(SlackError) as caught:
        backend.notifier.post(CHANNEL, "Task t1", [])
    assert (caught.value.code, caught.value.transient) == ("not_in_channel", False)


def test_a_post_whose_answer_was_lost_happened_and_can_be_found(backend):
    notifier = backend.notifier
    backend.lose_answer_next("post")

    with pytest.raises(SlackError) as caught:
        notifier.post(CHANNEL, "Task t1", [], metadata=meta("aico_task", "t1"))

    assert caught.value.transient
    (posted,) = backend.slack.messages(CHANNEL)
    assert notifier.find_message(CHANNEL, "aico_task", "t1") == posted["ts"]


# -- Slack's agent platform: streams and sessions --------------------------------------------


def test_a_stream_grows_in_its_thread_and_stops_with_its_blocks_and_metadata(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [])

    ts = notifier.start_stream(CHANNEL, parent, "The answer ", USER)
    notifier.append_stream(CHANNEL, ts, "grows")
    receipt = [{"type": "context", "elements": [{"type": "mrkdwn", "text": "model · 1 s"}]}]
    notifier.stop_stream(CHANNEL, ts, ".", receipt, meta("aico_result", "t1"))

    (reply,) = backend.slack.replies(CHANNEL, parent)
    assert (reply["ts"], reply["text"], reply["blocks"]) == (ts, "The answer grows.", receipt)
    assert backend.stream_text(ts) == "The answer grows."
    assert notifier.find_message(CHANNEL, "aico_result", "t1", thread_ts=parent) == ts
    with pytest.raises(SlackError) as caught:
        notifier.append_stream(CHANNEL, ts, "more")
    assert (caught.value.code, caught.value.transient) == ("message_not_in_streaming_state", False)


def test_a_streaming_message_is_not_updated_until_slack_ends_it(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [])
    ts = notifier.start_stream(CHANNEL, parent, "half an answer", USER)

    with pytest.raises(SlackError) as caught:
        notifier.update(CHANNEL, ts, "the whole answer", [])
    assert not caught.value.transient

    backend.end_stream(ts)
    with pytest.raises(SlackError) as ended:
        notifier.append_stream(CHANNEL, ts, " and more")
    assert ended.value.code == "message_not_in_streaming_state"
    notifier.update(CHANNEL, ts, "the whole answer", [], meta("aico_result", "t1"))
    assert backend.slack.message(CHANNEL, ts)["text"] == "the whole answer"
    assert notifier.find_message(CHANNEL, "aico_result", "t1", thread_ts=parent) == ts


def test_a_stream_whose_start_was_not_recorded_is_found_by_its_beginning(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [])
    notifier.post(CHANNEL, "Here is the plan", [], parent, meta("aico_result", "t0"))
    ts = notifier.start_stream(CHANNEL, parent, "Here is the plan for t1", USER)

    assert notifier.find_stream(CHANNEL, parent, "Here is the plan") == ts
    assert notifier.find_stream(CHANNEL, parent, "Something else") == ""


def test_a_rate_limited_stream_call_fails_at_once_instead_of_waiting(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [])
    backend.rate_limit_next("start_stream")

    began = time.monotonic()
    with pytest.raises(SlackError) as caught:
        notifier.start_stream(CHANNEL, parent, "an answer", USER)

    assert time.monotonic() - began < 5, "the 429's Retry-After (30 s) was not waited out"
    assert (caught.value.code, caught.value.transient) == ("ratelimited", True)
    assert backend.slack.replies(CHANNEL, parent) == []


def test_a_workspace_without_streams_refuses_them_for_good(backend):
    parent = backend.notifier.post(CHANNEL, "Task t1", [])
    backend.without("streams")

    with pytest.raises(SlackError) as caught:
        backend.notifier.start_stream(CHANNEL, parent, "an answer", USER)

    assert (caught.value.code, caught.value.transient) == ("unknown_method", False)
    assert backend.slack.replies(CHANNEL, parent) == []


def test_a_session_goes_from_processing_to_active_and_an_unknown_status_is_refused(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [])

    notifier.set_session(CHANNEL, parent, "processing", "write the notes")
    assert backend.session(parent) == "processing"
    notifier.set_session(CHANNEL, parent, "active")
    assert backend.session(parent) == "active"

    with pytest.raises(SlackError) as caught:
        notifier.set_session(CHANNEL, parent, "done")
    assert (caught.value.code, caught.value.transient) == ("invalid_status", False)


def test_stopping_a_stream_can_keep_its_session_processing(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [])
    notifier.set_session(CHANNEL, parent, "processing", "write the notes")
    ts = notifier.start_stream(CHANNEL, parent, "attempt one", USER)

    notifier.stop_stream(CHANNEL, ts, session_status="processing")
    assert backend.session(parent) == "processing"
    second = notifier.start_stream(CHANNEL, parent, "attempt two", USER)
    notifier.stop_stream(CHANNEL, second)
    assert backend.session(parent) == "active", "Slack's default on a stop"


def test_a_workspace_without_sessions_refuses_them_for_good(backend):
    parent = backend.notifier.post(CHANNEL, "Task t1", [])
    backend.without("sessions")

    with pytest.raises(SlackError) as caught:
        backend.notifier.set_session(CHANNEL, parent, "processing", "write the notes")

    assert (caught.value.code, caught.value.transient) == ("feature_disabled", False)


def test_a_deleted_message_is_gone_from_its_thread(backend):
    notifier = backend.notifier
    parent = notifier.post(CHANNEL, "Task t1", [])
    ts = notifier.start_stream(CHANNEL, parent, "an answer", USER)

    notifier.delete(CHANNEL, ts)

    assert backend.slack.replies(CHANNEL, parent) == []
    with pytest.raises(SlackError) as caught:
        notifier.delete(CHANNEL, ts)
    assert caught.value.code == "message_not_found"
