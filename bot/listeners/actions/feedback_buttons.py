"""Slack's feedback buttons under an answer: each click is an event on the task."""

from __future__ import annotations

from typing import Any

from bot.usecases import UseCases
from core.errors import InvalidInput
from core.slack import blocks


def make_handler(services: UseCases):
    def handle_feedback(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any):
        ack()
        if services.feedback is None:
            return
        click = str(action.get("action_ts") or body.get("trigger_id") or "")
        try:
            told = services.feedback.rate(str(action.get("value", "")), body["user"]["id"], click)
        except InvalidInput as exc:
            told = blocks.refused(str(exc))
        respond(text=told, response_type="ephemeral", replace_original=False)

    return handle_feedback


def register(app: Any, services: UseCases) -> None:
    app.action(blocks.FEEDBACK_ACTION)(make_handler(services))
