"""The fake Slack speaks Slack's agent platform with Slack's rules, driven by the real slack_sdk
(and Bolt) over real sockets: streams, agent sessions and the stop button, mention / DM / Home
events with their retries, feedback buttons, and files that only the bot token downloads."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from slack_bolt import App, BoltRequest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from aico.fakes.signing import SlackSender, block_actions_body, sign
from aico.fakes.slack import STREAM_MAX_AGE, FakeSlack
from aico.fakes.socket_mode import FakeSocketMode

TOKEN = "xoxb-test"
SECRET = "s3cret"
CHANNEL = "C0CHAN1"
DM = "D0USER1"
USER = "U0USER1"
RECIPIENT = {"recipient_team_id": "T0AICO", "recipient_user_id": USER}
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")
FEEDBACK = {
    "type": "context_actions",
    "block_id": "feedback",
    "elements": [
        {
            "type": "feedback_buttons",
            "action_id": "aico_feedback",
            "positive_button": {"text": {"type": "plain_text", "text": "Good"}, "value": "good"},
            "negative_button": {"text": {"type": "plain_text", "text": "Bad"}, "value": "bad"},
        }
    ],
}
RECEIPT = {"event_type": "aico_task", "event_payload": {"task_id": "t1"}}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(bot_token=TOKEN, clock=lambda: 0.0) as server:
        yield server


@pytest.fixture
def web(fake: FakeSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.api_url)


def error_of(call: Any, **kwargs: Any) -> str:
    with pytest.raises(SlackApiError) as err:
        call(**kwargs)
    return str(err.value.response["error"])


def asked(fake: FakeSlack, channel: str = CHANNEL, text: str = "do the thing") -> str:
    return str(fake.add_message(channel, text, user=USER)["ts"])


def start(web: WebClient, thread_ts: str, channel: str = CHANNEL, **kwargs: Any) -> str:
    recipient = RECIPIENT if channel[:1] != "D" else {}
    answer = web.chat_startStream(channel=channel, thread_ts=thread_ts, **recipient, **kwargs)
    return str(answer["ts"])


# --------------------------------------------------------------------------- streams


def test_the_sdk_stream_helper_grows_one_reply_then_finishes_it(
    fake: FakeSlack, web: WebClient
) -> None:
    parent = asked(fake)
    stream = web.chat_stream(channel=CHANNEL, thread_ts=parent, buffer_size=5, **RECIPIENT)
    stream.append(markdown_text="Hello")  # the helper sends chunks, not markdown_text
    while_streaming = web.conversations_replies(channel=CHANNEL, ts=parent)["messages"]
    stream.append(markdown_text=", world")
    stream.stop(markdown_text="!", blocks=[FEEDBACK], metadata=RECEIPT)

    assert [m.get("streaming") for m in while_streaming] == [None, True]
    assert while_streaming[1]["text"] == "Hello"
    final = web.conversations_replies(channel=CHANNEL, ts=parent)["messages"][1]
    assert final["text"] == "Hello, world!" and "streaming" not in final
    assert final["blocks"] == [FEEDBACK] and "metadata" not in final
    with_metadata = web.conversations_replies(channel=CHANNEL, ts=parent, include_all_metadata=True)
    assert with_metadata["messages"][1]["metadata"] == RECEIPT
    assert [c.method for c in fake.calls if "Stream" in c.method] == [
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    ]
    [seen] = fake.streams(CHANNEL)
    assert (seen.state, seen.appends, seen.thread_ts) == (
        "stopped",
        ("Hello", ", world", "!"),
        parent,
    )


def test_a_stream_is_always_a_reply_and_names_its_recipient_in_channels(
    fake: FakeSlack, web: WebClient
) -> None:
    parent = asked(fake)
    with pytest.raises(SlackApiError) as no_thread:
        web.api_call("chat.startStream", json={"channel": CHANNEL, **RECIPIENT})
    assert no_thread.value.response["error"] == "invalid_arguments"
    assert no_thread.value.response["response_metadata"]["messages"] == [
        "[ERROR] missing required field: thread_ts"
    ]
    assert (
        error_of(web.chat_startStream, channel=CHANNEL, thread_ts=parent)
        == "missing_recipient_team_id"
    )
    assert (
        error_of(
            web.chat_startStream, channel=CHANNEL, thread_ts=parent, recipient_team_id="T0AICO"
        )
        == "missing_recipient_user_id"
    )
    dm_parent = asked(fake, DM)
    assert web.chat_startStream(channel=DM, thread_ts=dm_parent)["ok"]  # a DM needs no recipient
    fake.not_in_channel.add("C0ELSE")
    assert error_of(web.chat_startStream, channel="C0ELSE", thread_ts=parent, **RECIPIENT) == (
        "not_in_channel"
    )
    assert error_of(web.chat_startStream, channel="", thread_ts=parent) == "channel_not_found"


def test_appends_need_text_and_each_may_hold_12000_characters(
    fake: FakeSlack, web: WebClient
) -> None:
    ts = start(web, asked(fake), markdown_text="a")

    assert error_of(web.chat_appendStream, channel=CHANNEL, ts=ts) == "no_text"
    assert error_of(web.chat_appendStream, channel=CHANNEL, ts=ts, markdown_text="x" * 12_001) == (
        "msg_too_long"
    )
    bad_chunk = [{"type": "confetti"}]
    assert error_of(web.chat_appendStream, channel=CHANNEL, ts=ts, chunks=bad_chunk) == (
        "invalid_chunks"
    )
    web.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="b")
    assert fake.stream(CHANNEL, ts).text == "ab"  # type: ignore[union-attr]


def test_a_stream_past_its_size_is_refused_but_can_still_be_stopped(
    fake: FakeSlack, web: WebClient
) -> None:
    ts = start(web, asked(fake), markdown_text="x" * 11_000)

    assert error_of(web.chat_appendStream, channel=CHANNEL, ts=ts, markdown_text="y" * 1_001) == (
        "msg_too_long"
    )
    web.chat_stopStream(channel=CHANNEL, ts=ts, markdown_text="y" * 1_000)
    assert len(fake.message(CHANNEL, ts)["text"]) == 12_000  # type: ignore[index]


def test_a_stream_slack_ends_for_its_size_is_no_longer_streaming() -> None:
    with FakeSlack(bot_token=TOKEN, stream_max_chars=10, stream_overflow="end") as fake:
        web = WebClient(token=TOKEN, base_url=fake.api_url)
        ts = start(web, asked(fake), markdown_text="123456")

        assert error_of(web.chat_appendStream, channel=CHANNEL, ts=ts, markdown_text="7890!") == (
            "message_not_in_streaming_state"
        )
        assert error_of(web.chat_stopStream, channel=CHANNEL, ts=ts) == (
            "message_not_in_streaming_state"
        )
        assert fake.stream(CHANNEL, ts).state == "expired"  # type: ignore[union-attr]
        assert fake.message(CHANNEL, ts)["text"] == "123456"  # type: ignore[index]


def test_a_stream_ends_by_itself_after_five_minutes_and_chat_update_finishes_it(
    fake: FakeSlack, web: WebClient
) -> None:
    ts = start(web, asked(fake), markdown_text="partial")
    assert error_of(web.chat_update, channel=CHANNEL, ts=ts, text="x") == "cant_update_message"

    fake.advance(STREAM_MAX_AGE - 1)
    web.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=" answer")
    fake.advance(2)

    for call in (web.chat_appendStream, web.chat_stopStream):
        assert error_of(call, channel=CHANNEL, ts=ts, markdown_text="more") == (
            "message_not_in_streaming_state"
        )
    assert "streaming" not in fake.message(CHANNEL, ts)  # type: ignore[operator]
    web.chat_update(channel=CHANNEL, ts=ts, text="partial answer, finished")
    assert fake.message(CHANNEL, ts)["text"] == "partial answer, finished"  # type: ignore[index]


def test_only_an_open_stream_of_the_app_takes_appends(fake: FakeSlack, web: WebClient) -> None:
    parent = asked(fake)
    post = web.chat_postMessage(channel=CHANNEL, thread_ts=parent, text="plain")["ts"]
    stopped = start(web, parent, markdown_text="done")
    web.chat_stopStream(channel=CHANNEL, ts=stopped)

    def append_error(ts: str) -> str:
        return error_of(web.chat_appendStream, channel=CHANNEL, ts=ts, markdown_text="x")

    assert append_error(post) == "message_not_in_streaming_state"
    assert append_error(stopped) == "message_not_in_streaming_state"
    assert error_of(web.chat_stopStream, channel=CHANNEL, ts=stopped) == (
        "message_not_in_streaming_state"
    )
    assert append_error(parent) == "message_not_owned_by_app"
    assert append_error("1700000099.000000") == "message_not_found"


def test_stop_checks_its_blocks_and_metadata(fake: FakeSlack, web: WebClient) -> None:
    ts = start(web, asked(fake), markdown_text="answer")
    no_value = json.loads(json.dumps(FEEDBACK))
    del no_value["elements"][0]["positive_button"]["value"]

    assert error_of(web.chat_stopStream, channel=CHANNEL, ts=ts, blocks=[no_value]) == (
        "invalid_blocks"
    )
    assert error_of(web.chat_stopStream, channel=CHANNEL, ts=ts, metadata={"event_type": 1}) == (
        "invalid_metadata_format"
    )
    assert fake.stream(CHANNEL, ts).state == "streaming"  # type: ignore[union-attr]


def test_a_workspace_without_streaming_refuses_all_three_methods() -> None:
    with FakeSlack(bot_token=TOKEN, streaming_enabled=False) as fake:
        web = WebClient(token=TOKEN, base_url=fake.api_url)
        parent = asked(fake)
        errors = {
            error_of(web.chat_startStream, channel=CHANNEL, thread_ts=parent, **RECIPIENT),
            error_of(web.chat_appendStream, channel=CHANNEL, ts=parent, markdown_text="x"),
            error_of(web.chat_stopStream, channel=CHANNEL, ts=parent),
        }
        assert errors == {"unknown_method"}
        assert fake.replies(CHANNEL, parent) == []


def test_starting_and_stopping_streams_is_tier_2_and_appending_tier_4() -> None:
    with FakeSlack(bot_token=TOKEN, rate_limits=True, clock=lambda: 0.0) as fake:
        web = WebClient(token=TOKEN, base_url=fake.api_url)
        parent = asked(fake)
        streams = [start(web, parent) for _ in range(20)]
        with pytest.raises(SlackApiError) as limited:
            start(web, parent)
        assert limited.value.response.status_code == 429
        assert limited.value.response.headers["Retry-After"] == "3"
        for i in range(100):
            web.chat_appendStream(channel=CHANNEL, ts=streams[i % 20], markdown_text=".")
        assert error_of(
            web.chat_appendStream, channel=CHANNEL, ts=streams[0], markdown_text="."
        ) == ("ratelimited")
        fake.advance(3)
        assert start(web, parent)


def test_the_apps_stream_comes_back_as_its_own_message_event(
    fake: FakeSlack, web: WebClient
) -> None:
    bodies: list[dict] = []
    changes: list[tuple[str, str]] = []
    fake.on_event.append(bodies.append)
    fake.on_change.append(lambda kind, channel, msg: changes.append((kind, msg["text"])))
    parent = asked(fake)

    ts = start(web, parent, markdown_text="one")
    web.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=" two")
    web.chat_stopStream(channel=CHANNEL, ts=ts)

    [event] = [b["event"] for b in bodies]
    assert (event["ts"], event["thread_ts"], event["bot_id"]) == (ts, parent, fake.bot_id)
    assert changes == [("posted", "one"), ("streamed", "one two"), ("streamed", "one two")]


# --------------------------------------------------------------------------- agent sessions


def test_a_session_goes_processing_then_active_with_its_title(
    fake: FakeSlack, web: WebClient
) -> None:
    parent = asked(fake)

    first = web.agents_sessions_setStatus(
        channel_id=CHANNEL, thread_ts=parent, status="processing", title="Task t1"
    )
    web.agents_sessions_setStatus(channel_id=CHANNEL, thread_ts=parent, status="active", title="x")

    assert (first["status"], first["agent_status"], first["title"]) == (
        "processing",
        "processing",
        "Task t1",
    )
    assert first["warning"] == "missing_agent_session_stopped_event_subscription"
    session = fake.session(CHANNEL, parent)
    assert session is not None
    assert (session["status"], session["title"], session["history"]) == (
        "active",
        "Task t1",
        ["processing", "active"],
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"status": "thinking"}, "invalid_status"),
        ({"status": "active", "thread_ts": None}, "thread_ts_required"),
        ({"status": "active", "channel_id": "C0GONE"}, "not_authorized"),
        ({"status": "active", "title": "t" * 201}, "invalid_arguments"),
    ],
)
def test_session_statuses_and_arguments_are_checked(
    fake: FakeSlack, web: WebClient, args: dict, error: str
) -> None:
    fake.not_in_channel.add("C0GONE")
    params = {"channel_id": CHANNEL, "thread_ts": asked(fake), **args}
    json_body = {k: v for k, v in params.items() if v}
    assert error_of(web.api_call, api_method="agents.sessions.setStatus", json=json_body) == error
    assert fake.sessions() == []


def test_a_session_lives_on_its_threads_root(fake: FakeSlack, web: WebClient) -> None:
    parent = asked(fake)
    reply = fake.add_message(CHANNEL, "more", user=USER, thread_ts=parent)["ts"]
    assert error_of(
        web.agents_sessions_setStatus, channel_id=CHANNEL, thread_ts=reply, status="processing"
    ) == ("invalid_thread_ts")


def test_a_workspace_without_agents_refuses_sessions_and_keeps_the_status_line() -> None:
    with FakeSlack(bot_token=TOKEN, sessions_enabled=False) as fake:
        web = WebClient(token=TOKEN, base_url=fake.api_url)
        parent = asked(fake)
        assert error_of(
            web.agents_sessions_setStatus, channel_id=CHANNEL, thread_ts=parent, status="active"
        ) == ("feature_disabled")
        web.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=parent, status="is working…")
        assert fake.assistant_statuses[-1]["status"] == "is working…"


def test_stopping_a_stream_moves_its_session_out_of_processing(
    fake: FakeSlack, web: WebClient
) -> None:
    parent, other = asked(fake), asked(fake)
    for thread in (parent, other):
        web.agents_sessions_setStatus(channel_id=CHANNEL, thread_ts=thread, status="processing")

    web.chat_stopStream(channel=CHANNEL, ts=start(web, parent, markdown_text="a"))
    web.chat_stopStream(
        channel=CHANNEL, ts=start(web, other, markdown_text="b"), session_status="closed"
    )

    assert fake.session(CHANNEL, parent)["history"] == ["processing", "active"]  # type: ignore[index]
    assert fake.session(CHANNEL, other)["status"] == "closed"  # type: ignore[index]


def test_the_stop_button_stops_the_threads_streams_and_tells_the_app(
    fake: FakeSlack, web: WebClient
) -> None:
    fake.bot_events = fake.bot_events | {"agent_session_stopped"}
    bodies: list[dict] = []
    fake.on_event.append(bodies.append)
    parent = asked(fake)
    web.agents_sessions_setStatus(channel_id=CHANNEL, thread_ts=parent, status="processing")
    ts = start(web, parent, markdown_text="working")
    bodies.clear()

    body = fake.press_stop(CHANNEL, parent, user="U0ADMIN")

    assert bodies == [body] and body["type"] == "event_callback" and body["event_id"]
    event = body["event"]
    assert (event["type"], event["user"], event["channel"], event["thread_ts"]) == (
        "agent_session_stopped",
        "U0ADMIN",
        CHANNEL,
        parent,
    )
    assert event["streaming_message_ts"] == [ts]
    assert error_of(web.chat_appendStream, channel=CHANNEL, ts=ts, markdown_text="x") == (
        "stopped_by_user"
    )
    assert fake.session(CHANNEL, parent)["status"] == "processing"  # type: ignore[index]
    web.chat_stopStream(channel=CHANNEL, ts=ts, markdown_text=" (stopped)")
    assert fake.session(CHANNEL, parent)["status"] == "active"  # type: ignore[index]
    assert fake.message(CHANNEL, ts)["text"] == "working (stopped)"  # type: ignore[index]


def test_there_is_no_stop_button_unless_processing_and_subscribed(
    fake: FakeSlack, web: WebClient
) -> None:
    parent = asked(fake)
    web.agents_sessions_setStatus(channel_id=CHANNEL, thread_ts=parent, status="processing")
    with pytest.raises(ValueError, match="not subscribed"):
        fake.press_stop(CHANNEL, parent)
    fake.bot_events = fake.bot_events | {"agent_session_stopped"}
    web.agents_sessions_setStatus(channel_id=CHANNEL, thread_ts=parent, status="active")
    with pytest.raises(ValueError, match="active"):
        fake.press_stop(CHANNEL, parent)


# --------------------------------------------------------------------------- events to the bot


def test_a_mention_arrives_as_a_message_and_an_app_mention(fake: FakeSlack) -> None:
    bodies = fake.user_posts(CHANNEL, f"<@{fake.bot_user_id}> ship it")

    assert [b["event"]["type"] for b in bodies] == ["message", "app_mention"]
    message, mention = (b["event"] for b in bodies)
    assert message["ts"] == mention["ts"] and bodies[0]["event_id"] != bodies[1]["event_id"]
    assert message["channel_type"] == "channel" and "channel_type" not in mention
    assert "thread_ts" not in mention and mention["user"] == USER
    assert all(b["type"] == "event_callback" and b["event_time"] for b in bodies)
    assert fake.messages(CHANNEL)[0]["text"] == f"<@{fake.bot_user_id}> ship it"


def test_a_mention_in_a_thread_names_the_thread(fake: FakeSlack) -> None:
    root = asked(fake, text="a people's thread")
    bodies = fake.user_posts(CHANNEL, f"<@{fake.bot_user_id}> help", thread_ts=root, user="U0B")
    mention = bodies[-1]["event"]
    assert (mention["type"], mention["thread_ts"], mention["parent_user_id"]) == (
        "app_mention",
        root,
        USER,
    )


def test_a_direct_message_is_heard_only_when_message_im_is_subscribed(fake: FakeSlack) -> None:
    [body] = fake.user_posts(DM, f"<@{fake.bot_user_id}> in a DM is no app_mention")
    assert (body["event"]["type"], body["event"]["channel_type"]) == ("message", "im")

    fake.bot_events = fake.bot_events - {"message.im"}
    assert fake.user_posts(DM, "hello") == []


def test_the_messages_tab_opening_is_an_app_home_opened_event(fake: FakeSlack) -> None:
    body = fake.open_home(USER, tab="messages")
    assert body is not None
    assert body["event"] == {
        "type": "app_home_opened",
        "user": USER,
        "channel": fake.dm_channel(USER),
        "tab": "messages",
        "event_ts": body["event"]["event_ts"],
    }


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_retried_event_is_the_same_body_with_slacks_retry_headers(fake: FakeSlack) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen = []
    [body] = [
        b
        for b in fake.user_posts(CHANNEL, f"<@{fake.bot_user_id}> x")
        if b["event"]["type"] == "app_mention"
    ]
    try:
        with SlackSender(f"http://127.0.0.1:{server.server_port}/slack/events", SECRET) as sender:
            sender.event(body)
            sender.event(body, retry=1, reason="http_timeout")
    finally:
        server.shutdown()

    (first, raw1), (retry, raw2) = _Recorder.seen
    assert raw1 == raw2 and json.loads(raw2)["event_id"] == body["event_id"]
    assert "x-slack-retry-num" not in first
    assert (retry["x-slack-retry-num"], retry["x-slack-retry-reason"]) == ("1", "http_timeout")
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(raw2, retry["x-slack-request-timestamp"], retry["x-slack-signature"])


def test_over_socket_mode_users_events_arrive_and_can_be_redelivered(fake: FakeSlack) -> None:
    with FakeSocketMode() as socket_mode:
        socket_mode.attach(fake)
        app = App(client=WebClient(base_url=fake.api_url, token=TOKEN))
        seen: list[tuple[str, int]] = []

        @app.event("app_mention")
        def on_mention(body, request) -> None:  # type: ignore[no-untyped-def]
            retry = request.headers.get("x-slack-retry-num") or ["0"]
            seen.append((body["event_id"], int(retry[0])))

        @app.event("message")
        def on_message() -> None:
            pass

        handler = SocketModeHandler(app, "xapp-1-test")
        try:
            handler.connect()
            socket_mode.wait_connected()
            bodies = fake.user_posts(CHANNEL, f"<@{fake.bot_user_id}> go")
            mention = bodies[-1]
            socket_mode.push_envelope(
                "events_api", mention, retry_attempt=1, retry_reason="timeout"
            )
            socket_mode.wait_for(lambda: len(seen) >= 2)
        finally:
            socket_mode.close_client(handler)

    assert sorted(seen) == [(mention["event_id"], 0), (mention["event_id"], 1)]


# --------------------------------------------------------------------------- feedback buttons


def test_a_feedback_click_is_a_block_actions_payload_bolt_routes(
    fake: FakeSlack, web: WebClient
) -> None:
    ts = start(web, asked(fake), markdown_text="the answer")
    web.chat_stopStream(channel=CHANNEL, ts=ts, blocks=[FEEDBACK])
    payload = fake.feedback_click(CHANNEL, ts, user="U0FAN", positive=False)

    action = payload["actions"][0]
    assert (action["type"], action["action_id"], action["value"]) == (
        "feedback_buttons",
        "aico_feedback",
        "bad",
    )
    assert payload["container"]["message_ts"] == ts and payload["user"]["id"] == "U0FAN"

    app = App(
        client=WebClient(base_url=fake.api_url, token=TOKEN),
        signing_secret=SECRET,
        token_verification_enabled=False,
    )
    clicks: list[str] = []

    @app.action("aico_feedback")
    def on_feedback(ack, action) -> None:  # type: ignore[no-untyped-def]
        ack()
        clicks.append(action["value"])

    raw = block_actions_body(payload).decode()
    headers = {k.lower(): [v] for k, v in sign(SECRET, raw).items()}
    headers["content-type"] = ["application/x-www-form-urlencoded"]
    response = app.dispatch(BoltRequest(body=raw, headers=headers))
    assert response.status == 200 and clicks == ["bad"]


def test_a_message_without_feedback_buttons_cannot_be_clicked(
    fake: FakeSlack, web: WebClient
) -> None:
    ts = web.chat_postMessage(channel=CHANNEL, text="no buttons")["ts"]
    with pytest.raises(ValueError, match="no feedback buttons"):
        fake.feedback_click(CHANNEL, ts)


# --------------------------------------------------------------------------- blocks


def plain(text: str) -> dict:
    return {"type": "plain_text", "text": text}


def feedback_with(**changes: Any) -> dict:
    element = {**FEEDBACK["elements"][0], **changes}  # type: ignore[index]
    return {"type": "context_actions", "elements": [element]}


@pytest.mark.parametrize(
    "block",
    [
        {"type": "context_actions", "elements": []},
        {"type": "context_actions", "elements": [FEEDBACK["elements"][0]] * 6},  # type: ignore[index]
        {"type": "context_actions", "elements": [{"type": "button", "text": plain("x")}]},
        feedback_with(negative_button={"text": plain("x" * 76), "value": "bad"}),
        feedback_with(positive_button={"text": {"type": "mrkdwn", "text": "Good"}, "value": "g"}),
        feedback_with(positive_button={"text": plain("Good"), "value": "v" * 2001}),
        {"type": "context_actions", "elements": [{"type": "icon_button", "text": plain("Del")}]},
        {"type": "task_card", "task_id": "1", "title": "t", "status": "done"},
        {"type": "plan", "title": "p", "tasks": [{"task_id": "1", "title": "t"}]},
    ],
)
def test_malformed_agent_blocks_are_invalid_blocks(web: WebClient, block: dict) -> None:
    assert error_of(web.chat_postMessage, channel=CHANNEL, text="x", blocks=[block]) == (
        "invalid_blocks"
    )


def test_agent_answer_blocks_are_accepted(web: WebClient) -> None:
    task = {"type": "task_card", "task_id": "1", "title": "Read the repo", "status": "complete"}
    blocks = [
        FEEDBACK,
        {
            "type": "context_actions",
            "elements": [{"type": "icon_button", "icon": "trash", "text": plain("Delete")}],
        },
        task,
        {"type": "plan", "title": "Plan", "tasks": [task]},
    ]
    assert web.chat_postMessage(channel=CHANNEL, text="answer", blocks=blocks)["ok"]


# --------------------------------------------------------------------------- files from users


def fetch(url: str, token: str | None = None, follow: bool = True) -> tuple[int, str, bytes, str]:
    """(status, content type, body, Location) of a GET, with the token as Slack wants it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if follow:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read(), ""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    conn.request("GET", parts.path, headers=headers)
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return answer.status, answer.headers["Content-Type"], body, answer.headers["Location"] or ""


def test_a_users_file_downloads_only_with_the_bot_token(fake: FakeSlack, web: WebClient) -> None:
    png = b"\x89PNG\r\n\x1a\nfake image"
    file = fake.add_file(CHANNEL, "chart.png", "image/png", png, user=USER)

    assert (file["name"], file["mimetype"], file["filetype"], file["size"]) == (
        "chart.png",
        "image/png",
        "png",
        len(png),
    )
    for url in (file["url_private"], file["url_private_download"]):
        assert fetch(url, TOKEN)[:3] == (200, "image/png", png)
    status, _, _, location = fetch(file["url_private_download"], follow=False)
    assert status == 302 and "?redir=%2Ffiles-pri%2F" in location
    for token in (None, "xoxb-someone-else"):
        status, kind, body, _ = fetch(file["url_private_download"], token)
        assert (status, kind.split(";")[0]) == (200, "text/html")
        assert body.startswith(b"<!DOCTYPE html>") and png not in body
    assert (
        web.files_info(file=file["id"])["file"]["url_private_download"]
        == file["url_private_download"]
    )


def test_without_files_read_neither_files_info_nor_the_download_work(
    fake: FakeSlack, web: WebClient
) -> None:
    file = fake.add_file(CHANNEL, "notes.txt", "text/plain", b"hello", user=USER)
    fake.missing_scopes.add("files:read")

    assert error_of(web.files_info, file=file["id"]) == "missing_scope"
    assert fetch(file["url_private"], TOKEN, follow=False)[0] == 302


def test_a_message_with_files_is_a_file_share_event(fake: FakeSlack) -> None:
    file = fake.add_file(CHANNEL, "report.pdf", "application/pdf", b"%PDF-1.4", user=USER)

    bodies = fake.user_posts(CHANNEL, f"<@{fake.bot_user_id}> read this", files=[file])

    message, mention = (b["event"] for b in bodies)
    assert message["subtype"] == "file_share" and message["files"] == [file]
    assert mention["files"][0]["url_private_download"] == file["url_private_download"]
    stored = fake.messages(CHANNEL)[0]
    assert stored["files"][0]["id"] == file["id"]
    assert parse_qs(urlsplit(file["url_private"]).query) == {}
