"""Which of aico's messages a Slack message is, by the metadata aico posted it with."""

from __future__ import annotations

from typing import Any


def is_about(
    message: dict[str, Any], event_type: str, key: str, generation: int | None = None
) -> bool:
    """Whether `message` carries aico's metadata (`event_type`, task_id=`key`), and is of that
    `generation` of the task when one is given (a message without one is of generation 0)."""
    meta = message.get("metadata") or {}
    payload = meta.get("event_payload") or {}
    ours = meta.get("event_type") == event_type and payload.get("task_id") == key
    return ours and generation in (None, payload.get("generation", 0))
