"""What the bot answers in Block Kit. Pure."""

from __future__ import annotations

from typing import Any

from core.domain.events import TaskView
from core.domain.text import escape, preview


def help_text(max_chars: int) -> str:
    return (
        "*aico* hands tasks to Claude and answers in a thread.\n"
        "• `/aico task &lt;what to do&gt;`: queue a task (up to "
        f"{max_chars:,} characters). I post the task in this channel and answer in its thread.\n"
        "• `/aico help`: this message."
    )


def help_blocks(max_chars: int, unknown: str = "") -> dict[str, Any]:
    text = help_text(max_chars)
    if unknown:
        text = f"I don't know `{escape(preview(unknown, 40))}`.\n\n" + text
    section = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    return {"text": text, "blocks": [section], "response_type": "ephemeral"}


def accepted(task: TaskView) -> str:
    return (
        f":inbox_tray: Task `{task.id}` received. It is posted in this channel; "
        "progress and the answer will appear in that message's thread."
    )


def refused(reason: str) -> str:
    return f":warning: {reason}"
