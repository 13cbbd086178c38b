"""Plain Python stand-ins for what the bot's listeners talk to, and a world of real core objects
(the SQLite event store in a temporary folder, the real Intake, TaskControl, Conversations,
Status and Budgets) wired the way bot/main.py wires them.

Only the edges are stand-ins: Bolt's `ack` / `respond` callables, Slack (our Notifier port and
the `tell` callable) and RabbitMQ (our Publisher port). Each records what it was asked. The
services the listeners call are the real ones behind a `Spy` that notes each call in one ordered
log, shared with `ack` and `respond`, so a test can say what happened before what."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot import listeners
from bot.usecases import UseCases
from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.events import TaskView
from core.usecases.budgets import Budgets
from core.usecases.control import TaskControl
from core.usecases.conversations import Conversations
from core.usecases.intake import Intake
from core.usecases.operations import RecoverRequests
from core.usecases.relay import OutboxRelay
from core.usecases.scaling import PoolAdmin
from core.usecases.status import Status

OWNER, STRANGER, ADMIN = "U0OWNER", "U0STRANGER", "U0ADMIN"
CHANNEL, OTHER_CHANNEL = "C0GENERAL", "C0RANDOM"
BOT_USER = "U0AICOBOT"
TASKS_QUEUE, RESULTS_QUEUE = "aico.tasks", "aico.results"
MAX_CHARS = 1_000
USER_DAILY, CHANNEL_DAILY = 5.0, 50.0
WAIT = 10.0  # seconds: the longest a test waits for a background step (never reached when green)

_ids = itertools.count(1)


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Log:
    """Every call the listener made, in order, across ack, respond and the services."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def add(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append(Call(name, args, dict(kwargs)))

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def clear(self) -> None:
        self.calls.clear()


class Answer:
    """Bolt's `ack` or `respond`: a callable that records what the user would be shown.
    `probe`, if given, is called at the moment of the call: what was true then."""

    def __init__(self, name: str, log: Log, probe: Callable[[], Any] | None = None) -> None:
        self.name, self.log, self.probe = name, log, probe
        self.calls: list[Call] = []  # this one's; the log has everyone's
        self.seen: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if args:  # ack("text") is ack(text="text")
            kwargs = {"text": args[0], **kwargs}
        self.log.add(self.name, (), kwargs)
        self.calls.append(Call(self.name, (), dict(kwargs)))
        if self.probe is not None:
            self.seen.append(self.probe())

    def only(self) -> dict[str, Any]:
        """What the one call carried (the test fails if there was not exactly one)."""
        calls = self.calls
        assert len(calls) == 1, f"{self.name} called {len(calls)} times: {calls}"
        return calls[0].kwargs


class Spy:
    """The real service, with each method call noted in the log as `<name>.<method>`."""

    def __init__(self, name: str, real: Any, log: Log) -> None:
        self._name, self._real, self._log = name, real, log

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._real, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self._log.add(f"{self._name}.{attr}", args, kwargs)
            return value(*args, **kwargs)

        return call


class Recorder:
    """Base of the port stand-ins: a list of (method, args) and a way to wait for one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = threading.Condition()

    def _record(self, method: str, *args: Any) -> None:
        with self._changed:
            self.calls.append((method, args))
            self._changed.notify_all()

    def of(self, method: str) -> list[tuple[Any, ...]]:
        with self._changed:
            return [args for name, args in self.calls if name == method]

    def wait_for(self, method: str, count: int = 1) -> list[tuple[Any, ...]]:
        with self._changed:
            done = self._changed.wait_for(lambda: len(self.of(method)) >= count, WAIT)
        assert done, f"{method} was called {len(self.of(method))} times, not {count}"
        return self.of(method)


class SlackPort(Recorder):
    """The Notifier port (what Intake posts and updates). `hold()` makes posts wait until
    `release()`, to show what the user was told before Slack was reached."""

    def __init__(self) -> None:
        super().__init__()
        self._ts = itertools.count(1)
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def post(self, channel, text, blocks, thread_ts=None, metadata=None) -> str:
        self._record("post_started", channel)
        assert self._open.wait(WAIT), "a held post was never released"
        ts = f"1700000000.{next(self._ts):06d}"
        self._record("post", channel, text, blocks, thread_ts, metadata, ts)
        return ts

    def find_message(self, channel, event_type, key, thread_ts="", generation=None) -> str:
        self._record("find_message", channel, event_type, key)
        return ""

    def has_file(self, channel, thread_ts, filename) -> bool:
        return False

    def update(self, channel, ts, text, blocks) -> None:
        self._record("update", channel, ts, text, blocks)

    def set_status(self, channel, thread_ts, status) -> None:
        self._record("set_status", channel, thread_ts, status)

    def upload(self, channel, thread_ts, content, filename, comment) -> None:
        self._record("upload", channel, thread_ts, filename)

    def respond(self, response_url, text) -> None:
        self._record("respond", response_url, text)

    def tell(self, channel: str, user: str, text: str, thread_ts: str) -> None:
        """UseCases.tell: an ephemeral message to one user (in a thread)."""
        self._record("tell", channel, user, text, thread_ts)


class BrokerPort(Recorder):
    """The Publisher port: every publish is confirmed at once."""

    def publish(self, queue: str, body: bytes, message_id: str) -> Future[None]:
        self._record("publish", queue, body, message_id)
        confirmed: Future[None] = Future()
        confirmed.set_result(None)
        return confirmed

    def published_to(self, queue: str) -> list[str]:
        """The message ids published to `queue`."""
        return [message_id for q, _, message_id in self.of("publish") if q == queue]


class App:
    """What `bot.listeners.register(app, services)` needs of a Bolt App: the decorators. It
    keeps the listeners so a test can call them as Bolt would (keyword arguments)."""

    def __init__(self) -> None:
        self.commands: dict[str, Callable[..., Any]] = {}
        self.actions: dict[str, Callable[..., Any]] = {}
        self.events: dict[str, Callable[..., Any]] = {}

    def _keep(self, table: dict[str, Callable[..., Any]], key: str):
        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            assert key not in table, f"{key} registered twice"
            table[key] = fn
            return fn

        return decorator

    def command(self, name: str):
        return self._keep(self.commands, name)

    def action(self, action_id: str):
        return self._keep(self.actions, action_id)

    def event(self, event_type: str):
        return self._keep(self.events, event_type)


def depth_of(queue: str) -> tuple[int, int]:
    """What the broker says of a queue: (messages ready, consumers)."""
    return {TASKS_QUEUE: (3, 2), RESULTS_QUEUE: (0, 1)}.get(queue, (0, 0))


@dataclass
class World:
    store: SqliteEventStore
    slack: SlackPort
    broker: BrokerPort
    intake: Intake
    budgets: Budgets
    services: UseCases
    log: Log
    app: App = field(default_factory=App)

    def close(self) -> None:
        self.slack.release()
        self.intake.relay.close()
        self.store.close()

    def with_services(self, **changes: Any) -> App:
        """Listeners registered on other services (say, budgets=None)."""
        app = App()
        listeners.register(app, replace(self.services, **changes))
        return app

    # ---------------------------------------------------------------- tasks as the store has them

    def task(
        self,
        user: str = OWNER,
        channel: str = CHANNEL,
        prompt: str = "write the release notes",
        *,
        until: str = events.QUEUED,
        cost: float = 0.0,
    ) -> TaskView:
        """A task recorded the way the bot and the workers record it, up to the event `until`
        (queued, failed, completed or cancelled); it has its parent message (a thread)."""
        task_id = f"t{next(_ids):09d}"
        submitted = {"user": user, "channel": channel, "prompt": prompt, "response_url": ""}
        self.store.append(task_id, events.SUBMITTED, submitted, f"{task_id}:submitted")
        thread_ts = f"1699999999.{next(_ids):06d}"
        self.store.append(task_id, events.POSTED, {"thread_ts": thread_ts}, f"{task_id}:posted")
        view = self.store.append(task_id, events.QUEUED, {}, f"{task_id}:queued:0")
        if until != events.QUEUED:
            started = {"worker": "host-1", "delivery": 1, "generation": 0}
            self.store.append(task_id, events.STARTED, started, f"{task_id}:start:0:0")
            data: dict[str, Any] = {"by": user}
            if until == events.FAILED:
                data = {"error": "Claude is overloaded"}
            elif until == events.COMPLETED:
                usage = {"input_tokens": 1_000, "output_tokens": 2_000}
                data = {"model": "claude-x", "usage": usage, "cost_usd": cost}
            view = self.store.append(task_id, until, data, f"{task_id}:{until}:0")
        assert view is not None
        return view


def make_world(
    tmp_path: Path,
    *,
    admins: frozenset[str] = frozenset({ADMIN}),
    open_to_channel: bool = False,
) -> World:
    log = Log()
    store = SqliteEventStore(tmp_path / "aico.db")
    slack, broker = SlackPort(), BrokerPort()
    budgets = Budgets(store, USER_DAILY, CHANNEL_DAILY)
    relay = OutboxRelay(store, slack, broker, TASKS_QUEUE, threads=2)
    intake = Intake(store, relay, MAX_CHARS, budgets=budgets)
    status = Status(store, depth_of, (TASKS_QUEUE, RESULTS_QUEUE))
    control = TaskControl(store, intake, broker, RESULTS_QUEUE, admins)
    conversations = Conversations(store, intake, open_to_channel)
    services = UseCases(
        intake=Spy("intake", intake, log),
        status=Spy("status", status, log),
        tasks=Spy("tasks", store, log),
        control=Spy("control", control, log),
        max_chars=MAX_CHARS,
        budgets=Spy("budgets", budgets, log),
        admins=admins,
        conversations=Spy("conversations", conversations, log),
        tell=slack.tell,
        pool=Spy("pool", PoolAdmin(store), log),
        recover=Spy("recover", RecoverRequests(store), log),
    )
    world = World(store, slack, broker, intake, budgets, services, log)
    listeners.register(world.app, services)
    return world
