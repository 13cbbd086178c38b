"""The result worker's logic: record what task workers report and show it in the task's thread.

Each task has one result message in its thread. Before it is first posted, the intent is recorded;
after it, the message's ts. A worker that dies (or loses its connection to Slack) between the two
leaves the intent behind, and whoever picks the task up next looks for the message in the thread
before posting: the result is never posted twice. The answer of a task's first attempt, the
common case, is posted without the intent (one durable append less on its way): its report is
the only one so far, so a post that may have happened without its record is one whose report is
delivered again (the broker marks it redelivered) or one whose post raised here; both look for
the message first, and so does any later report of an answer (`ResultMessage.first` unset).

Where the workspace offers Slack's agent platform, the answer is streamed natively:

- **Start** on the answer's first text (`chat.startStream`): no "working on it" placeholder is
  posted, the thread's agent session (or the status line) says it. The intent recorded first
  holds the stream's first characters: startStream takes no metadata, so after a crash (or a
  lost answer) between the start and the record, the message is found as aico's reply in the
  thread that has no metadata and begins with them (`Notifier.find_stream`).
- **Append** the new text of each progress report (the report has the whole text so far: the
  delta is what lies past what was streamed), at most one append per task every APPEND_EVERY
  and within a budget of appends for the workspace; an append not made now is not owed: the
  next report, or the stop, carries its text.
- **Stop** with the rest of the answer, the blocks under it (receipt, buttons, feedback) and the
  metadata that makes it findable; an answer too long for a message streams its start and ends
  as today (the start, and the whole answer as a file).
- **Budget**: starting and stopping are in Slack's Tier 2 (about 20 a minute for the
  workspace). A token bucket of starts (each stream's one stop rides on its start) says no
  rather than waits: an answer beyond it is posted without a stream, as before.
- **Fallbacks, at once**: a 429 on a start posts instead; on an append it skips; on a stop, the
  stream is deleted and the answer posted (a streaming message cannot be edited). A start that
  the workspace refuses for good (`unknown_method`, ...) switches streaming off for
  UNAVAILABLE_FOR seconds: today's `chat.update` glimpses, at their 2-s pace, meanwhile.
- **Roll-over**: when Slack ends a stream itself (`message_not_in_streaming_state`: the time
  limit, a long answer) or an append fails in a way that leaves unsure what the stream holds,
  the task goes on in that same message with `chat.update` and the whole text so far (stopping
  the stream first if it may still be open): nothing lost, nothing repeated, one message.
- **Retries reuse the message**: a failed attempt's stream is stopped and its message updated
  to say a new attempt follows ("retrying" takes back the half answer); the next attempt shows
  its progress and answer in that same message by `chat.update`. Only an attempt that finds no
  message for its task streams. Cancelled and failed tasks stop their stream the same way.
- **Sessions**: a task that starts sets its thread's agent session to "processing" (titled with
  its prompt) and every ending moves it to "active". A workspace that refuses sessions gets the
  "is working on it…" status line instead, for UNAVAILABLE_FOR seconds before sessions are
  tried again.

A streamed text is escaped as every text aico shows (`&`, `<`, `>`), so that Claude's words
never ping anyone; Slack's markdown reads the entities back.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from core.domain import events
from core.domain.events import TaskView
from core.domain.messages import ResultMessage
from core.domain.plan import FINAL
from core.domain.pricing import DEFAULT_PRICES, Prices
from core.domain.task import TaskStatus
from core.domain.text import INLINE_LIMIT, escape, preview, to_mrkdwn
from core.errors import Reject, SlackError
from core.ports import Delivery, EventStore, Notifier
from core.slack import blocks
from core.slack.patience import SLACK_PATIENCE, with_patience
from core.slack.plan import plan_blocks, plan_it_button
from core.usecases.projects import Projects, state_of

log = logging.getLogger(__name__)

REPLY_EVENT = "aico_task_result"  # the metadata event type of a task's result message
WORKING = "is working on it…"  # under the thread while Claude works
# Progress updates, all tasks together: chat.update is allowed about 50 a minute per workspace,
# and answers must keep their share of it.
PROGRESS_RATE, PROGRESS_BURST = 0.5, 5
FILE_SHARE_LOOKS = 10  # seconds spent looking for a file we may have shared already
# Streams: chat.startStream and chat.stopStream are Tier 2 (20+ a minute for the workspace),
# chat.appendStream Tier 4 (100+ a minute). Kept a little under, for what else may call them.
STREAM_RATE, STREAM_BURST = 18 / 60, 10
APPEND_RATE, APPEND_BURST = 80 / 60, 20
APPEND_EVERY = 0.5  # seconds between two appends to one stream
STREAM_CAP = INLINE_LIMIT  # characters streamed at most; a longer answer also goes as a file
HEAD = 60  # characters of a stream's start kept in its intent, to find it again
UNAVAILABLE_FOR = 600.0  # seconds before a refused feature (streams, sessions) is tried again
TITLE_CHARS = 100  # of the prompt, as its session's title
NOT_STREAMING = "message_not_in_streaming_state"  # Slack ended the stream (or it was stopped)
RATE_LIMITED = "ratelimited"
GONE = "message_not_found"
# Permanent refusals that say the workspace (or the app) does not offer the method at all.
FEATURE_ERRORS = frozenset(
    {
        "unknown_method",
        "feature_disabled",
        "not_enabled",
        "not_allowed_token_type",
        "missing_scope",
        "method_deprecated",
        "access_denied",
    }
)

OnEvent = Callable[[TaskView, ResultMessage], None]
STREAM, OPEN, PLAIN = "stream", "open", "plain"  # the modes of a task's message (see _Live)


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


class Feature:
    """Whether the workspace offers a part of the agent platform: off for `pause` seconds once
    Slack refused it for good, so that not every task asks again."""

    def __init__(self, name: str, present: bool, clock=time.monotonic, pause=UNAVAILABLE_FOR):
        self.name, self.present, self.clock, self.pause = name, present, clock, pause
        self._off_until = 0.0

    def on(self) -> bool:
        return self.present and self.clock() >= self._off_until

    def refused(self, exc: SlackError) -> None:
        log.warning("Slack refused %s (%s): not used for %.0f s", self.name, exc.code, self.pause)
        self._off_until = self.clock() + self.pause


@dataclass
class _Live:
    """What this worker knows of a task's message. `mode`: STREAM, a stream still open that
    holds `sent` characters of the (escaped) answer; OPEN, a stream that may be open with
    content unknown (stopped before anything else is done with it); PLAIN, a message that
    chat.update changes. `streamed`: it began as a stream (so it has no metadata until it ends);
    `answered`: the answer was shown in it (a retried handling does not show it again)."""

    ts: str
    mode: str
    sent: int = 0
    at: float = 0.0
    streamed: bool = False
    answered: bool = False
    stuck: bool = False  # its stop was refused (429): deleted, not stopped again
    unrecorded: bool = False  # an answer's new message: its ts is recorded with the completion
    left_processing: bool = False  # stopped with the answer: its session is active now


class ResultHandler:
    def __init__(
        self,
        store: EventStore,
        notifier: Notifier,
        stopping: threading.Event | None = None,
        patience: float = SLACK_PATIENCE,
        prices: Prices = DEFAULT_PRICES,
        clock: Callable[[], float] = time.monotonic,
        projects: Projects | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.stopping = stopping or threading.Event()
        self.patience = patience
        self.prices = prices
        self.clock = clock
        self._glimpses = Allowance(PROGRESS_RATE, PROGRESS_BURST)
        self._starts = Allowance(STREAM_RATE, STREAM_BURST, clock=clock)
        self._appends = Allowance(APPEND_RATE, APPEND_BURST, clock=clock)
        # A Notifier without the agent platform's methods (an older stand-in) is a workspace
        # without it.
        self.streams = Feature("streaming", _speaks(notifier, "start_stream"), clock)
        self.sessions = Feature("agent sessions", _speaks(notifier, "set_session"), clock)
        self._live: dict[tuple[str, int], _Live] = {}  # (task, generation) -> its message
        self._working: set[str] = set()  # tasks whose session / status line says "working"
        self._uploading: set[str] = set()  # files this worker began to upload
        self._unsure: set[tuple[str, int]] = set()  # answers posted without an intent, whose
        # post raised: it may have happened, so it is looked for before it is posted again
        self.projects = projects  # the conductor: a step that ended moves its project on
        self._plan_locks: dict[str, threading.Lock] = {}  # one project's plan drawn at a time
        self._on: dict[str, OnEvent] = {  # what each reported event does in the thread
            "started": self._on_started,
            "progress": self._on_progress,
            "retrying": self._on_retrying,
            "completed": self._on_completed,
            "failed": self._on_failed,
            "cancelled": self._on_cancelled,
            "plan": self._on_plan,
        }

    def __call__(self, delivery: Delivery, _publish: object) -> None:
        result = ResultMessage.decode(delivery.body)
        if result.first and delivery.redelivered:  # a worker got it before: it may have posted
            result = replace(result, first=False)
        self.handle(result)

    def handle(self, result: ResultMessage) -> None:
        what = f"task {result.task_id}"
        with_patience(lambda: self._handle(result), what, self.patience, self.stopping)

    def end_session(self, task: TaskView) -> None:
        """Move the task's thread out of "working" (its agent session, or the status line) when
        it ended without a report to show (the dead-letter path). Best effort: never raises."""
        try:
            self._leave_processing(task, True)
        except SlackError as exc:
            log.warning("task %s: its session was not ended: %s", task.id, exc)

    def _handle(self, result: ResultMessage) -> None:
        on_event = self._on.get(result.event)
        if on_event is None:
            raise Reject(f"task {result.task_id}: no handler for result event {result.event!r}")
        task = self.store.task(result.task_id)  # read again on every try: it may have moved on
        if task is None:
            raise Reject(f"result for unknown task {result.task_id}")
        if not task.thread_ts and result.thread_ts:  # queued before its thread was recorded
            task = replace(task, thread_ts=result.thread_ts)
        if task.project and task.step != FINAL:  # a step: it only moves its project's plan on
            self._on_step(task, result)
            return
        shows_cancel = result.event == "cancelled" and task.status is TaskStatus.CANCELLED
        if task.status.final and not shows_cancel:
            log.info("task %s: already %s; ignoring %s", task.id, task.status, result.event)
            return
        on_event(task, result)
        if task.project and result.event in ("completed", "failed", "cancelled"):
            self._move_on(task.project)  # the final step: the project is done

    # -- projects ----------------------------------------------------------------------------

    def _on_plan(self, task: TaskView, result: ResultMessage) -> None:
        """A project's plan was made: its live plan in the thread, its session working."""
        self._start_processing(task)
        self._draw_plan(task.id)
        self._show_status(task)

    def _on_step(self, task: TaskView, result: ResultMessage) -> None:
        """A step's report: recorded as any task's, shown only in its project's plan."""
        if result.event == "completed" and not task.status.final:
            cost = self.prices.cost(result.model, result.usage)
            data = _completed(result, cost)
            self.store.append(task.id, events.COMPLETED, data, task.key("completed"))
        elif result.event == "failed" and not task.status.final:
            data = {"error": result.error, "started_at": result.started_at}
            self.store.append(task.id, events.FAILED, data, task.key("failed"))
        if result.event in ("started", "completed", "failed", "cancelled"):
            self._move_on(task.project)

    def _move_on(self, project_id: str) -> None:
        """The conductor, then the plan drawn again (and, once it ended, the project's parent
        and session)."""
        if self.projects is not None:
            self.projects.advance(project_id)
        project = self._draw_plan(project_id)
        if project is not None and project.status.final:
            self._leave_processing(project, True)
            self._show_status(project)

    def _draw_plan(self, project_id: str, reason: str = "") -> TaskView | None:
        lock = self._plan_locks.setdefault(project_id, threading.Lock())
        with lock:  # the latest state, drawn by one thread at a time
            project = self.store.task(project_id)
            if project is None:
                return None
            state = state_of(self.store, project)
            if state.plan is None and not reason:
                return project
            self._reply(project, *plan_blocks(state, reason), final=project.status.final)
            return project

    # -- what each report does ---------------------------------------------------------------

    def _on_started(self, task: TaskView, result: ResultMessage) -> None:
        has_message = bool(task.reply_ts or task.reply_pending)
        if has_message and result.attempt > 1:
            # a later attempt takes back what an attempt that died (kill -9: no "retrying"
            # came) had shown of its answer, and shows its own in the same message
            task = self._reply(task, *blocks.working_blocks(task.id), ongoing=True)
        elif not has_message and not self.streams.on():
            task = self._reply(task, *blocks.working_blocks(task.id))  # streams start on text
        self._start_processing(task)
        self._show_status(task)

    def _on_progress(self, task: TaskView, result: ResultMessage) -> None:
        """The answer so far: appended to its stream, or a glimpse in the result message,
        dropped rather than waited for when it would go beyond Slack's pace."""
        if 0 < result.attempt < task.attempts:
            return  # a glimpse of an attempt that failed since: a later one is under way
        live = self._live_of(task)
        if live is None and result.text and self.streams.on() and self._starts.take():
            self._start(task, result.text)
            return
        if live is not None and live.mode == STREAM:
            self._append(task, live, result.text)
            return
        if self._glimpses.take():
            self._reply(task, *blocks.progress_blocks(task.id, result.text), ongoing=True)

    def _on_retrying(self, task: TaskView, result: ResultMessage) -> None:
        """An attempt failed and the task waits for the next: what it showed is taken back."""
        if task.reply_ts or task.reply_pending:
            self._reply(task, *blocks.retrying_blocks(task.id, result.error), ongoing=True)

    def _on_completed(self, task: TaskView, result: ResultMessage) -> None:
        was_working = bool(task.reply_ts)  # its placeholder was posted: it showed progress
        cost = self.prices.cost(result.model, result.usage)
        stop = result.stop_reason
        receipt = blocks.receipt(result.model, result.usage, result.claude_ms, cost, stop)
        self._show_answer(task, result, receipt, _buttons(task, result))
        if result.change.get("diff"):
            self._attach(task, str(result.change["diff"]), f"aico-{task.id}.diff", "The diff.")
        data = _completed(result, cost)
        live = self._live.get(_key(task))
        if live is not None and live.unrecorded:
            data["reply_ts"] = live.ts  # the answer's new message, recorded in the same append
        view = self._record(task, events.COMPLETED, data, task.key("completed"))
        log.info("task %s: done", task.id)
        self._ended(view, was_working)

    def _on_failed(self, task: TaskView, result: ResultMessage) -> None:
        was_working = bool(task.reply_ts)  # its placeholder was posted: it showed progress
        data = {"error": result.error, "started_at": result.started_at}
        if task.mode == "project" and task.answered:  # its plan stays, with the reason
            view = self._record(task, events.FAILED, data, task.key("failed"))
            self._draw_plan(task.id, result.error)
            self._ended(view, was_working)
            return
        self._reply(task, *blocks.failure_blocks(task.id, result.error))
        view = self._record(task, events.FAILED, data, task.key("failed"))
        log.info("task %s: failed: %s", task.id, result.error)
        self._ended(view, was_working)

    def _on_cancelled(self, task: TaskView, result: ResultMessage) -> None:
        was_working = bool(task.reply_ts)  # its placeholder was posted: it showed progress
        if task.mode == "project" and task.answered:  # its plan stays, marked stopped
            self._draw_plan(task.id)
            self._ended(task, was_working)
            return
        self._reply(task, *blocks.cancelled_blocks(task))
        log.info("task %s: cancelled by %s", task.id, task.cancelled_by)
        self._ended(task, was_working)

    def _ended(self, task: TaskView, was_working: bool) -> None:
        self._unsure.discard(_key(task))
        live = self._live.pop(_key(task), None)
        if live is not None and live.left_processing:
            self._working.discard(task.id)  # the stream's stop moved its session to active
        else:
            self._leave_processing(task, was_working)
        self._show_status(task)

    # -- the answer --------------------------------------------------------------------------

    def _show_answer(
        self, task: TaskView, result: ResultMessage, receipt: str, buttons: list[dict] | None
    ) -> None:
        first = result.first  # this report is the answer's only one: see _post_new
        answer = blocks.answer_text(result.text, result.stop_reason)
        filename = f"aico-{task.id}.md" if len(to_mrkdwn(answer)) > INLINE_LIMIT else ""
        live = self._live_of(task)
        if live is not None and live.answered:
            pass  # shown by an earlier try of this report
        elif live is not None and live.mode == STREAM and self._stop(task, live, result, receipt):
            pass
        elif filename:
            shown = blocks.attached_answer_blocks(answer, receipt, filename, buttons)
            self._reply(task, *_with_feedback(task, shown), final=True, answer=True, first=first)
        else:
            shown = blocks.answer_blocks(answer, receipt, buttons)
            self._reply(task, *_with_feedback(task, shown), final=True, answer=True, first=first)
        if filename:
            self._attach(task, answer, filename, f"The whole answer to task `{task.id}`.")

    def _stop(self, task: TaskView, live: _Live, result: ResultMessage, receipt: str) -> bool:
        """End the answer's stream with its rest, the blocks under it and its metadata; False
        when that failed and the answer is to be shown the other way."""
        answer = blocks.answer_text(result.text, result.stop_reason)
        filename = f"aico-{task.id}.md" if len(to_mrkdwn(answer)) > INLINE_LIMIT else ""
        tail = blocks.streamed_answer_blocks(
            receipt, _buttons(task, result), result.stop_reason, filename, len(result.text)
        )
        rest = escape(result.text)[live.sent : STREAM_CAP]
        try:
            self.notifier.stop_stream(
                task.channel, live.ts, rest, _feedback(task, tail), _meta(task)
            )
        except SlackError as exc:
            log.info("task %s: its stream did not stop with the answer: %s", task.id, exc)
            live.mode = PLAIN if exc.code == NOT_STREAMING else OPEN
            live.stuck = exc.code == RATE_LIMITED
            return False
        live.mode, live.answered = PLAIN, True
        live.left_processing = self.sessions.on()  # a stop sets the session active
        return True

    # -- streams -----------------------------------------------------------------------------

    def _start(self, task: TaskView, text: str) -> None:
        """Begin the task's stream with `text`. Its intent is recorded first, with the stream's
        first characters, to find the stream again if the answer to the start is lost."""
        shown = escape(text)[:STREAM_CAP]
        head = shown[:HEAD]
        intent = {"stream": True, "head": head, "chars": len(shown)}
        key = f"{task.key('reply-pending')}:{zlib.crc32(head.encode()):08x}"
        task = self._record(task, events.REPLY_PENDING, intent, key)
        try:
            ts = self.notifier.start_stream(task.channel, task.thread_ts, shown, task.user)
        except SlackError as exc:
            if exc.transient and exc.code != RATE_LIMITED:
                raise  # it may have happened: looked for by its start when tried again
            if not exc.transient and exc.code in FEATURE_ERRORS:
                self.streams.refused(exc)
            log.info("task %s: not streamed (%s): posted instead", task.id, exc.code)
            self._post_new(task, *blocks.progress_blocks(task.id, text))
            return
        self._live[_key(task)] = _Live(ts, STREAM, len(shown), self.clock(), streamed=True)
        self._record(task, events.REPLIED, {"ts": ts, "stream": True}, task.key("replied"))

    def _append(self, task: TaskView, live: _Live, text: str) -> None:
        shown = escape(text)[:STREAM_CAP]
        delta = shown[live.sent :]
        now = self.clock()
        if not delta or now - live.at < APPEND_EVERY or not self._appends.take():
            return  # not owed: the next report (or the stop) carries this text too
        try:
            self.notifier.append_stream(task.channel, live.ts, delta)
        except SlackError as exc:
            if exc.code == RATE_LIMITED:
                return
            log.info("task %s: its stream rolls over to updates: %s", task.id, exc.code)
            live.mode = PLAIN if exc.code == NOT_STREAMING else OPEN
            if self._glimpses.take():
                self._reply(task, *blocks.progress_blocks(task.id, text), ongoing=True)
            return
        live.sent, live.at = len(shown), now

    def _settle(self, task: TaskView, live: _Live, ongoing: bool) -> str:
        """Make the task's message one that chat.update may change: a stream that may be open
        is stopped (one that cannot be stopped now is deleted). Its ts, or "" once deleted."""
        if live.mode == PLAIN:
            return live.ts
        if not live.stuck:
            status = "processing" if ongoing and self.sessions.on() else ""
            try:
                self.notifier.stop_stream(task.channel, live.ts, session_status=status)
                live.mode = PLAIN
                return live.ts
            except SlackError as exc:
                if exc.code in (NOT_STREAMING, GONE):
                    live.mode = PLAIN
                    return live.ts if exc.code == NOT_STREAMING else ""
                log.warning("task %s: its stream could not be stopped: %s", task.id, exc.code)
        self._delete(task, live.ts)
        self._live.pop(_key(task), None)
        return ""

    def _delete(self, task: TaskView, ts: str) -> None:
        try:
            self.notifier.delete(task.channel, ts)
        except SlackError as exc:
            if exc.code != GONE:
                raise

    # -- the one result message --------------------------------------------------------------

    def _reply(
        self,
        task: TaskView,
        text: str,
        body: blocks.Blocks,
        ongoing=False,
        final=False,
        answer=False,
        first=False,
    ) -> TaskView:
        """Show `text` as the task's one result message: post it once, update it after. An
        `answer` posted anew has its ts recorded with the task's completion, not alone; the
        `first` report of an answer posts it without recording its intent first."""
        live = self._live_of(task)
        ts = self._settle(task, live, ongoing) if live is not None else ""
        if ts and live is not None:
            metadata = _meta(task) if live.streamed else None
            try:
                if metadata:
                    self.notifier.update(task.channel, ts, text, body, metadata)
                else:
                    self.notifier.update(task.channel, ts, text, body)
                live.answered = final
                return task
            except SlackError as exc:
                if exc.code != GONE:
                    raise
                self._live.pop(_key(task), None)
        gone = live is not None  # it had a message, now gone: it may have been posted again
        return self._post_new(
            task, text, body, look_first=gone, final=final, answer=answer, first=first
        )

    def _post_new(
        self,
        task: TaskView,
        text: str,
        body: blocks.Blocks,
        look_first=False,
        final=False,
        answer=False,
        first=False,
    ) -> TaskView:
        """Post the task's result message. Its intent is recorded first, so that whoever tries
        again after a crash (or a lost answer) looks for the message before posting it, except
        for the answer of a task's first attempt, reported once (`first`, and not redelivered):
        a crash before its record leaves the report to be delivered again, and that delivery,
        or any other report of the answer, looks for the message first."""
        which = _key(task)
        blind = answer and first and which not in self._unsure  # no one can have posted it yet
        look = look_first or (answer and not blind and not task.reply_pending)
        found = self._find_reply(task) if look else ""
        if found:
            self.notifier.update(task.channel, found, text, body)
            ts = found
        elif blind:
            self._unsure.add(which)  # until the post answers: it may happen without a word back
            ts = self.notifier.post(task.channel, text, body, task.thread_ts, _meta(task))
            self._unsure.discard(which)
        else:
            if not task.reply_pending:
                task = self._record(task, events.REPLY_PENDING, {}, task.key("reply-pending"))
            ts = self.notifier.post(task.channel, text, body, task.thread_ts, _meta(task))
        self._live[which] = _Live(ts, PLAIN, answered=final, unrecorded=answer)
        if answer:  # recorded with the completion that follows at once (its intent is recorded)
            return task
        key = task.key("replied") if not task.reply_ts else f"{task.key('replied')}:{ts}"
        return self._record(task, events.REPLIED, {"ts": ts}, key)

    def _live_of(self, task: TaskView) -> _Live | None:
        """The task's message as this worker knows it, else as the store and Slack say: the
        recorded one, or the one a recorded intent may have left (found by its metadata, or a
        stream by its start)."""
        live = self._live.get(_key(task))
        if live is not None:
            return live
        if task.reply_ts:
            streamed = self._was_streamed(task)
            live = _Live(task.reply_ts, OPEN if streamed else PLAIN, streamed=streamed)
        elif task.reply_pending:
            live = self._recover(task)
        if live is not None:
            self._live[_key(task)] = live
        return live

    def _recover(self, task: TaskView) -> _Live | None:
        ts = self._find_reply(task)
        if ts:
            self._record(task, events.REPLIED, {"ts": ts}, task.key("replied"))
            return _Live(ts, PLAIN)
        for head, chars in self._stream_intents(task):
            ts = self.notifier.find_stream(task.channel, task.thread_ts, head)
            if ts:
                log.info("task %s: found its stream, whose start was not recorded", task.id)
                data = {"ts": ts, "stream": True}
                self._record(task, events.REPLIED, data, task.key("replied"))
                return _Live(ts, STREAM, chars, self.clock(), streamed=True)
        return None

    def _find_reply(self, task: TaskView) -> str:
        ts = self.notifier.find_message(
            task.channel, REPLY_EVENT, task.id, task.thread_ts, task.generation
        )
        log.info("task %s: an earlier post of its result %s", task.id, "found" if ts else "absent")
        return ts

    def _history(self, task: TaskView) -> list[events.Event]:
        """This generation's events of the task (a retry of the whole task starts anew)."""
        history = self.store.events(task.id)
        retried = [i for i, e in enumerate(history) if e.type == events.RETRIED]
        return history[retried[-1] + 1 :] if retried else history

    def _was_streamed(self, task: TaskView) -> bool:
        return any(
            e.type == events.REPLIED and e.data.get("ts") == task.reply_ts and e.data.get("stream")
            for e in self._history(task)
        )

    def _stream_intents(self, task: TaskView) -> list[tuple[str, int]]:
        return [
            (str(e.data["head"]), int(e.data.get("chars", 0)))
            for e in self._history(task)
            if e.type == events.REPLY_PENDING and e.data.get("head")
        ]

    def _record(self, task: TaskView, type_: str, data: dict, event_id: str) -> TaskView:
        view = self.store.append(task.id, type_, data, event_id) or self.store.task(task.id) or task
        if task.thread_ts and not view.thread_ts:  # its thread, from the report, not recorded yet
            view = replace(view, thread_ts=task.thread_ts)
        return view

    # -- files -------------------------------------------------------------------------------

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

    # -- "working on it": the agent session, or the status line ------------------------------

    def _start_processing(self, task: TaskView) -> None:
        self._working.add(task.id)
        if self.sessions.on():
            title = preview(task.prompt, TITLE_CHARS)
            if self._session(task, "processing", title):
                return
        self.notifier.set_status(task.channel, task.thread_ts, WORKING)

    def _leave_processing(self, task: TaskView, was_working: bool) -> None:
        if not (task.id in self._working or was_working):
            return  # it never said "working"
        self._working.discard(task.id)
        if self.sessions.on() and self._session(task, "active"):
            return
        self.notifier.set_status(task.channel, task.thread_ts, "")

    def _session(self, task: TaskView, status: str, title: str = "") -> bool:
        """Set the thread's agent session; False when the workspace refused sessions for good
        (the status line is used instead). A passing failure is logged: it is progress only."""
        try:
            self.notifier.set_session(task.channel, task.thread_ts, status, title)
        except SlackError as exc:
            if exc.transient:
                log.info("task %s: session not set to %s: %s", task.id, status, exc.code)
                return True
            self.sessions.refused(exc)
            return False
        return True

    def _show_status(self, task: TaskView) -> None:
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


def _completed(result: ResultMessage, cost: float | None) -> dict[str, Any]:
    """The `completed` event of a reported answer: its model, tokens, time, cost, length."""
    return {
        "model": result.model,
        "usage": result.usage,
        "claude_ms": result.claude_ms,
        "cost_usd": cost,
        "chars": len(result.text),
        "started_at": result.started_at,
        "stop_reason": result.stop_reason,
    }


def _key(task: TaskView) -> tuple[str, int]:
    return task.id, task.generation


def _meta(task: TaskView) -> dict[str, Any]:
    """The result message's metadata: its task and the task's generation (a retry of the whole
    task posts a message of its own, and a crash is never taken for the earlier one's)."""
    payload = {"task_id": task.id, "generation": task.generation} if task.generation else {}
    return {"event_type": REPLY_EVENT, "event_payload": payload or {"task_id": task.id}}


def _speaks(notifier: object, method: str) -> bool:
    return callable(getattr(notifier, method, None))


def _feedback(task: TaskView, body: blocks.Blocks) -> blocks.Blocks:
    """Slack's feedback buttons under an answer."""
    return [*body, blocks.feedback_block(task.id)]


def _with_feedback(task: TaskView, shown: tuple[str, blocks.Blocks]) -> tuple[str, blocks.Blocks]:
    text, body = shown
    return text, _feedback(task, body)


def _buttons(task: TaskView, result: ResultMessage) -> list[dict] | None:
    """Approve / Reject under a proposed change; "Make the change" under an answer that drew
    on a repository, where code changes can be made; "Plan it" (as a project) under answers."""
    if result.change.get("branch"):
        return blocks.change_buttons(task.id)
    if task.project:  # a project's answer: its plan has the project's buttons
        return None
    plan_it = [plan_it_button(task.id)] if task.mode != "project" else []
    if result.change.get("offer"):
        return blocks.make_change_button(task.id) + plan_it
    return plan_it or None
