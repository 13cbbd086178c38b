"""The Retry button on a dead-lettered task's alert, in the alert channel: for admins only (the
task's own message keeps its Retry for its requester)."""

from __future__ import annotations

from typing import Any

from bot.listeners.commands.aico import control
from bot.usecases import UseCases
from core.slack import blocks
from core.slack.blocks import ADMIN_RETRY_ACTION


def make_handler(services: UseCases):
    def handle_admin_retry(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any):
        ack()
        user = body["user"]["id"]
        if user not in services.admins:
            told = blocks.refused(
                "Only admins (`AICO_ADMINS`) can retry a dead-lettered task here."
            )
        else:
            told = control(services, "retry", str(action.get("value", "")), user)
        respond(text=told, response_type="ephemeral", replace_original=False)

    return handle_admin_retry


def register(app: Any, services: UseCases) -> None:
    app.action(ADMIN_RETRY_ACTION)(make_handler(services))
