"""What the canary stands on, taught to the fakes and checked with the REAL slack_sdk / Bolt
clients: a deaf socket (pongs and acks flow, no envelope comes), and the app's own posts coming
back to it as `message` events."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from aico.fakes.slack import BOT_EVENTS, FakeSlack
from aico.fakes.socket_mode import FakeSocketMode
from tests.twins.polling import until

TOKEN = "xoxb-test"
CHANNEL = "C0CHAN1"
MANIFEST = Path(__file__).parents[3] / "manifest.yml"
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")
METADATA = {"event_type": "aico_canary", "event_payload": {"host": "h:1"}}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:  # slack_sdk ignores NO_PROXY
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(bot_token=TOKEN) as server:
        yield server


@pytest.fixture
def socket_mode(fake: FakeSlack) -> Iterator[FakeSocketMode]:
    with FakeSocketMode() as server:
        server.attach(fake)
        yield server


@pytest.fixture
def web(fake: FakeSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.api_url)


class Heard:
    """slack_sdk's built-in client, acking every request and keeping what it was sent."""

    def __init__(self, fake: FakeSlack, **options) -> None:  # type: ignore[no-untyped-def]
        web = WebClient(token=TOKEN, base_url=fake.api_url)
        self.client = SocketModeClient(app_token="xapp-1-test", web_client=web, **options)
        self.requests: list[SocketModeRequest] = []
        self.hold = threading.Event()
        self.hold.set()
        self._lock = threading.Lock()
        self.client.socket_mode_request_listeners.append(self._on_request)

    def _on_request(self, client: SocketModeClient, request: SocketModeRequest) -> None:
        with self._lock:
            self.requests.append(request)
        self.hold.wait(10)
        client.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    def events(self) -> list[dict]:
        with self._lock:
            return [r.payload["event"] for r in self.requests if r.type == "events_api"]


# --------------------------------------------------------------------------- a deaf socket


def test_a_deaf_socket_keeps_answering_pings_so_the_client_keeps_it(
    fake: FakeSlack, socket_mode: FakeSocketMode
) -> None:
    heard = Heard(fake, ping_interval=0.5)  # a mute socket is stale after 4 x 0.5 s
    try:
        heard.client.connect()
        socket_mode.wait_connects(1)

        # When Slack's side stops routing envelopes to the connection
        deaf_at = time.time()
        assert socket_mode.go_deaf() == 1
        counts = (socket_mode.connections, socket_mode.live_connections)

        # Then pongs keep coming well past the stale limit, and the client stays on it
        session = heard.client.current_session
        assert session is not None
        until(lambda: (session.last_ping_pong_time or 0) > deaf_at + 3.0, timeout=10)
        assert socket_mode.connects == 1 and heard.client.is_connected()
    finally:
        socket_mode.close_client(heard.client)

    assert counts == (1, 0), "open, and no envelope goes to it"
    # closed by the client at the end (the fake's side sees the close a moment later)
    until(lambda: socket_mode.deaf_connections == 0, timeout=5)


def test_a_deaf_socket_gets_no_envelope_and_its_event_comes_on_the_next_connection(
    fake: FakeSlack, socket_mode: FakeSocketMode, web: WebClient
) -> None:
    socket_mode.ack_timeout = 2.0  # a loaded machine may take long over an ack: no second copy
    heard = Heard(fake)
    try:
        heard.client.connect()
        socket_mode.wait_connects(1)
        socket_mode.go_deaf()

        # When the app posts while its only socket is deaf
        ts = web.chat_postMessage(channel=CHANNEL, text="anyone there?")["ts"]
        socket_mode.wait_for(lambda: socket_mode.lost)
        nothing_yet = heard.events()

        # And the client opens a new connection, the way slack_sdk answers a `disconnect`
        heard.client.connect_to_new_endpoint(force=True)
        socket_mode.wait_for(lambda: socket_mode.connects == 2 and socket_mode.connections == 1)

        # Then Slack delivers the unacked event again, on the new connection
        until(heard.events, timeout=10)
    finally:
        socket_mode.close_client(heard.client)

    assert nothing_yet == []
    assert [e["ts"] for e in heard.events()] == [ts]
    [lost] = socket_mode.lost
    [again] = [e for e in socket_mode.sent if e["payload"]["event"]["ts"] == ts]
    assert (lost["retry_attempt"], again["retry_attempt"]) == (0, 1)
    assert again["retry_reason"] == "timeout"
    assert socket_mode.deaf_connections == 0, "the old connection was closed"


def test_acks_still_flow_on_a_deaf_socket(fake: FakeSlack, socket_mode: FakeSocketMode) -> None:
    heard = Heard(fake)
    heard.hold.clear()  # the client takes its time over the envelope
    try:
        heard.client.connect()
        socket_mode.wait_connects(1)
        envelope_id = socket_mode.push_envelope("slash_commands", {"command": "/aico"})
        until(lambda: heard.requests)

        # When the socket goes deaf before the client answers
        socket_mode.go_deaf()
        heard.hold.set()

        # Then its ack still reaches Slack
        ack = socket_mode.wait_ack(envelope_id)
    finally:
        socket_mode.close_client(heard.client)

    assert ack == {}


# --------------------------------------------------------------------------- own posts come back


def test_the_apps_own_post_comes_back_as_a_message_event(
    fake: FakeSlack, socket_mode: FakeSocketMode, web: WebClient
) -> None:
    heard = Heard(fake)
    try:
        heard.client.connect()
        socket_mode.wait_connects(1)
        posted = web.chat_postMessage(channel=CHANNEL, text="aico canary", metadata=METADATA)
        [event] = until(heard.events)
        [body] = [r.payload for r in heard.requests]
    finally:
        socket_mode.close_client(heard.client)

    assert {k: event[k] for k in ("type", "user", "bot_id", "channel", "ts", "text")} == {
        "type": "message",
        "user": fake.bot_user_id,
        "bot_id": fake.bot_id,
        "channel": CHANNEL,
        "ts": posted["ts"],
        "text": "aico canary",
    }
    assert event["channel_type"] == "channel" and event["event_ts"] == posted["ts"]
    assert event["bot_profile"]["app_id"] == fake.app_id
    assert "subtype" not in event and "metadata" not in event
    assert body["type"] == "event_callback" and body["api_app_id"] == fake.app_id
    assert body["authorizations"][0]["user_id"] == fake.bot_user_id


def test_a_reply_event_names_its_thread(fake: FakeSlack, web: WebClient) -> None:
    bodies: list[dict] = []
    fake.on_event.append(bodies.append)

    parent = web.chat_postMessage(channel=CHANNEL, text="parent")["ts"]
    reply = web.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=parent)["ts"]

    event = bodies[-1]["event"]
    assert (event["ts"], event["thread_ts"], event["parent_user_id"]) == (
        reply,
        parent,
        fake.bot_user_id,
    )


def test_only_channels_of_a_subscribed_kind_send_message_events(
    fake: FakeSlack, web: WebClient
) -> None:
    bodies: list[dict] = []
    fake.on_event.append(bodies.append)

    fake.bot_events = {"message.channels", "message.im"}  # as an app that skips private ones
    web.chat_postMessage(channel="C0PUBLIC", text="public")
    web.chat_postMessage(channel="G0PRIVATE", text="private")  # message.groups: not subscribed
    web.chat_postMessage(channel="D0DIRECT", text="direct")
    fake.add_message(CHANNEL, "a person's message is the test's, not the app's")

    assert [(b["event"]["channel_type"], b["event"]["text"]) for b in bodies] == [
        ("channel", "public"),
        ("im", "direct"),
    ]


def test_the_fakes_subscriptions_are_the_manifests() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    subscribed = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {e for e in subscribed if e.startswith("message.")} == BOT_EVENTS


def test_a_deleted_post_comes_back_as_message_deleted(fake: FakeSlack, web: WebClient) -> None:
    bodies: list[dict] = []
    fake.on_event.append(bodies.append)
    ts = web.chat_postMessage(channel=CHANNEL, text="aico canary")["ts"]

    web.chat_delete(channel=CHANNEL, ts=ts)

    event = bodies[-1]["event"]
    assert (event["type"], event["subtype"]) == ("message", "message_deleted")
    assert event["hidden"] is True
    assert event["deleted_ts"] == ts and event["ts"] != ts
    assert event["previous_message"]["bot_id"] == fake.bot_id
    assert fake.message(CHANNEL, ts) is None


@pytest.mark.parametrize(
    ("whose", "error"),
    [("a person's", "cant_delete_message"), ("no one's", "message_not_found")],
)
def test_chat_delete_takes_only_the_apps_own_messages(
    fake: FakeSlack, web: WebClient, whose: str, error: str
) -> None:
    ts = fake.add_message(CHANNEL, "mine")["ts"] if whose == "a person's" else "1.000001"

    with pytest.raises(SlackApiError) as refused:
        web.chat_delete(channel=CHANNEL, ts=ts)

    assert refused.value.response["error"] == error


def test_bolt_acks_the_apps_own_message_events_and_no_listener_sees_them(
    fake: FakeSlack, socket_mode: FakeSocketMode, web: WebClient
) -> None:
    # bolt-python's IgnoringSelfEvents: why the canary listens beside Bolt, on the socket client
    app = App(client=WebClient(token=TOKEN, base_url=fake.api_url))
    seen: list[dict] = []
    app.event("message")(lambda event: seen.append(event))
    handler = SocketModeHandler(app, "xapp-1-test")
    try:
        handler.connect()
        socket_mode.wait_connects(1)
        web.chat_postMessage(channel=CHANNEL, text="aico canary")
        [envelope] = socket_mode.wait_for(lambda: socket_mode.sent)
        ack = socket_mode.wait_ack(envelope["envelope_id"])
        socket_mode.send_event({**envelope["payload"], "event": person(CHANNEL)})
        until(lambda: seen)  # a person's message gets through
    finally:
        socket_mode.close_client(handler)

    assert ack == {}
    assert [e["user"] for e in seen] == ["U0USER1"]


def person(channel: str) -> dict:
    ts = "1700000000.000900"
    return {"type": "message", "user": "U0USER1", "text": "hi", "ts": ts, "channel": channel}
