"""Intake: a task from Slack is validated, checked against the budgets and recorded before it is
acked; the outbox relay then posts and queues it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.domain import events
from core.domain.attachments import (
    DEFAULT_MAX_FILE_BYTES,
    SEE_FILES,
    Attachment,
    Refused,
    sort_files,
)
from core.domain.events import TaskView
from core.domain.task import clean_prompt, new_task_id
from core.errors import InvalidInput
from core.ports import EventStore
from core.usecases.budgets import Budgets
from core.usecases.relay import OutboxRelay


@dataclass(frozen=True)
class TaskRequest:
    user: str
    channel: str
    text: str
    response_url: str = ""
    key: str = ""  # what makes a delivery unique (Slack's trigger_id): a replay is not a new task
    thread_ts: str = ""  # a reply in a task's thread: the thread it continues
    conversation: str = ""  # the task that started that thread
    repo: str = ""  # the repository named for its context ("": the channel's default, else all)
    code: bool = False  # a change on a branch, for review, rather than an answer
    project: bool = False  # a goal the PM plans into steps run in parallel
    source: str = ""  # "mention", "dm", "button": the thread exists; no parent is posted
    files: tuple[Attachment, ...] = ()  # attached in Slack, accepted by Intake.sort_files


Recorded = Callable[[TaskView], None]  # told once, when a request is recorded as a new task


class Intake:
    """Records a task before it is acked, then hands it to the outbox relay."""

    def __init__(
        self,
        store: EventStore,
        relay: OutboxRelay,
        max_chars: int,
        budgets: Budgets | None = None,
        repos: Sequence[str] = (),
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.store = store
        self.relay = relay
        self.max_chars = max_chars
        self.budgets = budgets
        self.repos = tuple(repos)  # the names of AICO_REPOS
        self.max_file_bytes = max_file_bytes  # AICO_MAX_FILE_MB, for one attached file

    def sort_files(
        self, files: Sequence[Mapping[str, Any]] | None
    ) -> tuple[tuple[Attachment, ...], list[Refused]]:
        """The files of a Slack message that go with its task, and those refused with their
        reason (for a note to the person), from their metadata: nothing is downloaded here."""
        accepted, refused = sort_files(files, self.max_file_bytes)
        return tuple(accepted), refused

    def submit(self, request: TaskRequest, on_recorded: Recorded | None = None) -> TaskView:
        """Validate and record the task (InvalidInput says what is wrong). Runs before the ack.
        `on_recorded` is called once, when the request becomes a new task (not for a replay)."""
        text = request.text if request.text.strip() or not request.files else SEE_FILES
        prompt = clean_prompt(text, self.max_chars)
        task_id = new_task_id()
        data: dict[str, Any] = {
            "user": request.user,
            "channel": request.channel,
            "prompt": prompt,
            "response_url": request.response_url,
        }
        if request.files:  # their metadata only: each attempt downloads them again
            data["files"] = [attachment.record() for attachment in request.files]
        if request.conversation:
            data.update(thread_ts=request.thread_ts, conversation=request.conversation)
        elif request.source:  # the user's message is the thread: no parent is posted
            data.update(thread_ts=request.thread_ts, source=request.source)
        if repo := self._repo(request):
            data["repo"] = repo
        if request.code:
            data["mode"] = "code"
        elif request.project:
            data["mode"] = "project"
        event_id = f"intake:{request.key}" if request.key else f"{task_id}:submitted"
        if request.key and (existing := self.store.task_by_event(event_id)):
            return existing  # the same request again: answer with the task it made
        if self.budgets is not None:
            self.budgets.check(request.user, request.channel)
        task = self.store.append(task_id, events.SUBMITTED, data, event_id)
        if task is None:  # the same request again: answer with the task it made
            existing = self.store.task_by_event(event_id)
            assert existing is not None, "a recorded event has its task"
            return existing
        self.relay.dispatch_soon(task_id, task)
        if on_recorded is not None:
            on_recorded(task)
        return task

    def _repo(self, request: TaskRequest) -> str:
        """The repository the task names, else the channel's default; InvalidInput for one
        that is not configured, and for a code task that cannot tell which one it changes."""
        if request.repo and request.repo not in self.repos:
            known = ", ".join(f"`{name}`" for name in self.repos) or "none (AICO_REPOS is empty)"
            raise InvalidInput(
                f"I don't know the repository `{request.repo[:40]}`. Known: {known}."
            )
        repo = request.repo or default_repo(self.store, request.channel, self.repos)
        if request.code and not repo:
            if not self.repos:
                raise InvalidInput(
                    "Code tasks need a repository, and none is configured (AICO_REPOS)."
                )
            if len(self.repos) > 1:
                names = ", ".join(f"`{name}`" for name in self.repos)
                raise InvalidInput(
                    f"Which repository should change? Add `--repo <name>` ({names})."
                )
            repo = self.repos[0]
        return repo


CHANNEL_CONFIG = "config:"  # + a channel id: the channel's settings, as events
CONFIGURED = "channel_configured"


def default_repo(store: EventStore, channel: str, repos: Sequence[str]) -> str:
    """The channel's default repository (`/aico config repo`), if it is still configured."""
    latest = store.latest(CHANNEL_CONFIG + channel)
    repo = str(latest.data.get("repo", "")) if latest is not None else ""
    return repo if repo in repos else ""


def set_default_repo(store: EventStore, channel: str, repo: str, by: str) -> None:
    store.record(CHANNEL_CONFIG + channel, CONFIGURED, {"repo": repo, "by": by})
