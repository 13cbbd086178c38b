"""A task worker's logic: ask Claude once per attempt, record the answer, report it.

Before Claude is asked, the event store is checked and the attempt claimed there: a task that is
already finished or answered is not asked again, and two copies of one delivery (a publish
repeated after a lost confirm) cannot both ask. The answer is recorded before it is reported, so
a worker that dies after Claude answered costs no second call: the next delivery reports the
recorded answer.

Retry budget, per task: the anthropic SDK tries a call up to 3 times (2 retries with backoff);
each task is delivered at most DELIVERY_LIMIT + 1 times; so at most 3 x 6 = 18 requests reach
Claude for one task. A transient failure (by Claude's error type: overloaded, rate limited, an
API error, a timeout, a stream broken off) gives the delivery back, after a `retrying` report that
takes back what the attempt had shown; a request Claude refuses, an unreadable message, and the
last attempt's failure are reported in the thread and dead-lettered at once.

While Claude's circuit breaker is open, deliveries wait here for a permit (the worker stops
consuming meanwhile, so the rest wait in the queue) instead of burning attempts.

Files attached in Slack are downloaded by each attempt (their content is never stored) and go
to Claude as content blocks before the prompt: images and PDFs as such, text files quoted in the
prompt's text. One that cannot be downloaded or read is left out (logged with the task, the file
and the reason, and Claude is told it could not be read): the answer still comes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from core.domain import events
from core.domain.attachments import (
    DEFAULT_MAX_FILE_BYTES,
    Attachment,
    Downloaded,
    Unreadable,
    limit_for,
    message_content,
)
from core.domain.breaker import CircuitBreaker
from core.domain.citations import Source, context_prompt, link_citations
from core.domain.edits import EditRefused
from core.domain.events import TaskView
from core.domain.messages import DELIVERY_LIMIT, RESULTS, ResultMessage, TaskMessage, salvage_route
from core.domain.plan import FINAL, Plan
from core.errors import (
    AicoError,
    Conflict,
    DecodeError,
    InvalidInput,
    ModelError,
    Reject,
    TryLater,
    Withheld,
)
from core.ports import Delivery, EventStore, Model
from core.usecases.repos import RepoContext
from core.usecases.writeback import CodeChanges, answer_text
from workers.runtime import Publish
from workers.task.projects import PlannedAnswer, ProjectWork

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"

# "Working on it" is shown only for tasks that take longer than this: a task answered sooner goes
# from Queued to Done without a status flip nobody could read.
PROGRESS_AFTER = 0.5
PROGRESS_EVERY = 1.0  # seconds between two reports of the answer being written (the result
# worker streams them, or shows a glimpse at chat.update's pace)
# The longest a delivery waits for the breaker before it is given back. With 3 requests of at most
# AICO_CLAUDE_TIMEOUT (<= 300 s) each, a delivery stays unacked well below the broker's
# consumer_timeout (30 min), past which the broker would take it back.
HOLD_LIMIT = 10 * 60.0
MAX_TURNS = 20  # earlier turns of a conversation sent with a new one
# The longest a turn waits for the turns before it that are still being answered. A plain
# task's answer is shown while the task worker records it: a reply sent as it showed can come
# before the record (and a reply to a turn still streaming gets it if it ends meanwhile).
TURN_WAIT = 2.0
TURN_POLL = 0.01
_RESULT_FIELDS = frozenset(ResultMessage.__dataclass_fields__)


class FileSource(Protocol):
    """Where attached files are downloaded from (core/adapters/slack_files.py): their bytes,
    at most `max_bytes`, or Unreadable with the reason."""

    def download(self, attachment: Attachment, max_bytes: int) -> bytes: ...


NO_DOWNLOADS = "this worker has no Slack bot token to download files with (SLACK_BOT_TOKEN)"


class Stopped(Exception):
    """The task was cancelled while Claude was writing its answer."""


class _Progress:
    """Gets Claude's text as it grows: shows it in the thread now and then (after PROGRESS_AFTER,
    every PROGRESS_EVERY at most), and at the same pace stops a task cancelled meanwhile."""

    def __init__(
        self, store: EventStore, task: TaskMessage, publish: Publish, attempt: int
    ) -> None:
        self.store, self.task, self.publish, self.attempt = store, task, publish, attempt
        self.started = time.monotonic()
        self.last = float("-inf")  # the first glimpse goes PROGRESS_AFTER after the start

    def __call__(self, pieces: list[str]) -> None:
        now = time.monotonic()
        if now - self.started < PROGRESS_AFTER or now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        view = self.store.task(self.task.task_id)
        if view is not None and view.status.final:
            raise Stopped(view.status.value)
        _report(self.publish, self.task, "progress", text="".join(pieces), attempt=self.attempt)


@dataclass(frozen=True)
class _CodeAnswer:
    """Claude's proposed edits (the tool's input), as an answer: its summary is its text."""

    text: str
    model: str
    usage: dict
    ms: float
    stop_reason: str
    edits: dict


class TaskHandler:
    def __init__(
        self,
        store: EventStore,
        model: Model,
        breaker: CircuitBreaker,
        stopping: threading.Event | None = None,
        hold_limit: float = HOLD_LIMIT,
        context: RepoContext | None = None,
        code: CodeChanges | None = None,
        files: FileSource | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        projects: ProjectWork | None = None,
        slots: int = 0,
    ) -> None:
        """`slots`: Claude calls at once (0: as many as the runtime's threads). The handler then
        runs on more threads than that: the next task is read while the slots are busy, and a
        task's answer is recorded and reported after its slot is free."""
        self.store = store
        self.model = model
        self.breaker = breaker
        self.stopping = stopping or threading.Event()
        self.hold_limit = hold_limit
        self.context = context  # the repositories' indexes, for the prompt's context
        self.code = code  # code write-back, for `--code` tasks
        self.files = files  # None: attached files cannot be downloaded here (no bot token)
        self.max_file_bytes = max_file_bytes  # AICO_MAX_FILE_MB
        self.projects = projects  # planning projects, and their steps' prompts
        self._slots = threading.BoundedSemaphore(slots) if slots else None
        # The attempts' claims, recorded while their requests are made (one per slot at most)
        self._claims = ThreadPoolExecutor(slots or 8, thread_name_prefix="claim")
        self.busy = 0  # Claude calls in flight, for the heartbeat
        self._busy_lock = threading.Lock()

    def __call__(self, delivery: Delivery, publish: Publish) -> None:
        task = _decode(delivery.body, publish)
        view = self.store.task(task.task_id)
        if view is None:
            raise Reject(
                f"task {task.task_id} is not in the event store: do all processes share "
                "AICO_DATA_DIR (or AICO_DB_URL)?"
            )
        if view.status.final:
            log.info("task %s: already %s; this copy is dropped", task.task_id, view.status)
        elif task.generation < view.generation:
            log.info("task %s: this copy was superseded when it was queued again", task.task_id)
        elif view.answered:
            log.info("task %s: answered before; reporting the recorded answer", task.task_id)
            recorded = self._recorded_answer(task.task_id)
            if task.mode == "code":
                self._propose(task, publish, recorded)
            elif task.mode == "project":
                self._planned(view, task, publish, recorded)
            else:
                _report(publish, task, "completed", **recorded)
                self._step_answered(view)
        else:
            self._attempt(task, delivery, publish, self._history(view), view)

    def _history(self, view: TaskView) -> list[tuple[str, str]]:
        """The earlier turns of the task's conversation, answered ones, oldest first (once
        those still being answered are, TURN_WAIT at most)."""
        if not view.conversation:
            return []
        deadline = time.monotonic() + TURN_WAIT
        while True:
            earlier = [
                t
                for t in self.store.thread(view.channel, view.thread_ts)
                if t.created_at < view.created_at and t.step in ("", FINAL)
            ]
            pending = any(not t.answered and not t.status.final for t in earlier)
            if not pending or time.monotonic() >= deadline or self.stopping.wait(TURN_POLL):
                break
        answered = [t for t in earlier if t.answered][-MAX_TURNS:]
        return [(t.prompt, self._recorded_answer(t.id)["text"]) for t in answered]

    def _attempt(
        self,
        task: TaskMessage,
        delivery: Delivery,
        publish: Publish,
        history: list[tuple[str, str]],
        view: TaskView,
    ) -> None:
        if not self.breaker.acquire(timeout=self.hold_limit, cancel=self.stopping):
            raise TryLater(f"task {task.task_id}: Claude's circuit breaker is still open")
        if not self._enter_slot(task):
            self.breaker.release()
            return
        asked = None
        try:  # claimed in its slot (a task waiting for one is still queued, not started)...
            claim = self._claims.submit(self._claim, task, delivery)
            asked = self._consult(task, delivery, publish, history, view, claim)
        finally:  # ...which is free for the next task before this one's answer is recorded
            if self._slots is not None:
                self._slots.release()
        if asked is None:
            return
        answer, excerpts, started_at, attempt = asked
        # The first delivery of this generation's message made the first claim (of the task's,
        # for its first generation; a copy queued again finds that claim taken): no report of
        # an answer to this generation can have come before.
        first = delivery.delivery_count == 0 and (attempt == 1 or task.generation > 0)
        sources = [source for source, _ in excerpts]
        fields = {
            "text": self._linked(answer.text, sources),
            "model": answer.model,
            "usage": answer.usage,
            "claude_ms": answer.ms,
            "started_at": started_at,
            "stop_reason": answer.stop_reason,
            "sources": [source.record() for source in sources],
            **({"edits": answer.edits} if task.mode == "code" else {}),
            **({"change": {"offer": True}} if self._offers_change(task, sources) else {}),
            **({"plan": answer.plan.record()} if isinstance(answer, PlannedAnswer) else {}),
        }
        key = f"{task.task_id}:answered:{task.generation}"
        if not task.mode and not view.project:
            # Reported while it is recorded: the delivery is acked only once both are done (and
            # a report of a task that ended meanwhile is ignored by the result worker).
            _report(publish, task, "completed", first=first, **fields)
            self.store.append(task.task_id, events.ANSWERED, fields, key)
            return
        recorded = self.store.append(task.task_id, events.ANSWERED, fields, key)
        if recorded is not None and recorded.status.final:
            log.info(
                "task %s: %s while Claude worked; answer dropped", task.task_id, recorded.status
            )
            return
        if task.mode == "code":
            self._propose(task, publish, fields)
        elif task.mode == "project":
            self._planned(recorded or view, task, publish, fields)
        else:
            _report(publish, task, "completed", first=first, **fields)
            self._step_answered(recorded or view)

    def _consult(
        self,
        task: TaskMessage,
        delivery: Delivery,
        publish: Publish,
        history: list[tuple[str, str]],
        view: TaskView,
        claim: Future[int],
    ) -> tuple[Any, list[tuple[Source, str]], float, int] | None:
        """Claude asked, in a slot, once the attempt is claimed (`claim`: its number, 0 when it
        was not, as _claim records it meanwhile): the answer, the context it was given, when it
        started and the attempt's number; None when the attempt ended otherwise (not claimed,
        failed, stopped: reported). A plain task's prompt and request are made while its claim
        is being recorded, and the request leaves once it is."""
        started_at = time.time()
        progress = _Progress(self.store, task, publish, 0)
        shown: list[Future[None]] = []  # the "started" report, once the attempt is claimed

        def ready() -> bool:
            try:
                attempt = claim.result()
            except Exception:
                return False  # not claimed: the failure goes up below, as it is
            if attempt and not shown:
                progress.attempt = attempt
                started = _report(publish, task, "started", delay=PROGRESS_AFTER, attempt=attempt)
                shown.append(started)
            return attempt > 0

        def cancel_started() -> None:
            for report in shown:
                report.cancel()

        try:
            if (task.mode or view.project) and not ready():  # claimed before anything is done
                raise Withheld(f"task {task.task_id}: its attempt was not claimed")
            excerpts = self._excerpts(task)
            own = self._step_prompt(view) if view.project else task.prompt
            prompt = self._with_files(task, context_prompt(own, excerpts))
            if task.mode == "code":
                answer = self._ask_code(prompt, history)
            elif task.mode == "project":
                answer = self._ask_plan(task.prompt)
            else:
                answer = self._ask(prompt, history, progress, ready)
            if not ready():  # a model that answered without asking whether it may
                raise Withheld(f"task {task.task_id}: its attempt was not claimed")
        except Withheld:
            self.breaker.release()  # Claude was not asked
            claim.result()  # a claim that could not be recorded goes up as it is
            return None
        except ModelError as exc:
            if not ready():  # it failed before it was sent, for an attempt that is not claimed
                self.breaker.release()
                claim.result()
                return None
            cancel_started()
            self._failed(task, delivery, publish, exc, started_at, claim.result())
            return None
        except InvalidInput as exc:  # a plan still invalid after its repair
            self.breaker.release()  # Claude is up: it planned badly
            if not ready():  # (a project is claimed first: this is for any other way here)
                claim.result()
                return None
            cancel_started()
            _report(publish, task, "failed", error=str(exc), started_at=started_at)
            raise Reject(f"task {task.task_id}: {exc}") from exc
        except Stopped as stop:
            self.breaker.release()  # stopped by us: it says nothing about Claude
            cancel_started()
            log.info("task %s: %s while Claude wrote; stopped asking", task.task_id, stop)
            return None
        except BaseException:
            self.breaker.release()  # a bug of ours says nothing about Claude: free the permit
            raise
        self.breaker.record_success()  # a refusal too: Claude is up, it declined this task
        cancel_started()
        return answer, excerpts, started_at, claim.result()

    def _enter_slot(self, task: TaskMessage) -> bool:
        """Take a Claude slot, waiting for one; False for a task that ended while it waited
        (cancelled: it is not asked)."""
        if self._slots is None or self._slots.acquire(blocking=False):
            return True
        self._slots.acquire()
        view = self.store.task(task.task_id)
        if view is not None and view.status.final:
            self._slots.release()
            log.info("task %s: %s while it waited for a slot", task.task_id, view.status)
            return False
        return True

    # -- projects ------------------------------------------------------------------------------

    def _ask_plan(self, goal: str) -> PlannedAnswer:
        if self.projects is None:
            raise ModelError("projects are not run by this worker", transient=False)
        with self._busy_lock:
            self.busy += 1
        started = time.perf_counter()
        try:
            planned = self.projects.plan(goal, getattr(self.model, "model", ""))
        finally:
            with self._busy_lock:
                self.busy -= 1
        return replace(planned, ms=(time.perf_counter() - started) * 1000)

    def _planned(self, view: TaskView, task: TaskMessage, publish: Publish, answered: dict) -> None:
        """The project's plan recorded (again, idempotently, after a crash), its first steps
        queued, and the plan shown in its thread."""
        assert self.projects is not None, "a project's plan was recorded by a project worker"
        self.projects.planned(view, Plan.of(answered["plan"]), answered.get("usage") or {})
        _report(publish, task, "plan", started_at=float(answered.get("started_at", 0.0)))

    def _step_prompt(self, view: TaskView) -> str:
        if self.projects is None:
            raise ModelError("projects are not run by this worker", transient=False)
        return self.projects.prompt_of(view)

    def _step_answered(self, view: TaskView) -> None:
        if view.project and self.projects is not None:
            self.projects.answered(view)

    def _excerpts(self, task: TaskMessage) -> list[tuple[Source, str]]:
        if self.context is None:
            return []
        try:
            return self.context.excerpts(task.prompt, task.repo)
        except Exception as exc:  # no context is better than no answer
            log.warning("task %s: no repository context: %s", task.task_id, exc)
            return []

    def _with_files(self, task: TaskMessage, prompt: str) -> str | list[dict[str, Any]]:
        """The prompt, after the task's files as content blocks (downloaded now: each attempt
        downloads them again); the prompt alone for a task without files."""
        attachments = task.attachments()
        if not attachments:
            return prompt
        downloaded = [self._download(task, attachment) for attachment in attachments]
        content, left_out = message_content(prompt, downloaded)
        for file in left_out:
            log.warning("task %s: file %r left out: %s", task.task_id, file.name, file.reason)
        log.info(
            "task %s: %d of %d file(s) go to Claude",
            task.task_id,
            len(attachments) - len(left_out),
            len(attachments),
        )
        return content

    def _download(self, task: TaskMessage, attachment: Attachment) -> Downloaded:
        if self.files is None:
            return Downloaded(attachment, failure=NO_DOWNLOADS)
        try:
            limit = limit_for(attachment.kind, self.max_file_bytes)
            return Downloaded(attachment, self.files.download(attachment, limit))
        except Unreadable as exc:
            return Downloaded(attachment, failure=str(exc))

    def _offers_change(self, task: TaskMessage, sources: list[Source]) -> bool:
        """Whether the answer gets a "Make the change" button: it drew on one repository, and
        this worker can make code changes."""
        return task.mode != "code" and self.code is not None and len({s.repo for s in sources}) == 1

    def _linked(self, text: str, sources: list[Source]) -> str:
        if self.context is None or not sources:
            return text
        return link_citations(text, sources, self.context.linker(sources))

    def _ask_code(
        self, prompt: str | list[dict[str, Any]], history: list[tuple[str, str]]
    ) -> _CodeAnswer:
        if self.code is None:
            raise ModelError("code changes are not configured here (AICO_REPOS)", transient=False)
        with self._busy_lock:
            self.busy += 1
        try:
            call = self.code.ask(self.model, prompt, history)
        finally:
            with self._busy_lock:
                self.busy -= 1
        summary = str(call.input.get("summary", "")) if isinstance(call.input, dict) else ""
        return _CodeAnswer(summary, call.model, call.usage, call.ms, call.stop_reason, call.input)

    def _propose(self, task: TaskMessage, publish: Publish, answered: dict) -> None:
        """Claude's recorded edits committed on the task's branch (idempotent: a second
        delivery finds the first one's commit), then reported; a refused change fails the task
        with the reason and nothing written."""
        assert self.code is not None, "a code task's answer was recorded by a code worker"
        started_at = float(answered.get("started_at", 0.0))
        try:
            change = self.code.apply(
                task.task_id, task.repo, answered.get("edits", {}), task.user, task.prompt
            )
        except (AicoError, OSError) as exc:
            if not isinstance(exc, EditRefused):  # git failed (no clone yet, a full disk, …)
                error = f"The change could not be committed, and nothing was kept: {exc}"
                _report(publish, task, "failed", error=error, started_at=started_at)
                raise Reject(f"task {task.task_id}: {exc}") from exc
            reason = f"The change was refused and nothing was written: {exc}"
            key = f"{task.task_id}:change-refused:{task.generation}"
            self.store.append(task.task_id, events.CHANGE_REFUSED, {"reason": str(exc)}, key)
            _report(publish, task, "failed", error=reason, started_at=started_at)
            raise Reject(f"task {task.task_id}: {exc}") from exc
        key = f"{task.task_id}:change-proposed:{task.generation}"
        self.store.append(task.task_id, events.CHANGE_PROPOSED, change, key)
        report = {k: v for k, v in answered.items() if k not in ("edits", "text", "change")}
        _report(publish, task, "completed", text=answer_text(change), change=change, **report)

    def _ask(
        self,
        prompt: str | list[dict[str, Any]],
        history: list[tuple[str, str]],
        progress: _Progress,
        ready: Callable[[], bool],
    ):
        with self._busy_lock:
            self.busy += 1
        try:
            return self.model.complete(prompt, history, progress, ready)
        finally:
            with self._busy_lock:
                self.busy -= 1

    def _claim(self, task: TaskMessage, delivery: Delivery) -> int:
        """Record this attempt; its number among the task's attempts (1, 2, …), or 0 when another
        copy of this very delivery has claimed it (or the task ended meanwhile)."""
        attempt = delivery.delivery_count
        key = f"{task.task_id}:start:{task.generation}:{attempt}"
        data = {"worker": WORKER, "delivery": attempt + 1, "generation": task.generation}
        try:
            claimed = self.store.append(task.task_id, events.STARTED, data, key)
        except Conflict:
            log.info("task %s: this copy was superseded when it was queued again", task.task_id)
            return 0
        if claimed is None:
            log.warning("task %s: a copy of delivery %d is already claimed", task.task_id, attempt)
            return 0
        if claimed.status.final:  # cancelled while it waited
            log.info("task %s: %s before it started", task.task_id, claimed.status)
            return 0
        log.info("task %s: asking Claude (delivery %d)", task.task_id, attempt + 1)
        return max(1, claimed.attempts)

    def _failed(
        self,
        task: TaskMessage,
        delivery: Delivery,
        publish: Publish,
        exc: ModelError,
        started_at: float,
        attempt: int,
    ) -> None:
        log.warning("task %s: Claude failed: %s", task.task_id, exc)
        if not exc.transient:
            self.breaker.release()  # Claude is up; it refused this request
            _report(publish, task, "failed", error=str(exc), started_at=started_at)
            raise Reject(f"task {task.task_id}: {exc}") from exc
        self.breaker.record_failure()
        if delivery.delivery_count < DELIVERY_LIMIT:
            # What this attempt showed of its answer is taken back before the next one starts.
            _report(publish, task, "retrying", error=str(exc), attempt=attempt)
            raise TryLater(f"task {task.task_id}: {exc}") from exc
        error = f"{exc} (gave up after {delivery.delivery_count + 1} attempts)"
        _report(publish, task, "failed", error=error, started_at=started_at)
        raise Reject(f"task {task.task_id}: {error}") from exc

    def _recorded_answer(self, task_id: str) -> dict:
        answered = [e for e in self.store.events(task_id) if e.type == events.ANSWERED]
        return dict(answered[-1].data)


def _decode(raw: bytes, publish: Publish) -> TaskMessage:
    try:
        return TaskMessage.decode(raw)
    except DecodeError as exc:
        route = salvage_route(raw)
        if route:
            task_id, channel, thread_ts = route
            where = TaskMessage(task_id, "-", "-", channel, thread_ts, 0.0)
            _report(publish, where, "failed", error=f"the task could not be read: {exc}")
        raise


def _report(
    publish: Publish,
    task: TaskMessage,
    event: str,
    delay: float = 0.0,
    **fields: object,
) -> Future[None]:
    shown = {k: v for k, v in fields.items() if k in _RESULT_FIELDS}  # not sources, edits
    message = ResultMessage(
        task_id=task.task_id,
        event=event,
        channel=task.channel,
        thread_ts=task.thread_ts,
        at=time.time(),
        worker=WORKER,
        **shown,  # type: ignore[arg-type]
    )
    return publish(RESULTS, message, f"{task.task_id}:{event}", delay=delay)
