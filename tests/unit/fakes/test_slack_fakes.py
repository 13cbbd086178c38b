"""The fakes, driven by the REAL slack_sdk / slack_bolt clients over real sockets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from core.adapters.slack import web_client
from tests.fakes.signing import (
    SlackSender,
    block_actions_body,
    sign,
    slash_command_body,
    slash_command_fields,
)
from tests.fakes.slack import FakeSlack
from tests.fakes.socket_mode import FakeSocketMode

TOKEN = "xoxb-test"
CHANNEL = "C0CHAN1"
MENTION = {
    "type": "event_callback",
    "team_id": "T0AICO",
    "api_app_id": "A0AICO",
    "event_id": "Ev0001",
    "event_time": 1700000000,
    "event": {
        "type": "app_mention",
        "user": "U0USER1",
        "text": "<@U0AICOBOT> hi",
        "ts": "1700000000.000001",
        "channel": CHANNEL,
        "event_ts": "1700000000.000001",
    },
    "authorizations": [{"team_id": "T0AICO", "user_id": "U0AICOBOT", "is_bot": True}],
}
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(bot_token=TOKEN) as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.api_url)


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


# --------------------------------------------------------------------------- chat + threads


def test_post_reply_update_show_up_in_views(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="task started", blocks=[section("hi")])
    reply = client.chat_postMessage(channel=CHANNEL, text="step 1", thread_ts=parent["ts"])
    client.chat_update(channel=CHANNEL, ts=reply["ts"], text="step 1 done")

    assert parent["message"]["blocks"] == [section("hi")]
    assert float(reply["ts"]) > float(parent["ts"])
    [top] = fake.messages(CHANNEL)
    assert (top["ts"], top["text"], top["user"]) == (parent["ts"], "task started", "U0AICOBOT")
    assert (top["thread_ts"], top["reply_count"]) == (parent["ts"], 1)
    [stored_reply] = fake.replies(CHANNEL, parent["ts"])
    assert stored_reply["text"] == "step 1 done"
    assert stored_reply["edited"]["user"] == "U0AICOBOT"
    assert stored_reply["history"] == [{"text": "step 1"}]
    assert fake.message(CHANNEL, reply["ts"])["thread_ts"] == parent["ts"]


def test_conversations_replies_and_history(client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="parent")
    client.chat_postMessage(channel=CHANNEL, text="r1", thread_ts=parent["ts"])
    client.chat_postMessage(channel=CHANNEL, text="later top level")

    thread = client.conversations_replies(channel=CHANNEL, ts=parent["ts"])["messages"]
    history = client.conversations_history(channel=CHANNEL)["messages"]

    assert [m["text"] for m in thread] == ["parent", "r1"]
    assert [m["text"] for m in history] == ["later top level", "parent"]


def test_human_message_threads_and_cannot_be_edited_by_bot(
    fake: FakeSlack, client: WebClient
) -> None:
    human = fake.add_message(CHANNEL, "please deploy", user="U0USER1", ts="1750000000.000001")
    reply = client.chat_postMessage(channel=CHANNEL, text="deploying", thread_ts=human["ts"])

    thread = client.conversations_replies(channel=CHANNEL, ts=human["ts"])["messages"]
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel=CHANNEL, ts=human["ts"], text="hijacked")

    assert float(reply["ts"]) > float(human["ts"])
    assert [(m["user"], m["text"]) for m in thread] == [
        ("U0USER1", "please deploy"),
        ("U0AICOBOT", "deploying"),
    ]
    assert thread[1]["parent_user_id"] == "U0USER1"
    assert err.value.response["error"] == "cant_update_message"


def test_update_of_unknown_message_fails(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel=CHANNEL, ts="1.000001", text="x")
    assert err.value.response["error"] == "message_not_found"


def test_not_in_channel_and_unknown_method(fake: FakeSlack, client: WebClient) -> None:
    fake.not_in_channel.add("C0SECRET")
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0SECRET", text="x")
    assert err.value.response["error"] == "not_in_channel"
    with pytest.raises(SlackApiError) as err:
        client.api_call("no.such.method")
    assert err.value.response["error"] == "unknown_method"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"text": "x" * 40_001}, "msg_too_long"),
        ({"text": "t", "blocks": [section("s")] * 51}, "invalid_blocks"),
        ({"text": "t", "blocks": [section("s" * 3_001)]}, "invalid_blocks"),
        ({"text": "t", "blocks": [header("h" * 151)]}, "invalid_blocks"),
        ({"text": "t", "blocks": "[{not json"}, "invalid_blocks_format"),
        ({}, "no_text"),
    ],
    ids=["text", "block-count", "section-text", "header-text", "blocks-json", "empty"],
)
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_size_limits_like_slack(client: WebClient, kwargs: dict, error: str) -> None:
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel=CHANNEL, **kwargs)
    assert err.value.response.status_code == 200
    assert err.value.response["error"] == error


def test_content_exactly_at_the_limits_is_accepted(fake: FakeSlack, client: WebClient) -> None:
    blocks = [header("h" * 150), section("s" * 3_000)] + [section("s")] * 48
    client.chat_postMessage(channel=CHANNEL, text="x" * 40_000, blocks=blocks)
    assert len(fake.messages(CHANNEL)[0]["blocks"]) == 50


def test_form_encoded_blocks_are_decoded(fake: FakeSlack, client: WebClient) -> None:
    client.api_call("chat.postMessage", data={"channel": CHANNEL, "blocks": '[{"type":"divider"}]'})
    [call] = fake.calls_to("chat.postMessage")
    assert call.params["blocks"] == [{"type": "divider"}]
    assert call.headers["authorization"] == f"Bearer {TOKEN}"


# --------------------------------------------------------------------------- files


def test_files_upload_v2_lands_as_one_thread_message(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="report coming")
    content = "line one\nline two\n" * 100

    result = client.files_upload_v2(
        channel=CHANNEL,
        thread_ts=parent["ts"],
        content=content,
        filename="report.txt",
        title="Report",
        initial_comment="here it is",
    )

    [message] = fake.replies(CHANNEL, parent["ts"])
    [file] = message["files"]
    assert message["text"] == "here it is"
    assert (file["id"], file["title"], file["name"]) == (
        result["file"]["id"],
        "Report",
        "report.txt",
    )
    assert fake.file_content(file["id"]) == content.encode()
    assert file["size"] == len(content.encode())
    assert len(fake.messages(CHANNEL)) == 1


# --------------------------------------------------------------------------- faults


def test_rate_limit_is_retried_by_the_retry_handler(fake: FakeSlack) -> None:
    retrying = WebClient(
        token=TOKEN,
        base_url=fake.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    fake.fail_next("chat.postMessage", count=2, retry_after=0)

    response = retrying.chat_postMessage(channel=CHANNEL, text="eventually")

    assert response["ok"]
    assert len(fake.calls_to("chat.postMessage")) == 3
    assert [m["text"] for m in fake.messages(CHANNEL)] == ["eventually"]


def test_injected_faults_reach_a_plain_client(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("chat.postMessage", retry_after=7)
    fake.fail_next("chat.update", status=200, error="edit_window_closed")
    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel=CHANNEL, text="x")
    ts = client.chat_postMessage(channel=CHANNEL, text="x")["ts"]
    with pytest.raises(SlackApiError) as api_error:
        client.chat_update(channel=CHANNEL, ts=ts, text="y")

    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] in ("7", ["7"])
    assert limited.value.response["error"] == "ratelimited"
    assert api_error.value.response["error"] == "edit_window_closed"


def test_a_lost_answer_is_the_trap_of_retried_connection_errors(
    fake: FakeSlack, client: WebClient
) -> None:
    # slack_sdk's default client retries a connection error: the post lands twice
    fake.lose_answer_next("chat.postMessage")
    client.chat_postMessage(channel=CHANNEL, text="posted twice")
    assert [m["text"] for m in fake.messages(CHANNEL)] == ["posted twice"] * 2

    # aico's client does not retry it: the caller learns the outcome is unknown
    aico = web_client(TOKEN, fake.api_url)
    fake.lose_answer_next("chat.postMessage")
    metadata = {"event_type": "aico_task", "event_payload": {"task_id": "t1"}}
    with pytest.raises(OSError):
        aico.chat_postMessage(channel="C0OTHER", text="maybe posted", metadata=metadata)
    (posted,) = aico.conversations_history(channel="C0OTHER")["messages"]
    assert posted["text"] == "maybe posted" and posted["metadata"] == metadata


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("token", ["xoxb-wrong", None])
def test_bad_or_missing_token_is_invalid_auth(fake: FakeSlack, token: str | None) -> None:
    with pytest.raises(SlackApiError) as err:
        WebClient(token=token, base_url=fake.api_url).auth_test()
    assert err.value.response["error"] == "invalid_auth"


def test_auth_test_and_app_token_rules(fake: FakeSlack, client: WebClient) -> None:
    fake.socket_mode_url = "ws://127.0.0.1:1/link/"
    auth = client.auth_test()
    assert (auth["team_id"], auth["user_id"], auth["bot_id"]) == (
        "T0AICO",
        "U0AICOBOT",
        "B0AICOBOT",
    )
    assert client.apps_connections_open(app_token="xapp-1-x")["url"] == fake.socket_mode_url
    with pytest.raises(SlackApiError) as err:
        client.apps_connections_open(app_token=TOKEN)
    assert err.value.response["error"] == "not_allowed_token_type"


# --------------------------------------------------------------------------- response_url


def test_response_url_in_channel_ephemeral_and_use_limit(fake: FakeSlack) -> None:
    url = fake.new_response_url(channel=CHANNEL)
    hook = WebhookClient(url)

    first = hook.send(text="for everyone", response_type="in_channel")
    second = hook.send(text="just for you")
    statuses = [hook.send(text=f"n{i}").status_code for i in range(3)]
    used = hook.send(text="sixth")

    assert (first.status_code, first.body) == (200, "ok")
    assert [m["text"] for m in fake.messages(CHANNEL)] == ["for everyone"]
    assert [e["text"] for e in fake.ephemerals(CHANNEL)] == ["just for you", "n0", "n1", "n2"]
    assert second.status_code == 200
    assert statuses == [200, 200, 200]
    assert (used.status_code, used.body) == (404, "used_url")
    assert [r.response_type for r in fake.responses_for(url)][:2] == ["in_channel", "ephemeral"]
    assert len(fake.responses_for(url)) == 5


def test_response_url_replace_and_unknown(fake: FakeSlack, client: WebClient) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="pick one")["ts"]
    url = fake.new_response_url(channel=CHANNEL, message_ts=ts)

    WebhookClient(url).send(text="picked", replace_original=True)
    unknown = WebhookClient(f"{fake.base_url}/response/nope").send(text="x")

    assert fake.message(CHANNEL, ts)["text"] == "picked"
    assert fake.responses[0].replace_original is True
    assert (unknown.status_code, unknown.body) == (404, "no_active_hooks")


# --------------------------------------------------------------------------- waiting


def test_wait_for_wakes_on_change_and_times_out(fake: FakeSlack, client: WebClient) -> None:
    seen: list[tuple[str, str]] = []
    fake.on_change.append(lambda kind, channel, msg: seen.append((kind, msg["text"])))
    poster = threading.Timer(
        0.05, client.chat_postMessage, kwargs={"channel": CHANNEL, "text": "a"}
    )
    poster.start()

    messages = fake.wait_for(lambda: fake.messages(CHANNEL), timeout=5)
    poster.join()

    assert messages[0]["text"] == "a"
    assert seen == [("posted", "a")]
    with pytest.raises(TimeoutError, match=r"chat.postMessage\(channel='C0CHAN1'"):
        fake.wait_for(lambda: fake.messages("C0EMPTY"), timeout=0.1)


# --------------------------------------------------------------------------- signing


def test_signature_accepted_by_slack_sdk_and_tamper_rejected() -> None:
    body = slash_command_body("deploy api", response_url="http://127.0.0.1:1/response/x")
    headers = sign("s3cret", body)
    verifier = SignatureVerifier("s3cret")

    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body + b"&x=1", headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)


def test_slash_command_body_carries_every_field() -> None:
    fields = {k: v[0] for k, v in parse_qs(slash_command_body("hi there").decode()).items()}
    expected = set(slash_command_fields("x")) - {"text"}
    assert expected <= set(fields)
    assert (fields["command"], fields["text"], fields["is_enterprise_install"]) == (
        "/aico",
        "hi there",
        "false",
    )
    assert block_actions_body({"type": "block_actions"}).startswith(b"payload=%7B%22type")


def test_sender_reuses_one_keep_alive_connection(fake: FakeSlack) -> None:
    url = fake.new_response_url(channel=CHANNEL)
    with SlackSender(url, "s3cret") as sender:
        status1, text1, _ = sender.post(b'{"text":"a"}', "application/json")
        sock = sender._conn.sock
        status2, text2, elapsed = sender.post(b'{"text":"b"}', "application/json")
        assert sender._conn.sock is sock
    assert (status1, text1, status2, text2) == (200, "ok", 200, "ok")
    assert elapsed < 1


# --------------------------------------------------------------------------- socket mode


def test_bolt_socket_mode_handler_acks_slash_command(fake: FakeSlack) -> None:
    with FakeSocketMode() as socket_mode:
        fake.socket_mode_url = socket_mode.url
        app = App(client=WebClient(base_url=fake.api_url, token=TOKEN))

        @app.command("/aico")
        def on_command(ack, command) -> None:  # type: ignore[no-untyped-def]
            ack(f"on it: {command['text']}")

        @app.event("app_mention")
        def on_mention(event, say) -> None:  # type: ignore[no-untyped-def]
            say(text="hello back", thread_ts=event["ts"])

        handler = SocketModeHandler(app, "xapp-1-test")
        try:
            handler.connect()
            ack = socket_mode.send_slash_command(slash_command_fields("ship it"), timeout=10)
            event_ack = socket_mode.send_event(MENTION, timeout=10)
            replies = fake.wait_for(lambda: fake.replies(CHANNEL, "1700000000.000001"))
        finally:
            socket_mode.close_client(handler)

    assert ack == {"text": "on it: ship it"}
    assert socket_mode.frames[0] == {
        "envelope_id": socket_mode.sent[0]["envelope_id"],
        "payload": ack,
    }
    assert event_ack == {}
    assert [r["text"] for r in replies] == ["hello back"]
    assert [c.method for c in fake.calls][:2] == ["auth.test", "apps.connections.open"]
