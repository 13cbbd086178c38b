"""A reply in a task's thread (a message there, or an @mention of aico there) continues the
conversation. Threads aico did not start, its own messages and edits are ignored."""

from __future__ import annotations

import logging
import re
from typing import Any

from bot.usecases import UseCases
from core.errors import InvalidInput
from core.slack import blocks

log = logging.getLogger(__name__)
_MENTION = re.compile(r"^\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>[\s,:]*")


def make_handler(services: UseCases):
    def on_reply(event: dict[str, Any]) -> None:
        if services.conversations is None or not is_reply(event):
            return
        channel, thread_ts, user = event["channel"], event["thread_ts"], event["user"]
        text = _MENTION.sub("", event.get("text") or "")
        key = f"reply:{channel}:{event['ts']}"  # the same reply, as a message and as a mention
        try:
            services.conversations.reply(channel, thread_ts, user, text, key)
        except InvalidInput as exc:
            if services.tell is not None:
                services.tell(channel, user, blocks.refused(str(exc)), thread_ts)

    return on_reply


def is_reply(event: dict[str, Any]) -> bool:
    """A person's new message inside a thread (not the thread's first message, not a bot's,
    not an edit or a deletion)."""
    thread_ts = event.get("thread_ts")
    return bool(
        thread_ts
        and thread_ts != event.get("ts")
        and event.get("user")
        and not event.get("bot_id")
        and event.get("subtype") in (None, "thread_broadcast")
    )


def register(app: Any, services: UseCases) -> None:
    handler = make_handler(services)
    app.event("message")(handler)
    app.event("app_mention")(handler)
