"""Slack's errors as the user reads them: what a refused call means for their task."""

from __future__ import annotations

from core.errors import SlackError

_REASONS = {
    "not_in_channel": "I am not in this channel. Invite me with `/invite @aico` and try again.",
    "channel_not_found": "I cannot see this channel. Invite me with `/invite @aico` and try again.",
    "is_archived": "this channel is archived.",
}


def refusal_reason(exc: SlackError) -> str:
    """Why a task could not be posted, for its owner: what to do about it where that is known,
    Slack's error code otherwise."""
    return _REASONS.get(exc.code, f"Slack refused the message ({exc.code})")
