"""Conversations: a reply in a task's thread is the next turn. It becomes a task of its own (with
its own result message, receipt and cost) that Claude gets with the thread's earlier turns."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from core.domain.attachments import Attachment
from core.domain.events import TaskView
from core.errors import InvalidInput
from core.ports import EventStore
from core.usecases.intake import Intake, Recorded, TaskRequest

log = logging.getLogger(__name__)


class Conversations:
    def __init__(self, store: EventStore, intake: Intake, open_to_channel: bool) -> None:
        self.store = store
        self.intake = intake
        self.open_to_channel = open_to_channel  # else only the first task's requester continues

    def reply(
        self,
        channel: str,
        thread_ts: str,
        user: str,
        text: str,
        key: str,
        files: Sequence[Attachment] = (),
        on_recorded: Recorded | None = None,
    ) -> TaskView | None:
        """The turn a reply starts (with the files attached to it); None for a thread aico did
        not start (ignored). InvalidInput says why the reply cannot continue the conversation.
        `on_recorded` is called once, when the reply becomes a new turn."""
        first = next((t for t in self.store.thread(channel, thread_ts) if not t.conversation), None)
        if first is None:
            return None
        if not self.open_to_channel and user != first.user:
            raise InvalidInput(
                f"Only <@{first.user}>, who started this conversation, can continue it. "
                "Start your own with `/aico task`."
            )
        request = TaskRequest(
            user,
            channel,
            text,
            key=key,
            thread_ts=thread_ts,
            conversation=first.id,
            repo=first.repo,
            files=tuple(files),
        )
        turn = self.intake.submit(request, on_recorded)
        log.info("task %s: a turn of %s, from %s", turn.id, first.id, user)
        return turn
