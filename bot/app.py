"""create_app: the Bolt app with its listeners and one error handler that tells the user."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from bot import listeners
from bot.usecases import UseCases

log = logging.getLogger(__name__)

SORRY = ":boom: Something went wrong on our side and nothing was queued. Please try again."


def create_app(client: WebClient, signing_secret: str, services: UseCases) -> App:
    app = App(
        client=client,
        signing_secret=signing_secret or None,
        process_before_response=True,  # answer with the ack itself: no polling delay
        request_verification_enabled=bool(signing_secret),
    )
    listeners.register(app, services)
    app.error(_on_error)
    return app


def _on_error(error: Exception, body: dict[str, Any], respond: Any) -> None:
    log.error("unhandled error for %s: %r", body.get("command") or body.get("type"), error)
    if respond is not None:
        try:
            respond(text=SORRY, response_type="ephemeral")
        except Exception as exc:  # the user cannot be told; the log line above is what remains
            log.warning("could not tell the user about the error: %s", exc)
