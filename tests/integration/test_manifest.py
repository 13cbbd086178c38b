"""manifest.yml is a valid Slack app manifest, and every command and event it declares is heard."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from slack_bolt.request import BoltRequest

from aico.fakes.signing import sign, slash_command_body
from aico.fakes.slack import FakeSlack
from bot.app import create_app
from bot.usecases import UseCases
from core.adapters.slack import web_client
from core.adapters.sqlite_store import SqliteEventStore
from core.usecases.control import TaskControl
from core.usecases.intake import Intake
from core.usecases.relay import OutboxRelay
from core.usecases.status import Status

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = yaml.safe_load((ROOT / "manifest.yml").read_text())
SECRET = "manifest-test-secret"


def test_the_manifest_validates_against_slacks_schema():
    schema = json.loads((ROOT / "tests/schema/manifest.schema.json").read_text())
    jsonschema.validate(MANIFEST, schema)


def test_the_manifest_asks_for_the_scopes_the_code_uses():
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "files:write", "channels:history"} <= scopes


class _NoBroker:
    def publish(self, *_args):
        raise AssertionError("nothing is published in this test")


@pytest.fixture
def app(tmp_path):
    with FakeSlack(bot_token="xoxb-m") as slack:
        client = web_client("xoxb-m", slack.api_url)
        store = SqliteEventStore(tmp_path / "s.db")
        intake = Intake(store, OutboxRelay(store, None, _NoBroker(), "q"), 4000)
        status = Status(store, lambda queue: (0, 0), ["q"])
        control = TaskControl(store, intake, _NoBroker(), "r", frozenset())
        yield create_app(client, SECRET, UseCases(intake, status, store, control, 4000))


def _dispatch(app, body: bytes, content_type: str):
    headers = {"content-type": [content_type], **{k: [v] for k, v in sign(SECRET, body).items()}}
    return app.dispatch(BoltRequest(body=body.decode(), headers=headers))


@pytest.mark.parametrize("command", [c["command"] for c in MANIFEST["features"]["slash_commands"]])
def test_every_declared_command_has_a_listener(app, command):
    response = _dispatch(
        app, slash_command_body("help", command=command), "application/x-www-form-urlencoded"
    )
    assert response.status == 200, response.body


EVENTS = MANIFEST.get("settings", {}).get("event_subscriptions", {}).get("bot_events", [])


@pytest.mark.parametrize(
    "event",
    EVENTS
    or [
        pytest.param(
            None, marks=pytest.mark.skip(reason="the manifest subscribes to no events yet")
        )
    ],
)
def test_every_declared_event_has_a_listener(app, event):
    body = json.dumps(
        {
            "type": "event_callback",
            "team_id": "T0AICO",
            "api_app_id": "A0AICO",
            "event_id": "Ev1",
            "event_time": 1,
            # `message.channels` arrives as a `message` event (with channel_type "channel")
            "event": {
                "type": event.split(".")[0],
                "user": "U1",
                "channel": "C1",
                "ts": "1.1",
                "event_ts": "1.1",
            },
        }
    ).encode()
    assert _dispatch(app, body, "application/json").status == 200
