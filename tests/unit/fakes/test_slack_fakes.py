"""The fakes, driven by the REAL slack_sdk / slack_bolt clients over real sockets."""

from __future__ import annotations

import json
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
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.webhook import WebhookClient

from aico.fakes.signing import (
    SlackSender,
    block_actions_body,
    sign,
    slash_command_body,
    slash_command_fields,
)
from aico.fakes.slack import FakeSlack
from aico.fakes.socket_mode import FakeSocketMode
from core.adapters.slack import web_client

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

    [message] = fake.wait_for(lambda: fake.replies(CHANNEL, parent["ts"]))  # shared a bit later
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
    history = aico.conversations_history(channel="C0OTHER", include_all_metadata=True)
    (posted,) = history["messages"]
    assert posted["text"] == "maybe posted" and posted["metadata"] == metadata


def test_a_held_answer_comes_late_for_the_matching_call_only(
    fake: FakeSlack, client: WebClient
) -> None:
    # Given a hold on the next reply in a thread
    parent = client.chat_postMessage(channel=CHANNEL, text="parent")["ts"]
    fake.hold_answer_next("chat.postMessage", 1.0, when=lambda p: bool(p.get("thread_ts")))

    # A top-level post is answered at once; the reply is in the thread before its answer comes
    client.chat_postMessage(channel=CHANNEL, text="not held")
    answered = threading.Event()
    replying = threading.Thread(
        target=lambda: (
            client.chat_postMessage(channel=CHANNEL, thread_ts=parent, text="held"),
            answered.set(),
        )
    )
    replying.start()
    fake.wait_for(lambda: fake.replies(CHANNEL, parent), timeout=5)
    assert not answered.is_set()
    replying.join(5)
    assert answered.is_set()

    # Later replies are posted as usual
    client.chat_postMessage(channel=CHANNEL, thread_ts=parent, text="at once")
    assert [m["text"] for m in fake.replies(CHANNEL, parent)] == ["held", "at once"]


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


# --------------------------------------------------------------------------- Slack's rules

TASK_METADATA = {"event_type": "aico_task", "event_payload": {"task_id": "t1"}}


@pytest.fixture
def frozen() -> Iterator[FakeSlack]:
    """A fake whose time moves only by advance()."""
    with FakeSlack(bot_token=TOKEN, clock=lambda: 0.0) as server:
        yield server


def test_metadata_is_returned_only_when_asked_for(client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="task", metadata=TASK_METADATA)
    client.chat_postMessage(
        channel=CHANNEL, text="answer", thread_ts=parent["ts"], metadata=TASK_METADATA
    )

    plain_history = client.conversations_history(channel=CHANNEL)["messages"]
    plain_thread = client.conversations_replies(channel=CHANNEL, ts=parent["ts"])["messages"]
    history = client.conversations_history(channel=CHANNEL, include_all_metadata=True)
    thread = client.conversations_replies(channel=CHANNEL, ts=parent["ts"], include_all_metadata=1)

    assert [("metadata" in m) for m in plain_history + plain_thread] == [False] * 3
    assert [m["metadata"] for m in history["messages"]] == [TASK_METADATA]
    assert [m["metadata"] for m in thread["messages"]] == [TASK_METADATA] * 2


def test_blocks_whose_text_adds_up_beyond_the_limit_are_too_long(
    fake: FakeSlack, client: WebClient
) -> None:
    at_limit = [section("s" * 3_000)] * 4  # 12,000 characters
    over = [*at_limit, {"type": "context", "elements": [{"type": "mrkdwn", "text": "!"}]}]
    ts = client.chat_postMessage(channel=CHANNEL, text="t", blocks=at_limit)["ts"]

    with pytest.raises(SlackApiError) as posted:
        client.chat_postMessage(channel=CHANNEL, text="t", blocks=over)
    with pytest.raises(SlackApiError) as updated:
        client.chat_update(channel=CHANNEL, ts=ts, text="t", blocks=over)
    hooked = WebhookClient(fake.new_response_url(channel=CHANNEL)).send(text="t", blocks=over)

    assert posted.value.response["error"] == "msg_blocks_too_long"
    assert updated.value.response["error"] == "msg_blocks_too_long"
    assert (hooked.status_code, hooked.body) == (400, "msg_blocks_too_long")
    assert [len(m["blocks"]) for m in fake.messages(CHANNEL)] == [4]
    assert fake.ephemerals() == []


def test_a_reply_to_a_reply_lands_in_the_parents_thread(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="parent")
    first = client.chat_postMessage(channel=CHANNEL, text="r1", thread_ts=parent["ts"])

    second = client.chat_postMessage(channel=CHANNEL, text="r2", thread_ts=first["ts"])

    assert second["message"]["thread_ts"] == parent["ts"]
    thread = client.conversations_replies(channel=CHANNEL, ts=parent["ts"])["messages"]
    assert [m["text"] for m in thread] == ["parent", "r1", "r2"]
    assert thread[0]["reply_count"] == 2
    assert fake.replies(CHANNEL, first["ts"]) == []


def test_a_thread_ts_naming_no_message_posts_where_no_one_sees_it(
    fake: FakeSlack, client: WebClient
) -> None:
    lost = client.chat_postMessage(channel=CHANNEL, text="into the void", thread_ts="1.000001")

    assert lost["ok"] and lost["message"]["thread_ts"] == "1.000001"
    assert client.conversations_history(channel=CHANNEL)["messages"] == []
    with pytest.raises(SlackApiError) as err:
        client.conversations_replies(channel=CHANNEL, ts="1.000001")
    assert err.value.response["error"] == "thread_not_found"
    assert [m["text"] for m in fake.replies(CHANNEL, "1.000001")] == ["into the void"]


def test_the_status_line_wants_the_threads_root(client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="parent")
    reply = client.chat_postMessage(channel=CHANNEL, text="r1", thread_ts=parent["ts"])

    client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=parent["ts"], status="…")
    with pytest.raises(SlackApiError) as err:
        client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=reply["ts"], status="…")
    assert err.value.response["error"] == "invalid_thread_ts"


def test_an_uploaded_file_shows_in_its_thread_only_after_the_share_delay(
    frozen: FakeSlack,
) -> None:
    frozen.file_share_delay = 5.0
    client = WebClient(token=TOKEN, base_url=frozen.api_url)
    parent = client.chat_postMessage(channel=CHANNEL, text="report coming")

    upload = client.files_upload_v2(
        channel=CHANNEL, thread_ts=parent["ts"], content="x" * 100, filename="r.md"
    )
    file_id = upload["file"]["id"]
    before = client.conversations_replies(channel=CHANNEL, ts=parent["ts"])["messages"]
    info_before = client.files_info(file=file_id)["file"]
    frozen.advance(5.0)
    after = client.conversations_replies(channel=CHANNEL, ts=parent["ts"])["messages"]

    assert [m["text"] for m in before] == ["report coming"]
    assert "shares" not in upload["file"] and "shares" not in info_before
    assert frozen.pending_shares == 0
    assert [f["id"] for f in after[1]["files"]] == [file_id]
    [share] = client.files_info(file=file_id)["file"]["shares"]["public"][CHANNEL]
    assert (share["ts"], share["thread_ts"]) == (after[1]["ts"], parent["ts"])


def test_no_share_delay_shows_the_file_at_once(fake: FakeSlack, client: WebClient) -> None:
    fake.file_share_delay = 0
    client.files_upload_v2(channel=CHANNEL, content="now", filename="now.txt")
    [message] = fake.messages(CHANNEL)
    assert message["files"][0]["name"] == "now.txt"


def test_rate_limits_are_off_unless_turned_on(fake: FakeSlack, client: WebClient) -> None:
    for i in range(20):
        client.chat_postMessage(channel=CHANNEL, text=f"m{i}")
    assert len(fake.messages(CHANNEL)) == 20


def test_posts_to_one_channel_beyond_a_short_burst_are_rate_limited() -> None:
    with FakeSlack(bot_token=TOKEN, rate_limits=True, clock=lambda: 0.0) as fake:
        client = WebClient(token=TOKEN, base_url=fake.api_url)
        for i in range(5):
            client.chat_postMessage(channel=CHANNEL, text=f"burst {i}")
        with pytest.raises(SlackApiError) as limited:
            client.chat_postMessage(channel=CHANNEL, text="one too many")
        client.chat_postMessage(channel="C0OTHER", text="another channel has its own allowance")
        fake.advance(1.0)
        client.chat_postMessage(channel=CHANNEL, text="a second later")

        assert limited.value.response.status_code == 429
        assert limited.value.response["error"] == "ratelimited"
        assert limited.value.response.headers["Retry-After"] in ("1", ["1"])
        assert [m["text"] for m in fake.messages(CHANNEL)][-2:] == ["burst 4", "a second later"]


@pytest.mark.parametrize("method", ["chat.update", "conversations.history"])
def test_tier_3_methods_allow_about_50_a_minute(method: str) -> None:
    with FakeSlack(bot_token=TOKEN, clock=lambda: 0.0) as fake:
        client = WebClient(token=TOKEN, base_url=fake.api_url)
        ts = client.chat_postMessage(channel=CHANNEL, text="v0")["ts"]
        fake.enforce_rate_limits = True
        params = {"channel": CHANNEL, "ts": ts, "text": "again"}
        for _ in range(50):
            client.api_call(method, json=params)
        with pytest.raises(SlackApiError) as limited:
            client.api_call(method, json=params)
        fake.advance(60 / 50)
        assert client.api_call(method, json=params)["ok"]
        assert limited.value.response.status_code == 429


def test_injected_faults_still_come_first_with_rate_limits_on() -> None:
    with FakeSlack(bot_token=TOKEN, rate_limits=True, clock=lambda: 0.0) as fake:
        client = WebClient(token=TOKEN, base_url=fake.api_url)
        fake.fail_next("chat.postMessage", status=200, error="channel_not_found")
        with pytest.raises(SlackApiError) as err:
            client.chat_postMessage(channel=CHANNEL, text="x")
        assert err.value.response["error"] == "channel_not_found"
        assert fake.messages(CHANNEL) == []


def test_a_response_url_expires_after_30_minutes(frozen: FakeSlack) -> None:
    hook = WebhookClient(frozen.new_response_url(channel=CHANNEL))

    frozen.advance(29 * 60)
    in_time = hook.send(text="still in time")
    frozen.advance(60.5)
    late = hook.send(text="too late")

    assert (in_time.status_code, in_time.body) == (200, "ok")
    assert (late.status_code, late.body) == (404, "expired_url")
    assert [e["text"] for e in frozen.ephemerals(CHANNEL)] == ["still in time"]


# --------------------------------------------------------------------------- socket mode, as Slack


@pytest.fixture
def socket_mode(fake: FakeSlack) -> Iterator[FakeSocketMode]:
    with FakeSocketMode() as server:
        fake.socket_mode_url = server.url
        yield server


def sdk_client(fake: FakeSlack, acks: bool = True, **options) -> SocketModeClient:  # type: ignore[no-untyped-def]
    """slack_sdk's built-in client; it acks every request unless told not to."""
    web = WebClient(token=TOKEN, base_url=fake.api_url)
    client = SocketModeClient(app_token="xapp-1-test", web_client=web, **options)

    def on_request(sm_client: SocketModeClient, request: SocketModeRequest) -> None:
        if acks:
            sm_client.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    client.socket_mode_request_listeners.append(on_request)
    return client


@pytest.mark.parametrize("reason", ["refresh_requested", "warning", "link_disabled"])
def test_a_disconnect_frame_makes_the_client_open_a_new_connection(
    fake: FakeSlack, socket_mode: FakeSocketMode, reason: str
) -> None:
    received: list[dict] = []
    client = sdk_client(fake, on_message_listeners=[lambda raw: received.append(json.loads(raw))])
    try:
        client.connect()
        socket_mode.wait_connects(1)
        socket_mode.send_disconnect(reason)
        socket_mode.wait_for(lambda: socket_mode.connects == 2 and socket_mode.connections == 1)
        ack = socket_mode.send_slash_command(slash_command_fields("after the refresh"))
    finally:
        socket_mode.close_client(client)

    assert {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}} in (
        received
    )
    assert ack == {}
    assert len(fake.calls_to("apps.connections.open")) == 2


def test_only_the_disconnect_reasons_slack_sends(socket_mode: FakeSocketMode) -> None:
    with pytest.raises(ValueError, match="no disconnect"):
        socket_mode.send_disconnect("bored")


def test_a_mute_socket_is_noticed_by_the_clients_keepalive(
    fake: FakeSlack, socket_mode: FakeSocketMode
) -> None:
    client = sdk_client(fake, ping_interval=0.5)  # stale after 4 x 0.5 s without a pong
    try:
        client.connect()
        socket_mode.wait_connects(1)
        assert socket_mode.go_silent() == 1
        socket_mode.wait_connects(2, timeout=30)
        ack = socket_mode.send_slash_command(slash_command_fields("on the new socket"))
        open_while_mute = (socket_mode.connections, socket_mode.live_connections)
        socket_mode.speak_again()
        socket_mode.wait_for(lambda: socket_mode.connections == 1)
    finally:
        socket_mode.close_client(client)

    assert ack == {}
    assert open_while_mute == (2, 1), "the mute one stays open at TCP level"
    assert len(socket_mode.sent) == 1, "nothing was sent to the mute socket"


def test_an_event_whose_ack_is_lost_is_delivered_again(
    fake: FakeSlack, socket_mode: FakeSocketMode
) -> None:
    socket_mode.ack_timeout = 0.5
    client = sdk_client(fake)
    try:
        client.connect()
        socket_mode.drop_acks(1)
        envelope_id = socket_mode.push_envelope(
            "events_api", MENTION, retry_attempt=0, retry_reason=""
        )
        ack = socket_mode.wait_ack(envelope_id, timeout=10)
    finally:
        socket_mode.close_client(client)

    first, again = socket_mode.copies(envelope_id)[:2]  # a slow ack of the second: a third
    assert ack == {}
    assert (first["retry_attempt"], again["retry_attempt"]) == (0, 1)
    assert (first["retry_reason"], again["retry_reason"]) == ("", "timeout")
    assert again["payload"] == first["payload"] == MENTION
    assert again["envelope_id"] != envelope_id
    assert socket_mode.timed_out[0] == envelope_id
    assert [f["envelope_id"] for f in socket_mode.dropped] == [envelope_id]
    assert socket_mode.frames[0]["envelope_id"] != envelope_id, "the ack that counted: a copy's"


def test_an_event_never_acked_is_retried_three_times(
    fake: FakeSlack, socket_mode: FakeSocketMode
) -> None:
    socket_mode.ack_timeout = 0.1
    client = sdk_client(fake, acks=False)
    try:
        client.connect()
        envelope_id = socket_mode.push_envelope(
            "events_api", MENTION, retry_attempt=0, retry_reason=""
        )
        socket_mode.wait_for(lambda: len(socket_mode.timed_out) == 4, timeout=10)
    finally:
        socket_mode.close_client(client)

    copies = socket_mode.copies(envelope_id)
    assert [c["retry_attempt"] for c in copies] == [0, 1, 2, 3]
    assert socket_mode.frames == []


@pytest.mark.parametrize("kind", ["slash_commands", "interactive"])
def test_commands_and_interactions_are_not_retried(
    fake: FakeSlack, socket_mode: FakeSocketMode, kind: str
) -> None:
    socket_mode.ack_timeout = 0.1
    client = sdk_client(fake, acks=False)
    try:
        client.connect()
        envelope_id = socket_mode.push_envelope(kind, {"type": "block_actions"})
        socket_mode.wait_for(lambda: socket_mode.timed_out, timeout=10)
    finally:
        socket_mode.close_client(client)

    assert socket_mode.timed_out == [envelope_id]
    assert len(socket_mode.copies(envelope_id)) == 1
