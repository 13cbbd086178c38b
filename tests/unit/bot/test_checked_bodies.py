"""The check in front of Bolt's WSGI handler (bot/serve.py): a forged request gets 401 before
anything is said about its body; a signed one whose body Bolt could not parse gets 400 saying
what is wrong; everything else reaches Bolt's listeners as Slack sent it. Requests are signed as
Slack signs them and go through a real Bolt app."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_bolt import App
from slack_sdk import WebClient

from aico.fakes.signing import FORM_CT, JSON_CT, sign, slash_command_body
from aico.fakes.slack import FakeSlack
from bot.serve import EVENTS_PATH, FormsAsSent, body_problem, checked_bodies, with_ops

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-test"
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")


@pytest.fixture
def wsgi(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in PROXY_VARS:  # slack_sdk ignores NO_PROXY
        monkeypatch.delenv(name, raising=False)
    with FakeSlack(bot_token=TOKEN) as slack:  # Bolt asks auth.test who the token is
        yield with_ops(checked_bodies(FormsAsSent(bolt_app(slack)), SECRET))


def bolt_app(slack: FakeSlack) -> App:
    app = App(client=WebClient(token=TOKEN, base_url=slack.api_url), signing_secret=SECRET)

    @app.command("/aico")
    def aico(ack: Any, command: dict[str, Any]) -> None:
        ack(f"got {command['text']}")

    @app.action("press")
    def press(ack: Any) -> None:
        ack()

    return app


def call(
    wsgi: Any,
    body: bytes,
    content_type: str = FORM_CT,
    secret: str | None = SECRET,
    headers: dict[str, str] | None = None,
    path: str = EVENTS_PATH,
    method: str = "POST",
) -> tuple[int, str]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    signed = sign(secret, body) if secret else {}
    for name, value in {**signed, **(headers or {})}.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answer: list[str] = []
    chunks = wsgi(environ, lambda status, _headers, exc_info=None: answer.append(status))
    return int(answer[0].split()[0]), b"".join(chunks).decode()


def test_a_signed_slash_command_reaches_bolt(wsgi):
    status, body = call(wsgi, slash_command_body("task hello"))
    assert (status, body) == (200, "got task hello")


def test_a_slash_command_that_mentions_the_word_payload_reaches_its_listener(wsgi):
    status, body = call(wsgi, slash_command_body("task fix the payload parser"))
    assert (status, body) == (200, "got task fix the payload parser")


def test_a_signed_interaction_reaches_bolt(wsgi):
    payload = {"type": "block_actions", "actions": [{"action_id": "press", "type": "button"}]}
    payload |= {"user": {"id": "U1"}, "team": {"id": "T1"}, "api_app_id": "A1"}
    status, _ = call(wsgi, urlencode({"payload": json.dumps(payload)}).encode())
    assert status == 200


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b'{"type": "event_callback", ', JSON_CT, "not valid JSON"),
        (b"[1, 2]", JSON_CT, "not a JSON object"),
        (b"{oops", FORM_CT, "not valid JSON"),  # Bolt reads any body opening with { as JSON
        (b"payload=%7Bnot-json", FORM_CT, "payload is not valid JSON"),
        (b"payload=%5B%5D", FORM_CT, "payload is not a JSON object"),
    ],
)
def test_a_signed_body_bolt_cannot_parse_gets_400_saying_why(wsgi, body, content_type, says):
    status, text = call(wsgi, body, content_type)
    assert status == 400 and says in text


def test_a_forged_request_gets_401_whatever_its_body(wsgi):
    for body, content_type in ((b"{broken", JSON_CT), (slash_command_body("task x"), FORM_CT)):
        assert call(wsgi, body, content_type, secret="not-the-secret")[0] == 401
        assert call(wsgi, body, content_type, secret=None)[0] == 401
    stale = {"X-Slack-Request-Timestamp": "not-a-number", "X-Slack-Signature": "v0=00"}
    assert call(wsgi, b"{}", JSON_CT, secret=None, headers=stale)[0] == 401


def test_health_and_other_paths_are_not_checked(wsgi):
    assert call(wsgi, b"", secret=None, path="/healthz", method="GET") == (200, "ok")
    assert call(wsgi, b"{broken", JSON_CT, secret=None, path="/elsewhere")[0] == 404


def test_what_bolt_can_read_is_no_problem():
    assert body_problem(b"", FORM_CT) is None
    assert body_problem(slash_command_body("task mention the payload word"), FORM_CT) is None
    assert body_problem(b'{"type": "url_verification"}', "application/json; charset=utf-8") is None
    assert body_problem(b"\xff\xfe", FORM_CT) == "the body is not UTF-8"
