"""The Cancel and Retry buttons on a task's parent message: the same as `/aico cancel|retry`."""

from __future__ import annotations

from typing import Any

from bot.listeners.commands.aico import control
from bot.usecases import UseCases
from core.slack.blocks import CANCEL_ACTION, RETRY_ACTION


def make_handler(services: UseCases, verb: str):
    def handle_button(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any):
        ack()
        told = control(services, verb, str(action.get("value", "")), body["user"]["id"])
        respond(text=told, response_type="ephemeral", replace_original=False)

    return handle_button


def register(app: Any, services: UseCases) -> None:
    app.action(CANCEL_ACTION)(make_handler(services, "cancel"))
    app.action(RETRY_ACTION)(make_handler(services, "retry"))
