"""Messages to aico: a reply in a task's thread (a message there, or an @mention of aico there)
continues the conversation; an @mention of aico anywhere else, and a direct message to it, start
a task in that message's own thread (the user's message is the parent: nothing else is posted).
One message is one task however often Slack delivers it, as a `message` and as an `app_mention`
event alike (keyed by channel and ts). aico's own messages, edits and deletions are ignored, and
so are threads aico did not start unless aico is mentioned there.

Files attached to such a message go with its task when they can be read (decided from Slack's
metadata: core/domain/attachments.py); the person is told at once, in the thread, which ones
cannot, and the task goes on without them. A message of files alone is a task about them."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from bot.parsing import task_options
from bot.usecases import UseCases
from core.domain.attachments import Attachment, Refused
from core.domain.events import TaskView
from core.errors import InvalidInput, SlackError
from core.slack import blocks
from core.usecases.intake import TaskRequest

log = logging.getLogger(__name__)
_MENTION = re.compile(r"^\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>[\s,:]*")
Files = tuple[Attachment, ...]  # the files that go with the task


def make_handler(services: UseCases):
    def on_message(event: dict[str, Any]) -> None:
        if not is_from_a_person(event):
            return
        files, refused = services.intake.sort_files(event.get("files"))
        try:
            if is_reply(event) and _continued(services, event, files, refused):
                return
            if event.get("type") == "app_mention" or is_direct(event):
                _start(services, event, files, refused)
        except InvalidInput as exc:
            said = [r.alone() for r in refused]  # no task: nothing goes on without them
            _tell(services, event, "\n".join([*said, blocks.refused(str(exc))]))

    return on_message


def _continued(
    services: UseCases, event: dict[str, Any], files: Files, refused: list[Refused]
) -> bool:
    """The reply as the next turn of the task whose thread it is in; False for a thread aico
    did not start."""
    if services.conversations is None:
        return False
    channel, thread_ts, user = event["channel"], event["thread_ts"], event["user"]
    key = f"reply:{channel}:{event['ts']}"  # the same reply, as a message and as a mention
    noted = _noter(services, event, refused)
    turn = services.conversations.reply(
        channel, thread_ts, user, text_of(event), key, files=files, on_recorded=noted
    )
    return turn is not None


def _start(services: UseCases, event: dict[str, Any], files: Files, refused: list[Refused]) -> None:
    """A task from a mention or a DM, answered in the message's own thread."""
    channel, ts = event["channel"], event["ts"]
    source = "dm" if is_direct(event) else "mention"
    words = text_of(event).split(maxsplit=1)
    project = bool(words) and words[0].lower() == "project"  # "@aico project <goal>"
    rest = (words[1] if len(words) > 1 else "") if project else text_of(event)
    try:
        options = task_options(rest)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    request = TaskRequest(
        user=event["user"],
        channel=channel,
        text=options.text,
        key=f"message:{channel}:{ts}",  # a mention arrives as a message and an app_mention
        thread_ts=event.get("thread_ts") or ts,
        repo=options.repo,
        code=options.code and not project,
        project=project,
        source=source,
        files=files,
    )
    task = services.intake.submit(request, _noter(services, event, refused))
    log.info(
        "task %s: from a %s by %s in %s, %d file(s)",
        task.id,
        source,
        request.user,
        channel,
        len(files),
    )


def _noter(
    services: UseCases, event: dict[str, Any], refused: list[Refused]
) -> Callable[[TaskView], None]:
    """What tells the person, once the task is recorded (once, however often Slack delivers
    the message), which of their files it goes on without."""

    def noted(task: TaskView) -> None:
        for file in refused:
            log.info("task %s: file %r refused: %s", task.id, file.name, file.reason)
        if not refused:
            return
        try:
            _tell(services, event, "\n".join(blocks.refused(r.note()) for r in refused))
        except SlackError as exc:  # the task is recorded: it goes on, told or not
            log.warning("task %s: the note about its files was not shown: %s", task.id, exc)

    return noted


def _tell(services: UseCases, event: dict[str, Any], text: str) -> None:
    if services.tell is not None:
        where = event.get("thread_ts") or event["ts"]
        services.tell(event["channel"], event["user"], text, where)


def text_of(event: dict[str, Any]) -> str:
    return _MENTION.sub("", event.get("text") or "")


def is_from_a_person(event: dict[str, Any]) -> bool:
    """A person's new message (not a bot's, not an edit or a deletion)."""
    return bool(
        event.get("user")
        and not event.get("bot_id")
        and event.get("subtype") in (None, "thread_broadcast", "file_share")
    )


def is_reply(event: dict[str, Any]) -> bool:
    """A person's new message inside a thread (not the thread's first message)."""
    thread_ts = event.get("thread_ts")
    return bool(thread_ts and thread_ts != event.get("ts") and is_from_a_person(event))


def is_direct(event: dict[str, Any]) -> bool:
    """A message in a direct conversation with aico."""
    return event.get("type") == "message" and event.get("channel_type") == "im"


def register(app: Any, services: UseCases) -> None:
    handler = make_handler(services)
    app.event("message")(handler)
    app.event("app_mention")(handler)
