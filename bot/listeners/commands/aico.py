"""`/aico …`: ack first (with the answer), one service call, nothing slow before the ack."""

from __future__ import annotations

import logging
from typing import Any

from bot import blocks
from bot.parsing import parse
from core.errors import InvalidInput
from core.services import Intake, TaskRequest

log = logging.getLogger(__name__)


def make_handler(intake: Intake, max_chars: int):
    def handle_aico(ack: Any, command: dict[str, Any]) -> None:
        parsed = parse(command.get("text", ""))
        if parsed.verb == "task":
            ack(text=_submit(intake, command, parsed.args), response_type="ephemeral")
        elif parsed.verb == "help":
            ack(**blocks.help_blocks(max_chars))
        else:
            ack(**blocks.help_blocks(max_chars, unknown=parsed.word))

    return handle_aico


def _submit(intake: Intake, command: dict[str, Any], text: str) -> str:
    request = TaskRequest(
        user=command["user_id"],
        channel=command["channel_id"],
        text=text,
        response_url=command.get("response_url", ""),
        key=command.get("trigger_id", ""),
    )
    try:
        task = intake.submit(request)
    except InvalidInput as exc:
        return blocks.refused(str(exc))
    log.info("task %s: submitted by %s in %s", task.id, request.user, request.channel)
    return blocks.accepted(task)


def register(app: Any, intake: Intake, max_chars: int) -> None:
    app.command("/aico")(make_handler(intake, max_chars))
