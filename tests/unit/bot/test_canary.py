"""The Socket Mode canary's decisions, on a fake clock: a canary posted every `every` seconds,
deleted once it came back over the socket; one not back within `wait` is a mute socket: one
alert, a new connection, and one recovery notice when the next canary comes back.

Slack, the socket and the alert desk are stand-ins that record what they were asked; one test
uses the real AlertDesk on the real store, and the last ones the real listeners and Bolt app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from slack_bolt import BoltRequest
from slack_sdk import WebClient

from aico.fakes.slack import FakeSlack
from bot.app import create_app
from bot.canary import EVERY, METADATA_TYPE, TEXT, WAIT, Canary, CanaryPlan
from core.usecases.alerts import OUTBOX, RAISED, AlertDesk
from tests.unit.bot.standins import BOT_USER, CHANNEL, World

ALERTS = "C0ALERTS"
ME = "host-1:4242"
BOT_ID = "B0AICOBOT"
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Parts:
    """Slack's Web API, the alert desk and the socket, as the canary is handed them."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, dict[str, Any]]] = []
        self.deleted: list[str] = []
        self.alerts: list[dict[str, Any]] = []
        self.reconnects = 0
        self.fail_posts = False

    def post(self, channel: str, text: str, metadata: dict[str, Any]) -> str:
        if self.fail_posts:
            raise OSError("Slack unreachable")
        self.posts.append((channel, text, metadata))
        return f"1700000000.{len(self.posts):06d}"

    def delete(self, channel: str, ts: str) -> None:
        assert channel == ALERTS
        self.deleted.append(ts)

    def say(
        self,
        key: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        resolves: str = "",
        resolution: str = "",
    ) -> None:
        self.alerts.append(
            {"key": key, "text": text, "resolves": resolves, "resolution": resolution}
        )

    def reconnect(self) -> None:
        self.reconnects += 1

    @property
    def last_ts(self) -> str:
        return f"1700000000.{len(self.posts):06d}"


def own_message(ts: str, channel: str = ALERTS, **changes: Any) -> dict[str, Any]:
    """The app's own post as its `message` event comes over the socket."""
    event = {
        "type": "message",
        "user": BOT_USER,
        "bot_id": BOT_ID,
        "text": TEXT,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "channel_type": "channel",
    }
    return {k: v for k, v in (event | changes).items() if v is not None}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def parts() -> Parts:
    return Parts()


def make(parts: Parts, clock: Clock, every: float = EVERY, wait: float = WAIT) -> Canary:
    plan = CanaryPlan(ALERTS, parts.post, parts.delete, parts, ME, every, wait)
    return Canary(plan, parts.reconnect, clock)


def back(canary: Canary, parts: Parts) -> None:
    canary.heard(own_message(parts.last_ts))
    canary.tick()


def went_mute(canary: Canary, parts: Parts, clock: Clock) -> None:
    """A canary posted now, then nothing heard for the whole wait."""
    canary.tick()
    clock.now += WAIT
    canary.tick()


# --------------------------------------------------------------------------- a socket that works


def test_the_first_canary_goes_at_once_and_is_deleted_when_it_comes_back(parts, clock) -> None:
    canary = make(parts, clock)

    canary.tick()
    [(channel, text, metadata)] = parts.posts
    clock.now += 0.4
    back(canary, parts)

    assert (channel, text, metadata["event_type"]) == (ALERTS, TEXT, METADATA_TYPE)
    assert parts.deleted == [parts.last_ts]
    assert canary.state() == {"canary_seen_at": clock.now, "mute": False}
    assert parts.alerts == [] and parts.reconnects == 0


def test_the_next_canary_waits_for_its_interval(parts, clock) -> None:
    canary = make(parts, clock)
    canary.tick()
    back(canary, parts)

    clock.now += EVERY - 1
    canary.tick()
    early = len(parts.posts)
    clock.now += 1
    canary.tick()

    assert (early, len(parts.posts)) == (1, 2)


def test_a_canary_heard_before_its_post_returned_counts(parts, clock) -> None:
    # Slack may deliver the event before it answers chat.postMessage
    canary = make(parts, clock)
    canary.heard(own_message("1700000000.000001"))

    canary.tick()
    canary.tick()

    assert parts.deleted == ["1700000000.000001"] and canary.state()["canary_seen_at"]


@pytest.mark.parametrize(
    "event",
    [
        own_message("1700000000.000001", channel="C0OTHER"),
        own_message("1700000000.000001", bot_id=None),  # a person's message, same ts
        own_message("1700000000.000001", subtype="message_deleted"),
        {"type": "app_mention", "channel": ALERTS, "ts": "1700000000.000001", "bot_id": BOT_ID},
    ],
)
def test_other_events_are_not_the_canary(parts, clock, event: dict[str, Any]) -> None:
    canary = make(parts, clock)
    canary.tick()

    canary.heard(event)
    canary.tick()

    assert parts.deleted == [] and canary.state()["canary_seen_at"] is None


# --------------------------------------------------------------------------- a socket gone mute


def test_a_canary_not_back_in_time_is_one_alert_and_a_new_connection(parts, clock) -> None:
    canary = make(parts, clock)
    canary.tick()
    clock.now += WAIT - 1
    canary.tick()
    before = (len(parts.alerts), parts.reconnects)

    clock.now += 1
    canary.tick()

    assert before == (0, 0)
    [alert] = parts.alerts
    assert alert["key"] == f"socket-mute:{ME}:{clock.now * 1000:.0f}"
    assert "went silent" in alert["text"] and ME in alert["text"]
    assert parts.reconnects == 1
    assert parts.deleted == [parts.last_ts], "the unanswered canary is cleared away"
    assert canary.state()["mute"] is True


def test_the_next_canary_after_the_reconnect_resolves_the_alert_once(parts, clock) -> None:
    canary = make(parts, clock)
    went_mute(canary, parts, clock)
    [alert] = parts.alerts

    # When the next canary, posted at once on the new connection, comes back
    clock.now += 1
    canary.tick()
    clock.now += 119
    back(canary, parts)
    canary.tick()

    [_, notice] = parts.alerts
    assert notice["resolves"] == alert["key"] and notice["key"] != alert["key"]
    assert notice["resolution"] == "resolved after 2 min"
    assert "delivers events again" in notice["text"]
    assert canary.state() == {"canary_seen_at": clock.now, "mute": False}


def test_a_socket_still_mute_after_the_reconnect_is_reconnected_again_without_a_new_alert(
    parts, clock
) -> None:
    canary = make(parts, clock)
    went_mute(canary, parts, clock)

    went_mute(canary, parts, clock)

    assert len(parts.alerts) == 1 and parts.reconnects == 2
    assert canary.state()["mute"] is True


def test_a_later_silence_is_an_alert_of_its_own(parts, clock) -> None:
    canary = make(parts, clock)
    went_mute(canary, parts, clock)
    canary.tick()
    back(canary, parts)

    clock.now += EVERY
    went_mute(canary, parts, clock)

    keys = [a["key"] for a in parts.alerts if not a["resolves"]]
    assert len(keys) == 2 and keys[0] != keys[1]


def test_a_failed_reconnect_is_tried_again_by_the_next_round(parts, clock) -> None:
    canary = make(parts, clock)
    tries: list[float] = []

    def reconnect() -> None:
        tries.append(clock.now)
        raise OSError("apps.connections.open: connection refused")

    canary.reconnect = reconnect
    went_mute(canary, parts, clock)
    went_mute(canary, parts, clock)

    assert len(tries) == 2 and len(parts.alerts) == 1


def test_slack_refusing_the_post_is_not_a_mute_socket(parts, clock) -> None:
    canary = make(parts, clock)
    parts.fail_posts = True

    canary.tick()
    clock.now += WAIT
    canary.tick()
    parts.fail_posts = False
    clock.now += EVERY - WAIT
    canary.tick()

    assert parts.alerts == [] and parts.reconnects == 0
    assert len(parts.posts) == 1, "tried again at the next interval"


def test_with_the_defaults_a_silence_is_found_within_five_minutes() -> None:
    # worst case: the socket goes silent just after a canary came back
    assert EVERY + WAIT < 5 * 60


def test_the_alerts_are_recorded_on_the_desk_for_the_pm_to_post(world: World, clock) -> None:
    parts = Parts()
    desk = AlertDesk(world.store, None, ALERTS)
    plan = CanaryPlan(ALERTS, parts.post, parts.delete, desk, ME)
    canary = Canary(plan, parts.reconnect, clock)

    went_mute(canary, parts, clock)
    canary.tick()
    back(canary, parts)

    raised = [r.data for r in world.store.tail(OUTBOX, 10) if r.type == RAISED]
    assert [bool(r.get("resolves")) for r in raised] == [False, True]
    assert raised[1]["resolves"] == raised[0]["key"]


# --------------------------------------------------------------------------- not a conversation


def test_a_canary_in_a_tasks_thread_is_no_turn(world: World) -> None:
    # is_reply() ignores a bot's messages: even a canary posted in a task's thread is no reply
    first = world.task()
    event = own_message("1700000100.000200", channel=first.channel, thread_ts=first.thread_ts)

    world.app.events["message"](event=event)

    assert [t for t in world.store.thread(first.channel, first.thread_ts) if t.conversation] == []
    assert world.slack.of("tell") == []


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    for name in PROXY_VARS:  # slack_sdk ignores NO_PROXY
        monkeypatch.delenv(name, raising=False)
    with FakeSlack(bot_token="xoxb-test", bot_user_id=BOT_USER, bot_id=BOT_ID) as fake:
        yield fake


def test_the_canarys_message_events_reach_no_listener_of_the_real_app(
    slack: FakeSlack, world: World
) -> None:
    first = world.task()
    client = WebClient(token="xoxb-test", base_url=slack.api_url)
    app = create_app(client, "", replace(world.services))
    bodies: list[dict[str, Any]] = []
    slack.on_event.append(bodies.append)

    # When the canary is posted (at the top, and in a task's thread) and deleted, and Slack
    # sends each back to the app over the socket
    for thread_ts in (None, first.thread_ts):
        ts = client.chat_postMessage(channel=CHANNEL, text=TEXT, thread_ts=thread_ts)["ts"]
        client.chat_delete(channel=CHANNEL, ts=ts)
    answers = [app.dispatch(BoltRequest(body=body, mode="socket_mode")) for body in bodies]

    # Then each is acked, and none is a task, a turn or a word to anyone
    assert [a.status for a in answers] == [200] * 4
    assert [json.loads(a.body or "{}") for a in answers] == [{}] * 4
    assert len(world.store.recent(10)) == 1
    assert [t for t in world.store.thread(CHANNEL, first.thread_ts) if t.conversation] == []
    assert world.slack.of("tell") == [] and world.slack.of("post") == []
