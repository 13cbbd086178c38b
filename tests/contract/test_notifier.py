"""What every Notifier must do: the same tests on the in-memory twin (tests/twins/notifier.py) and
on SlackNotifier, the real slack_sdk WebClient against FakeSlack (aico/fakes/slack.py).

Each backend comes with its Slack (`slack`): the twin is its own; the real notifier's is the
FakeSlack it talks to (files shared at once, `file_share_delay=0`). Both show messages, replies
and ephemerals the same way and keep a `not_in_channel` set; `Faults` tells each how to fail.
"""

from __future__ import annotations

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
