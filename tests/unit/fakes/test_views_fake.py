"""The fake Slack's views.publish, through the real slack_sdk WebClient: Slack's rules for a Home
(a `home` view, 100 blocks, 3,000 characters a section, 250 kb a view, the Home tab enabled),
its errors as Slack words them, and its rate tier (Tier 4) when rate limits are on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from aico.fakes.slack import MAX_VIEW_BLOCKS, FakeSlack

TOKEN = "xoxb-views"
USER = "U0VIEWER"


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with FakeSlack(bot_token=TOKEN, clock=lambda: 0.0) as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=slack.api_url)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def home(*blocks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"type": "home", "blocks": list(blocks) or [section("hello")], **fields}


def refused(client: WebClient, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(SlackApiError) as raised:
        client.views_publish(**{"user_id": USER, "view": home(), **kwargs})
    return dict(raised.value.response.data)


def test_a_home_view_is_published_for_the_user_and_kept(slack, client) -> None:
    answer = client.views_publish(user_id=USER, view=home(section("*hi*"), callback_id="h"))

    assert answer["ok"] and answer["view"]["type"] == "home"
    assert answer["view"]["blocks"] == [section("*hi*")]
    assert answer["view"]["id"].startswith("V") and answer["view"]["hash"]
    assert slack.home_view(USER) == answer["view"]
    assert [v["user_id"] for v in slack.published_views()] == [USER]


def test_publishing_again_replaces_the_users_home_and_keeps_its_id(slack, client) -> None:
    first = client.views_publish(user_id=USER, view=home(section("one")))["view"]
    second = client.views_publish(user_id=USER, view=home(section("two")))["view"]

    assert second["id"] == first["id"]
    assert slack.home_view(USER)["blocks"] == [section("two")]
    assert len(slack.published_views(USER)) == 2
    assert slack.home_view("U0SOMEONE") is None


def test_a_view_as_a_json_string_is_taken_too(slack, client) -> None:
    client.api_call(
        "views.publish", params={"user_id": USER, "view": '{"type":"home","blocks":[]}'}
    )

    assert slack.home_view(USER)["blocks"] == []


def test_a_user_id_that_is_not_one_is_invalid_arguments(client) -> None:
    answer = refused(client, user_id="C0CHANNEL")

    assert answer["error"] == "invalid_arguments"
    assert answer["response_metadata"]["messages"] == ["invalid `user_id`"]


def test_more_than_100_blocks_is_invalid_arguments_naming_the_blocks(slack, client) -> None:
    client.views_publish(user_id=USER, view=home(*[section("b")] * MAX_VIEW_BLOCKS))

    answer = refused(client, view=home(*[section("b")] * (MAX_VIEW_BLOCKS + 1)))

    assert answer["error"] == "invalid_arguments"
    assert answer["response_metadata"]["messages"] == [
        "[ERROR] no more than 100 items allowed [json-pointer:/view/blocks]"
    ]
    assert len(slack.published_views()) == 1


def test_a_section_over_3000_characters_is_invalid_arguments_with_its_pointer(client) -> None:
    answer = refused(client, view=home(section("ok"), section("x" * 3001)))

    assert answer["error"] == "invalid_arguments"
    assert answer["response_metadata"]["messages"] == [
        "[ERROR] must be less than 3001 characters [json-pointer:/view/blocks/1/text/text]"
    ]


def test_a_button_label_over_75_characters_is_invalid_arguments(client) -> None:
    button = {"type": "button", "text": {"type": "plain_text", "text": "b" * 76}, "value": "v"}
    answer = refused(client, view=home({"type": "actions", "elements": [button]}))

    assert answer["error"] == "invalid_arguments"
    assert "/view/blocks/0/elements/0/text/text" in answer["response_metadata"]["messages"][0]


def test_a_view_that_is_not_a_home_is_invalid_arguments(client) -> None:
    answer = refused(client, view={"type": "modal", "blocks": []})

    assert answer["error"] == "invalid_arguments"
    assert "/view/type" in answer["response_metadata"]["messages"][0]


def test_a_view_over_250_kb_is_view_too_large(client) -> None:
    answer = refused(client, view=home(*[section("x" * 2900)] * 90))

    assert answer["error"] == "view_too_large"


def test_an_app_whose_home_tab_is_off_gets_not_enabled(slack, client) -> None:
    slack.home_tab_enabled = False

    assert refused(client)["error"] == "not_enabled"
    assert slack.home_view(USER) is None


def test_a_stale_hash_is_a_hash_conflict(client) -> None:
    first = client.views_publish(user_id=USER, view=home())["view"]
    client.views_publish(user_id=USER, view=home(), hash=first["hash"])

    assert refused(client, hash=first["hash"])["error"] == "hash_conflict"


def test_a_bad_token_is_refused_before_the_view_is_looked_at(slack) -> None:
    other = WebClient(token="xoxb-not-ours", base_url=slack.api_url)

    assert refused(other)["error"] == "invalid_auth"


def test_views_publish_is_tier_4_when_rate_limits_are_on(slack) -> None:
    slack.enforce_rate_limits = True
    client = WebClient(token=TOKEN, base_url=slack.api_url)  # no retry handler: sees the 429
    for n in range(100):
        client.views_publish(user_id=f"U0USER{n:03d}", view=home())

    with pytest.raises(SlackApiError) as raised:
        client.views_publish(user_id=USER, view=home())
    assert raised.value.response.status_code == 429
    assert int(raised.value.response.headers["Retry-After"]) >= 1

    slack.advance(1.0)  # 100 a minute: one more a little over half a second later
    assert client.views_publish(user_id=USER, view=home())["ok"]
