"""The App Home tab: opened, it is published for that user (the ops console for an admin, their
own tasks and spend for anyone else); its buttons act for admins only and answer by publishing
the Home again. The listeners are called the way Bolt calls them (keyword arguments `event`,
`client`; `ack`, `body`, `action`, `client` for a click) on the bot's test world; `client` is a
stand-in that records `views.publish`. Last, a few requests through the real Bolt app against
the fake Slack, whose views.publish rules the published views must pass."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from slack_bolt import BoltRequest
from slack_sdk import WebClient

from aico.fakes.signing import JSON_CT, block_actions_body, sign
from aico.fakes.slack import FakeSlack
from bot.app import create_app
from core.domain import events, health, pool
from core.domain.pool import Record
from core.domain.stats import Summary
from core.domain.task import TaskStatus
from core.slack import blocks, home
from core.usecases.alerts import OUTBOX, AlertDesk
from core.usecases.operations import ASKED, REQUESTS
from core.usecases.status import StatusReport
from tests.unit.bot.standins import (
    ADMIN,
    BOT_USER,
    OWNER,
    STRANGER,
    WAIT,
    Answer,
    World,
)

# -- the stand-in for Bolt's WebClient ----------------------------------------------------------


class Client:
    """Bolt's `client` as far as the Home uses it; `hold()` keeps a publish waiting."""

    def __init__(self) -> None:
        self.views: list[tuple[str, dict[str, Any]]] = []
        self._changed = threading.Condition()
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def views_publish(self, *, user_id: str, view: dict[str, Any]) -> dict[str, Any]:
        assert self._open.wait(WAIT), "a held publish was never released"
        with self._changed:
            self.views.append((user_id, view))
            self._changed.notify_all()
        return {"ok": True}

    def wait(self, count: int = 1) -> list[tuple[str, dict[str, Any]]]:
        with self._changed:
            done = self._changed.wait_for(lambda: len(self.views) >= count, WAIT)
            assert done, f"{len(self.views)} view(s) published, not {count}"
            return list(self.views)


@pytest.fixture
def client() -> Iterator[Client]:
    client = Client()
    yield client
    client.release()


def open_home(world: World, client: Client, user: str, tab: str = "home") -> None:
    event = {
        "type": "app_home_opened",
        "user": user,
        "channel": "D0HOME",
        "tab": tab,
        "event_ts": "1700000200.000100",
    }
    world.app.events["app_home_opened"](event=event, client=client)


def opened(world: World, client: Client, user: str) -> dict[str, Any]:
    """`user` opens the Home tab: the view published for them."""
    open_home(world, client, user)
    (who, view), *_ = client.wait()
    assert who == user
    return view


def click(
    world: World, client: Client, action_id: str, user: str, value: str = ""
) -> tuple[Answer, dict[str, Any]]:
    """`user` presses a button of their Home: the ack, and the Home published after it."""
    before = len(client.views)
    ack = Answer("ack", world.log)
    action = {"type": "button", "action_id": action_id, "block_id": "home", "value": value}
    body = {
        "type": "block_actions",
        "user": {"id": user},
        "api_app_id": "A0AICO",
        "container": {"type": "view", "view_id": "V0HOME"},
        "view": {"id": "V0HOME", "type": "home"},
        "actions": [action],
    }
    world.app.actions[action_id](ack=ack, body=body, action=action, client=client)
    (who, view) = client.wait(before + 1)[-1]
    assert who == user
    return ack, view


def text_of(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def buttons(view: dict[str, Any]) -> dict[str, str]:
    """action_id -> value of every button of the view."""
    found = {}
    for block in view["blocks"]:
        for element in [*block.get("elements", []), block.get("accessory") or {}]:
            if element.get("type") == "button":
                found.setdefault(element["action_id"], element["value"])
    return found


def within_slacks_limits(view: dict[str, Any]) -> bool:
    sections = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]
    return len(view["blocks"]) <= 100 and all(len(t) <= 3000 for t in sections)


def pm_host(world: World, workers: int = 2, target: int = 2) -> None:
    world.store.heartbeat(
        "pm:host-a:11",
        {"kind": "pm", "pm": "host-a:11", "min": 1, "max": 5, "workers": workers,
         "target": target, "leader": True},
    )  # fmt: skip


def decided(world: World, target: int, reason: str = "3 waiting for 2 slots") -> None:
    data = {"target": target, "current": target - 1, "reason": reason, "policy": "aico"}
    world.store.record(pool.DECISION, pool.SCALED, data)


def dead_letter(world: World, task_id: str, prompt: str) -> None:
    text, body = blocks.dead_letter_alert(task_id, "it failed for good", prompt)
    AlertDesk(world.store, None, "").say(f"dead:{task_id}:0", text, body)


def pin_now(world: World) -> dict[str, Any] | None:
    latest = world.store.latest(pool.PIN)
    return {"type": latest.type, **latest.data} if latest else None


# -- opening the Home --------------------------------------------------------------------------


def test_an_admin_sees_the_live_picture_with_retry_for_a_dead_letter(world, client) -> None:
    # Given a pool with a host and a decision, a failing check, a failed and dead-lettered task
    pm_host(world)
    decided(world, 2)
    check = {"level": "down", "detail": "connection refused"}
    world.store.record(health.AGGREGATE + "broker", health.CHANGED, check)
    poison = world.task(prompt="a poison task", until=events.FAILED)
    dead_letter(world, poison.id, poison.prompt)
    world.task(user=OWNER, until=events.COMPLETED, cost=0.25)

    # When the admin opens the Home tab
    view = opened(world, client, ADMIN)

    # Then it is the ops console: queues, the pm host with what it runs, the decision's reason,
    # the failing check, the failure with its error, the dead letter with a Retry, today's cost
    shown = text_of(view)
    assert view["type"] == "home"
    assert "tasks: 3 waiting, 2 consumer(s)" in shown
    assert "host-a:11 (leader) runs 2 (target 2" in shown
    assert "3 waiting for 2 slots" in shown
    assert "broker down: connection refused" in shown
    assert f"`{poison.id}`" in shown and "Claude is overloaded" in shown
    assert "dead-lettered" in shown
    assert "$0.25" in shown
    assert buttons(view)[home.RETRY_ACTION] == poison.id
    assert {home.SCALE_UP_ACTION, home.SCALE_DOWN_ACTION, home.SCALE_AUTO_ACTION} <= set(
        buttons(view)
    )
    assert home.RECOVER_ACTION in buttons(view)
    assert within_slacks_limits(view)


def test_all_ok_and_no_dead_letters_say_so(world, client) -> None:
    view = opened(world, client, ADMIN)

    shown = text_of(view)
    assert "*Checks* all ok" in shown
    assert "*Dead letters* none" in shown and "*Recent failures* none" in shown
    assert home.RETRY_ACTION not in buttons(view)


def test_a_dead_letter_retried_since_shows_where_it_stands_and_no_retry(world, client) -> None:
    task = world.task(until=events.COMPLETED)  # answered on a later attempt
    dead_letter(world, task.id, task.prompt)

    view = opened(world, client, ADMIN)

    assert task.id in text_of(view) and "now: :white_check_mark: Done" in text_of(view)
    assert home.RETRY_ACTION not in buttons(view)


def test_anyone_else_sees_only_their_own_tasks_and_spend_and_no_admin_button(world, client) -> None:
    mine = world.task(user=STRANGER, prompt="<!channel> ping everyone", until=events.COMPLETED,
                      cost=0.5)  # fmt: skip
    theirs = world.task(user=OWNER, prompt="the owner's secret plan")
    dead_letter(world, theirs.id, theirs.prompt)

    view = opened(world, client, STRANGER)

    shown = text_of(view)
    assert mine.id in shown and "&lt;!channel&gt; ping everyone" in shown
    assert "<!channel>" not in shown
    assert theirs.id not in shown and "secret plan" not in shown
    assert "$0.5000" in shown and "Your daily budget: $0.5000 of $5.00" in shown
    assert set(buttons(view)) == {home.REFRESH_ACTION}
    assert "Queues" not in shown and "Pool" not in shown


def test_without_budgets_the_home_says_none_is_kept(world, client) -> None:
    app = world.with_services(budgets=None)
    app.events["app_home_opened"](
        event={"type": "app_home_opened", "user": STRANGER, "tab": "home"}, client=client
    )
    ((_, view),) = client.wait()
    assert "No daily budget is kept here." in text_of(view)


def test_the_messages_tab_publishes_nothing(world, client) -> None:
    open_home(world, client, ADMIN, tab="messages")
    open_home(world, client, STRANGER, tab="home")  # a Home that is published, to wait on

    ((who, _),) = client.wait()
    assert who == STRANGER


def test_the_publish_runs_off_the_ack_path(world, client) -> None:
    # Given Slack is slow to take the view
    client.hold()

    # When the Home is opened, the listener returns (Bolt acks) before the view is published
    open_home(world, client, ADMIN)
    assert client.views == []

    client.release()
    assert len(client.wait()) == 1


def test_a_home_is_within_slacks_limits_however_much_there_is(world, client) -> None:
    for n in range(30):
        task = world.task(prompt=f"task {n} " + "x" * 5000, until=events.FAILED)
        world.store.append(task.id, events.FAILED, {"error": "e" * 5000}, f"{task.id}:again")
        dead_letter(world, task.id, task.prompt)
    world.store.record(health.AGGREGATE + "disk", health.CHANGED, {"level": "down",
                       "detail": "<!here> " * 1000})  # fmt: skip

    view = opened(world, client, ADMIN)

    assert within_slacks_limits(view)
    assert "<!here>" not in text_of(view)


def test_the_builder_caps_a_view_at_100_blocks() -> None:
    report = StatusReport(
        at=0.0, queues=[], broker_error="", workers=[], hour=Summary(), day=Summary()
    )
    records = [
        Record(OUTBOX, "alert_raised", {"key": f"dead:t{n}:0", "text": "dead"}, float(n), n)
        for n in range(300)
    ]
    picture = home.AdminPicture(report, dead=home.dead_letters(records))

    view = home.admin_home(picture, notice="n" * 10_000)

    assert within_slacks_limits(view)
    assert [d.task_id for d in picture.dead[:2]] == ["t299", "t298"]  # newest first


# -- the buttons -------------------------------------------------------------------------------


def test_scale_up_pins_one_more_than_the_policy_wants(world, client) -> None:
    pm_host(world)
    decided(world, 2)

    ack, view = click(world, client, home.SCALE_UP_ACTION, ADMIN, "+1")

    assert ack.only() == {}
    assert pin_now(world) == {"type": pool.PINNED, "workers": 3, "by": ADMIN}
    assert "pinned to 3" in text_of(view)
    assert world.log.names().index("ack") < world.log.names().index("pool.pin")


def test_scale_down_counts_from_the_pin_and_stops_at_zero(world, client) -> None:
    world.store.record(pool.PIN, pool.PINNED, {"workers": 1, "by": ADMIN})
    decided(world, 4)

    click(world, client, home.SCALE_DOWN_ACTION, ADMIN, "-1")
    assert pin_now(world)["workers"] == 0
    click(world, client, home.SCALE_DOWN_ACTION, ADMIN, "-1")
    assert pin_now(world)["workers"] == 0


def test_scale_auto_hands_the_pool_back(world, client) -> None:
    world.store.record(pool.PIN, pool.PINNED, {"workers": 3, "by": ADMIN})

    _, view = click(world, client, home.SCALE_AUTO_ACTION, ADMIN, "auto")

    assert pin_now(world) == {"type": pool.UNPINNED, "by": ADMIN}
    assert "follows the scaling policy again" in text_of(view)


def test_run_recovery_asks_for_it_and_says_so_on_the_home(world, client) -> None:
    _, view = click(world, client, home.RECOVER_ACTION, ADMIN, "recover")

    asked = world.store.latest(REQUESTS)
    assert asked is not None and asked.type == ASKED
    assert asked.data == {"by": ADMIN, "response_url": ""}
    assert "Recovery asked" in text_of(view) and "UTC" in text_of(view)


def test_retry_from_the_home_retries_the_dead_letter_for_an_admin(world, client) -> None:
    task = world.task(until=events.FAILED)
    dead_letter(world, task.id, task.prompt)

    _, view = click(world, client, home.RETRY_ACTION, ADMIN, task.id)

    again = world.store.task(task.id)
    assert again is not None and again.generation == 1 and not again.status.final
    assert f"`{task.id}`" in text_of(view)
    [call] = world.log.named("control.retry")
    assert call.args == (task.id, ADMIN)


@pytest.mark.parametrize(
    "action_id",
    [home.SCALE_UP_ACTION, home.SCALE_DOWN_ACTION, home.SCALE_AUTO_ACTION, home.RECOVER_ACTION,
     home.RETRY_ACTION],
)  # fmt: skip
def test_every_admin_button_is_refused_to_anyone_else(world, client, action_id) -> None:
    task = world.task(until=events.FAILED)

    ack, view = click(world, client, action_id, STRANGER, task.id)

    assert ack.only() == {}
    assert "Only admins" in text_of(view)
    assert set(buttons(view)) == {home.REFRESH_ACTION}  # their own Home, with the notice
    assert pin_now(world) is None and world.store.latest(REQUESTS) is None
    assert world.store.task(task.id).status is TaskStatus.FAILED
    assert not [n for n in world.log.names() if n.startswith(("pool.", "recover.", "control."))]


def test_refresh_republishes_for_anyone(world, client) -> None:
    _, view = click(world, client, home.REFRESH_ACTION, STRANGER, "refresh")
    assert "Only admins" not in text_of(view)


def test_a_publish_that_fails_is_logged_and_nothing_else_breaks(world, caplog) -> None:
    class Broken:
        def views_publish(self, **_kwargs: Any) -> None:
            raise OSError("connection reset")

    from bot.listeners.events import app_home

    app_home.publish(world.services, Broken(), ADMIN)  # it does not raise

    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warned] == [app_home.__name__], "one warning for the operator"


# -- through the real Bolt app, against the fake Slack ------------------------------------------

TOKEN, SECRET = "xoxb-test", "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with FakeSlack(bot_token=TOKEN, bot_user_id=BOT_USER) as fake:
        yield fake


def dispatch(app: Any, body: bytes, content_type: str) -> int:
    headers = {
        "content-type": content_type,
        **{k.lower(): v for k, v in sign(SECRET, body).items()},
    }
    return app.dispatch(BoltRequest(body=body.decode(), headers=headers)).status


def test_through_bolt_an_opened_home_is_published_and_its_buttons_answer(slack, world) -> None:
    app = create_app(WebClient(token=TOKEN, base_url=slack.api_url), SECRET, world.services)
    dead = world.task(until=events.FAILED)
    dead_letter(world, dead.id, dead.prompt)
    envelope = {
        "type": "event_callback",
        "team_id": "T0AICO",
        "api_app_id": "A0AICO",
        "event_id": "Ev0HOME1",
        "event_time": 1700000200,
        "event": {"type": "app_home_opened", "user": ADMIN, "channel": "D0HOME", "tab": "home",
                  "event_ts": "1700000200.000100"},
    }  # fmt: skip

    assert dispatch(app, json.dumps(envelope).encode(), JSON_CT) == 200
    slack.wait_for(lambda: slack.home_view(ADMIN))
    assert buttons(slack.home_view(ADMIN))[home.RETRY_ACTION] == dead.id

    payload = {
        "type": "block_actions",
        "user": {"id": STRANGER},
        "api_app_id": "A0AICO",
        "team": {"id": "T0AICO"},
        "container": {"type": "view", "view_id": "V0HOME"},
        "trigger_id": "1.2.3",
        "view": {"id": "V0HOME", "type": "home"},
        "actions": [{"type": "button", "action_id": home.SCALE_UP_ACTION, "value": "+1"}],
    }
    form = "application/x-www-form-urlencoded"
    assert dispatch(app, block_actions_body(payload), form) == 200
    slack.wait_for(lambda: slack.home_view(STRANGER))
    assert "Only admins" in text_of(slack.home_view(STRANGER))
    assert world.store.latest(pool.PIN) is None


# -- kept fresh ---------------------------------------------------------------------------------


def test_an_open_admin_home_is_published_again_when_what_it_shows_changes_only(world, client):
    from bot.listeners.events.app_home import WATCH_FOR, Watcher

    now = [0.0]
    watcher = Watcher(world.services, clock=lambda: now[0])
    watcher._thread = threading.current_thread()  # looks are driven by the test, not a thread
    view = opened(world, client, ADMIN)
    watcher.opened(ADMIN, client, view)
    watcher.opened(OWNER, client, view)  # not an admin: their Home is not watched

    # Nothing changed: nothing published
    now[0] += 15
    assert watcher.refresh() == 0

    # When the pool is pinned, the admin's Home shows it once
    world.store.record(pool.PIN, pool.PINNED, {"workers": 3, "by": ADMIN})
    now[0] += 15
    assert watcher.refresh() == 1
    (who, fresh) = client.views[-1]
    assert who == ADMIN and "Pinned to 3" in json.dumps(fresh)
    assert watcher.refresh() == 0

    # And a Home not opened for a while is left alone
    world.store.record(pool.PIN, pool.UNPINNED, {"by": ADMIN})
    now[0] += WATCH_FOR + 1
    assert watcher.refresh() == 0
