"""The result worker's logic: record what task workers report and show it in the task's thread.

Each task has one result message in its thread. It is posted once ("working on it", or the
outcome itself) and then completed with `chat.update`. Before the post, the intent is recorded;
after it, the message's ts. A worker that dies (or loses its connection to Slack) between the
two leaves the intent behind, and whoever picks the task up next looks for the message in the
thread, by its metadata, before posting: the result is never posted twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.domain import events
from core.domain.events import TaskView
from core.domain.messages import ResultMessage
from core.domain.pricing import DEFAULT_PRICES, Prices
from core.domain.task import TaskStatus
from core.domain.text import INLINE_LIMIT, to_mrkdwn
from core.errors import Reject, SlackError
from core.ports import Delivery, EventStore, Notifier
from core.slack import blocks
from core.slack.patience import SLACK_PATIENCE, with_patience

log = logging.getLogger(__name__)

REPLY_EVENT = "aico_task_result"  # the metadata event type of a task's result message
WORKING = "is working on it…"  # under the thread while Claude works
# Progress updates, all tasks together: chat.update is allowed about 50 a minute per workspace,
# and answers must keep their share of it.
PROGRESS_RATE, PROGRESS_BURST = 0.5, 5
FILE_SHARE_LOOKS = 10  # seconds spent looking for a file we may have shared already

OnEvent = Callable[[TaskView, ResultMessage], None]


class Allowance:
    """A token bucket that says no instead of waiting: for what may be skipped."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class ResultHandler:
    def __init__(
        self,
        store: EventStore,
        notifier: Notifier,
        stopping: threading.Event | None = None,
        patience: float = SLACK_PATIENCE,
        prices: Prices = DEFAULT_PRICES,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.stopping = stopping or threading.Event()
        self.patience = patience
        self.prices = prices
        self._glimpses = Allowance(PROGRESS_RATE, PROGRESS_BURST)
        self._uploading: set[str] = set()  # files this worker began to upload
        self._on: dict[str, OnEvent] = {  # what each reported event does in the thread
            "started": self._on_started,
            "progress": self._on_progress,
            "retrying": self._on_retrying,
            "completed": self._on_completed,
            "failed": self._on_failed,
            "cancelled": self._on_cancelled,
        }

    def __call__(self, delivery: Delivery, _publish: object) -> None:
        self.handle(ResultMessage.decode(delivery.body))

    def handle(self, result: ResultMessage) -> None:
        what = f"task {result.task_id}"
        with_patience(lambda: self._handle(result), what, self.patience, self.stopping)

    def _handle(self, result: ResultMessage) -> None:
        on_event = self._on.get(result.event)
        if on_event is None:
            raise Reject(f"task {result.task_id}: no handler for result event {result.event!r}")
        task = self.store.task(result.task_id)  # read again on every try: it may have moved on
        if task is None:
            raise Reject(f"result for unknown task {result.task_id}")
        shows_cancel = result.event == "cancelled" and task.status is TaskStatus.CANCELLED
        if task.status.final and not shows_cancel:
            log.info("task %s: already %s; ignoring %s", task.id, task.status, result.event)
            return
        on_event(task, result)

    def _on_started(self, task: TaskView, result: ResultMessage) -> None:
        if not (task.reply_ts or task.reply_pending) or result.attempt > 1:
            # the first attempt posts the result message; a later one takes back what an
            # attempt that died (kill -9: no "retrying" came) had shown of its answer
            task = self._reply(task, *blocks.working_blocks(task.id))
        self.notifier.set_status(task.channel, task.thread_ts, WORKING)
        self._show_status(task)

    def _on_progress(self, task: TaskView, result: ResultMessage) -> None:
        """The answer so far, in the result message: a glimpse, so it is dropped rather than
        waited for when progress updates would go beyond Slack's pace for chat.update."""
        if 0 < result.attempt < task.attempts:
            return  # a glimpse of an attempt that failed since: a later one is under way
        if not self._glimpses.take():
            return
        self._reply(task, *blocks.progress_blocks(task.id, result.text))

    def _on_retrying(self, task: TaskView, result: ResultMessage) -> None:
        """An attempt failed and the task waits for the next: what it showed is taken back."""
        if task.reply_ts or task.reply_pending:
            self._reply(task, *blocks.retrying_blocks(task.id, result.error))

    def _on_completed(self, task: TaskView, result: ResultMessage) -> None:
        was_working = bool(task.reply_ts)  # its placeholder was posted: it showed progress
        cost = self.prices.cost(result.model, result.usage)
        stop = result.stop_reason
        receipt = blocks.receipt(result.model, result.usage, result.claude_ms, cost, stop)
        buttons = _buttons(task, result)
        self._reply_answer(task, blocks.answer_text(result.text, stop), receipt, buttons)
        if result.change.get("diff"):
            self._attach(task, str(result.change["diff"]), f"aico-{task.id}.diff", "The diff.")
        data = {
            "model": result.model,
            "usage": result.usage,
            "claude_ms": result.claude_ms,
            "cost_usd": cost,
            "chars": len(result.text),
            "started_at": result.started_at,
            "stop_reason": stop,
        }
        view = self.store.append(task.id, events.COMPLETED, data, task.key("completed"))
        log.info("task %s: done", task.id)
        self._show_status(view or task, was_working)

    def _on_failed(self, task: TaskView, result: ResultMessage) -> None:
        was_working = bool(task.reply_ts)  # its placeholder was posted: it showed progress
        self._reply(task, *blocks.failure_blocks(task.id, result.error))
        data = {"error": result.error, "started_at": result.started_at}
        view = self.store.append(task.id, events.FAILED, data, task.key("failed"))
        log.info("task %s: failed: %s", task.id, result.error)
        self._show_status(view or task, was_working)

    def _on_cancelled(self, task: TaskView, result: ResultMessage) -> None:
        was_working = bool(task.reply_ts)  # its placeholder was posted: it showed progress
        self._reply(task, *blocks.cancelled_blocks(task))
        log.info("task %s: cancelled by %s", task.id, task.cancelled_by)
        self._show_status(task, was_working)

    def _reply_answer(
        self, task: TaskView, answer: str, receipt: str, buttons: list[dict] | None = None
    ) -> None:
        if len(to_mrkdwn(answer)) <= INLINE_LIMIT:
            self._reply(task, *blocks.answer_blocks(answer, receipt, buttons))
            return
        filename = f"aico-{task.id}.md"
        self._reply(task, *blocks.attached_answer_blocks(answer, receipt, filename, buttons))
        self._attach(task, answer, filename, f"The whole answer to task `{task.id}`.")

    def _attach(self, task: TaskView, content: str, filename: str, comment: str) -> None:
        """`content` as a file in the thread, once (an upload whose outcome is unknown is
        looked for before it is uploaded again)."""
        if self._file_shared(task, filename):
            return
        self._uploading.add(filename)  # an upload whose answer is lost may still be shared
        self.notifier.upload(task.channel, task.thread_ts, content, filename, comment)
        self._uploading.discard(filename)  # it worked: nothing to look for again

    def _file_shared(self, task: TaskView, filename: str) -> bool:
        """Whether the file is in the thread. Slack shares an upload a moment after it is
        complete: after an upload of ours whose outcome is unknown, look for a while."""
        looks = FILE_SHARE_LOOKS if filename in self._uploading else 1
        for look in range(looks):
            if self.notifier.has_file(task.channel, task.thread_ts, filename):
                return True
            if look + 1 < looks and self.stopping.wait(1.0):
                break
        return False

    def _reply(self, task: TaskView, text: str, body: blocks.Blocks) -> TaskView:
        """Show `text` as the task's one result message: post it once, update it after."""
        ts = task.reply_ts or (self._find_reply(task) if task.reply_pending else "")
        if ts:
            self.notifier.update(task.channel, ts, text, body)
            return task if task.reply_ts else self._replied(task, ts)
        if not task.reply_pending:
            task = self._record(task, events.REPLY_PENDING, {}, task.key("reply-pending"))
        metadata = {"event_type": REPLY_EVENT, "event_payload": {"task_id": task.id}}
        ts = self.notifier.post(task.channel, text, body, task.thread_ts, metadata)
        return self._replied(task, ts)

    def _find_reply(self, task: TaskView) -> str:
        ts = self.notifier.find_message(task.channel, REPLY_EVENT, task.id, task.thread_ts)
        log.info("task %s: an earlier post of its result %s", task.id, "found" if ts else "absent")
        return ts

    def _replied(self, task: TaskView, ts: str) -> TaskView:
        return self._record(task, events.REPLIED, {"ts": ts}, task.key("replied"))

    def _record(self, task: TaskView, type_: str, data: dict, event_id: str) -> TaskView:
        return self.store.append(task.id, type_, data, event_id) or self.store.task(task.id) or task

    def _show_status(self, task: TaskView, was_working: bool = False) -> None:
        if was_working:  # "is working on it…" was shown under the thread: take it away
            self.notifier.set_status(task.channel, task.thread_ts, "")
        if not task.has_parent:
            return  # a later turn, a mention, a DM: the parent message is not this task's
        text, body = blocks.parent_message(task)
        try:  # with patience of its own: the task has moved on, so a retried _handle would not
            with_patience(
                lambda: self.notifier.update(task.channel, task.thread_ts, text, body),
                f"task {task.id}'s message",
                self.patience,
                self.stopping,
            )
        except SlackError as exc:
            log.warning("task %s: parent message not updated: %s", task.id, exc)


def _buttons(task: TaskView, result: ResultMessage) -> list[dict] | None:
    """Approve / Reject under a proposed change; "Make the change" under an answer that drew
    on a repository, where code changes can be made."""
    if result.change.get("branch"):
        return blocks.change_buttons(task.id)
    if result.change.get("offer"):
        return blocks.make_change_button(task.id)
    return None
