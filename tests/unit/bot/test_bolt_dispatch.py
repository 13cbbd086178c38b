"""A few requests through the real Bolt app that create_app builds, signed as Slack signs them and
handed to Bolt's own dispatch (no HTTP server for the bot). Its WebClient and the response_urls
point at a FakeSlack on 127.0.0.1; the services are the real core ones on a SQLite store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from slack_bolt import BoltRequest, BoltResponse
from slack_sdk import WebClient

from aico.fakes.signing import JSON_CT, sign, slash_command_body
from aico.fakes.slack import FakeSlack
from bot.app import SORRY, create_app
from tests.unit.bot.standins import BOT_USER, CHANNEL, OWNER, World

TOKEN = "xoxb-test"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    for name in PROXY_VARS:  # slack_sdk ignores NO_PROXY
        monkeypatch.delenv(name, raising=False)
    with FakeSlack(bot_token=TOKEN, bot_user_id=BOT_USER) as fake:
        yield fake


def bolt_app(slack: FakeSlack, world: World, **services: Any):
    client = WebClient(token=TOKEN, base_url=slack.api_url)
    return create_app(client, SECRET, replace(world.services, **services))


def signed(body: bytes, content_type: str, secret: str = SECRET, **headers: str) -> BoltRequest:
    all_headers = {"content-type": content_type, **sign(secret, body), **headers}
    return BoltRequest(body=body.decode(), headers={k.lower(): v for k, v in all_headers.items()})


def command(slack: FakeSlack, text: str, secret: str = SECRET) -> tuple[BoltRequest, str]:
    url = slack.new_response_url(CHANNEL)
    body = slash_command_body(text, user_id=OWNER, channel_id=CHANNEL, response_url=url)
    return signed(body, "application/x-www-form-urlencoded", secret), url


def test_a_signed_task_command_is_answered_in_the_http_response(slack, world) -> None:
    app = bolt_app(slack, world)
    request, url = command(slack, "task write the release notes")

    response: BoltResponse = app.dispatch(request)

    # Then Slack gets its answer in the response to its own request (no response_url needed)
    assert response.status == 200
    [task] = world.store.recent(5, user=OWNER)
    assert json.loads(response.body) == {
        "text": (
            f":inbox_tray: Task `{task.id}` received. It is posted in this channel; "
            "progress and the answer will appear in that message's thread."
        ),
        "response_type": "ephemeral",
    }
    assert slack.responses_for(url) == []


def test_a_request_not_signed_with_our_secret_is_refused_and_nothing_recorded(slack, world) -> None:
    app = bolt_app(slack, world)
    request, _ = command(slack, "task sneak this in", secret="not-the-secret")

    response = app.dispatch(request)

    assert response.status == 401
    assert world.store.recent(5) == []


def test_an_unexpected_error_tells_the_user_nothing_was_queued(slack, world) -> None:
    # Given the store fails in a way no listener expects
    class BrokenTasks:
        def recent(self, *args: Any, **kwargs: Any):
            raise RuntimeError("disk I/O error")

    app = bolt_app(slack, world, tasks=BrokenTasks())
    request, url = command(slack, "history")

    # When the user asks for their history
    response = app.dispatch(request)

    # Then Slack's request fails, and the user is told through the command's response_url
    assert response.status == 500
    [told] = slack.responses_for(url)
    assert told.payload["text"] == SORRY
    assert told.response_type == "ephemeral"


def test_a_retried_event_delivery_makes_one_turn(slack, world) -> None:
    first = world.task()
    app = bolt_app(slack, world)
    envelope = {
        "token": "verification-token",
        "team_id": "T0AICO",
        "api_app_id": "A0AICO",
        "type": "event_callback",
        "event_id": "Ev0REPLY1",
        "event_time": 1700000100,
        "authorizations": [{"team_id": "T0AICO", "user_id": BOT_USER, "is_bot": True}],
        "event": {
            "type": "message",
            "user": OWNER,
            "text": "and the changelog",
            "ts": "1700000100.000200",
            "thread_ts": first.thread_ts,
            "parent_user_id": BOT_USER,
            "channel": CHANNEL,
            "event_ts": "1700000100.000200",
            "channel_type": "channel",
        },
    }
    body = json.dumps(envelope).encode()

    # When Slack delivers the event, then again as a retry (it saw no ack in time)
    first_try = app.dispatch(signed(body, JSON_CT))
    retry = app.dispatch(
        signed(body, JSON_CT, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    )

    # Then both are acked, and the thread has one new turn
    assert (first_try.status, retry.status) == (200, 200)
    thread = world.store.thread(CHANNEL, first.thread_ts)
    assert [(t.prompt, t.conversation) for t in thread if t.conversation] == [
        ("and the changelog", first.id)
    ]
