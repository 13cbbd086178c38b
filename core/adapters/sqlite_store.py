"""The event store on SQLite: append-only events, and the projections derived from them (tasks,
statistics) written in the same transaction.

Writes go through one writer thread per process that commits whatever appends are waiting in a
single `BEGIN IMMEDIATE` transaction (group commit): one fsync for many events, and no two
threads of a process fighting over SQLite's write lock, whose busy handler sleeps in steps of up
to 100 ms. Each append still succeeds or fails on its own (a savepoint each). Reads use one
connection per thread and never wait for writers (WAL).

The schema carries a version; migrations run at start, in one transaction, and a migration that
adds a projection rebuilds it from the events.
"""

from __future__ import annotations

import json
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.domain.budget import AGGREGATE as BUDGET_AGGREGATE
from core.domain.events import Event, TaskView, apply
from core.domain.stats import SLOT, Count, Spender, Summary, count_for, day_of, slot_of
from core.domain.task import TaskStatus
from core.errors import Conflict

MAX_BATCH = 256
_V1 = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL,
    UNIQUE (aggregate_id, version)
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    user TEXT NOT NULL,
    channel TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, created_at);
"""
_V2 = """
CREATE INDEX tasks_by_user ON tasks (user, created_at);
CREATE INDEX tasks_by_channel ON tasks (channel, created_at);
CREATE INDEX tasks_by_created ON tasks (created_at);
CREATE TABLE stats (
    slot INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    user TEXT NOT NULL,
    channel TEXT NOT NULL,
    tasks INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost REAL NOT NULL,
    PRIMARY KEY (slot, outcome, bucket, user, channel)
);
CREATE INDEX stats_by_user ON stats (user, slot);
CREATE INDEX stats_by_channel ON stats (channel, slot);
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    seen_at REAL NOT NULL
);
"""
_V3 = """
CREATE TABLE budgets (
    scope TEXT NOT NULL,
    who TEXT NOT NULL,
    day TEXT NOT NULL,
    usd REAL NOT NULL,
    PRIMARY KEY (scope, who, day)
);
"""
# Everyone's counters, without the user and channel: what /aico status reads (a day of them is
# at most 288 slots x the buckets used, however many users and channels there are).
_V4 = """
CREATE TABLE stats_all (
    slot INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    tasks INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost REAL NOT NULL,
    PRIMARY KEY (slot, outcome, bucket)
) WITHOUT ROWID;
"""
# A conversation is the tasks of one thread: found by the thread a reply comes in.
_V5 = """
CREATE INDEX tasks_by_thread ON tasks (channel, json_extract(state, '$.thread_ts'), created_at);
"""
# Each user's and channel's day (tasks, cost): the top spenders in /aico status.
_V6 = """
CREATE TABLE spend (
    day TEXT NOT NULL,
    scope TEXT NOT NULL,
    who TEXT NOT NULL,
    tasks INTEGER NOT NULL,
    cost REAL NOT NULL,
    PRIMARY KEY (day, scope, who)
) WITHOUT ROWID;
"""
# (version, statements, rebuild the projections afterwards)
MIGRATIONS: list[tuple[int, str, bool]] = [
    (1, _V1, False),
    (2, _V2, True),
    (3, _V3, False),
    (4, _V4, True),
    (5, _V5, False),
    (6, _V6, True),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


_ADD_SPEND = (
    "INSERT INTO spend (day, scope, who, tasks, cost) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (day, scope, who) DO UPDATE SET"
    " tasks = spend.tasks + excluded.tasks, cost = spend.cost + excluded.cost"
)


def _spend_rows(c: Count, tasks: int) -> list[tuple[Any, ...]]:
    day = day_of(c.slot * SLOT)
    return [(day, "user", c.user, tasks, c.cost), (day, "channel", c.channel, tasks, c.cost)]


@dataclass
class _Request:
    """One unit of work for the writer thread, run inside its transaction."""

    run: Callable[[sqlite3.Connection], Any]
    done: Future[Any] = field(default_factory=Future)


class SqliteEventStore:
    """One SQLite file in WAL mode with `synchronous=FULL`; appends are group-committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        db.execute("PRAGMA busy_timeout = 0")  # the writer waits for the lock itself: _begin
        _migrate(db)
        self._writer = threading.Thread(
            target=self._write_loop, args=(db,), name="store-writer", daemon=True
        )
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        _patiently(lambda: db.execute("PRAGMA journal_mode=WAL"))
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    # -- writing --------------------------------------------------------------------------

    def append(
        self,
        task_id: str,
        type_: str,
        data: dict[str, Any],
        event_id: str = "",
        expected_version: int | None = None,
    ) -> TaskView | None:
        """Record one event and return the task's new state; None if `event_id` was recorded
        before (an idempotent replay changes nothing). Returns once the event is on disk.
        `expected_version`: raise Conflict unless the task is still at that version."""
        event_id = event_id or f"{task_id}:{type_}:{time.time_ns()}"
        return self._write(lambda db: _append(db, task_id, type_, data, event_id, expected_version))

    def set_budget(self, scope: str, who: str, day: str, usd: float, by: str) -> None:
        """Today's limit for a user or a channel (`scope`), set by an admin; an event like any."""
        self._write(lambda db: _set_budget(db, scope, who, day, usd, by))

    def budget(self, scope: str, who: str, day: str) -> float | None:
        """The limit an admin set for `who` on `day`, if any."""
        sql = "SELECT usd FROM budgets WHERE scope = ? AND who = ? AND day = ?"
        row = self._db().execute(sql, (scope, who, day)).fetchone()
        return float(row[0]) if row else None

    def heartbeat(self, worker_id: str, state: dict[str, Any]) -> None:
        """A worker's live state (busy slots, breaker); not an event: it is replaced each time."""
        sql = "INSERT OR REPLACE INTO workers (id, state, seen_at) VALUES (?, ?, ?)"
        self._write(lambda db: db.execute(sql, (worker_id, _dumps(state), time.time())))

    def rebuild(self) -> int:
        """Derive every projection again from the events; returns the number of tasks."""
        return self._write(_rebuild)

    def _write(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        request = _Request(run)
        self._requests.put(request)
        return request.done.result()

    def _write_loop(self, db: sqlite3.Connection) -> None:
        while (first := self._requests.get()) is not None:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    request = self._requests.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    self._requests.put(None)  # finish this batch, then stop
                    break
                batch.append(request)
            _commit(db, batch)
        db.close()

    # -- reading --------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskView | None:
        return _view(self._db(), task_id)

    def task_by_event(self, event_id: str) -> TaskView | None:
        sql = "SELECT aggregate_id FROM events WHERE event_id = ?"
        row = self._db().execute(sql, (event_id,)).fetchone()
        return self.task(row[0]) if row else None

    def events(self, task_id: str) -> list[Event]:
        rows = self._db().execute(
            "SELECT aggregate_id, type, data, at, version, event_id FROM events"
            " WHERE aggregate_id = ? ORDER BY version",
            (task_id,),
        )
        return [Event(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def tasks_in(self, status: TaskStatus) -> list[TaskView]:
        sql = "SELECT state FROM tasks WHERE status = ? ORDER BY created_at"
        return [_load_view(r[0]) for r in self._db().execute(sql, (status.value,))]

    def top_spenders(self, day: str, scope: str, limit: int = 3) -> list[Spender]:
        """The users (scope "user") or channels ("channel") that spent most on `day`."""
        sql = (
            "SELECT who, tasks, cost FROM spend WHERE day = ? AND scope = ?"
            " ORDER BY cost DESC, tasks DESC LIMIT ?"
        )
        return [
            Spender(r[0], int(r[1]), float(r[2]))
            for r in self._db().execute(sql, (day, scope, limit))
        ]

    def thread(self, channel: str, thread_ts: str) -> list[TaskView]:
        """The tasks of one thread, oldest first: a conversation's turns."""
        sql = (
            "SELECT state FROM tasks WHERE channel = ? AND json_extract(state, '$.thread_ts') = ?"
            " ORDER BY created_at"
        )
        return [_load_view(r[0]) for r in self._db().execute(sql, (channel, thread_ts))]

    def recent(self, limit: int, user: str = "", channel: str = "") -> list[TaskView]:
        """The latest tasks, newest first: everyone's, or one user's, or one channel's."""
        where, args = _who(user, channel)
        sql = f"SELECT state FROM tasks {where} ORDER BY created_at DESC LIMIT ?"
        return [_load_view(r[0]) for r in self._db().execute(sql, (*args, limit))]

    def summary(self, since: float, user: str = "", channel: str = "") -> Summary:
        """Tasks that ended since `since`: everyone's, or one user's, or one channel's."""
        where, args = _who(user, channel)
        table = "stats" if where else "stats_all"
        where = f"{where} {'AND' if where else 'WHERE'} slot >= ?"
        rows = self._db().execute(
            "SELECT outcome, bucket, SUM(tasks), SUM(tokens_in), SUM(tokens_out), SUM(cost)"
            f" FROM {table} {where} GROUP BY outcome, bucket",
            (*args, slot_of(since)),
        )
        summary = Summary()
        for row in rows:
            summary.add(*row)
        return summary

    def workers(self, seen_since: float) -> list[dict[str, Any]]:
        """The state of every worker heard from since `seen_since`."""
        sql = "SELECT id, state, seen_at FROM workers WHERE seen_at >= ? ORDER BY id"
        rows = self._db().execute(sql, (seen_since,))
        return [{"id": r[0], **json.loads(r[1]), "seen_at": r[2]} for r in rows]

    def backup(self, target: Path) -> None:
        """A consistent copy of the whole store, taken while it is in use (SQLite's backup API;
        copying the file is not a backup under WAL)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(target) as copy:
            self._db().backup(copy)
        copy.close()

    def schema_version(self) -> int:
        return _version(self._db())

    def close(self) -> None:
        """Finish the writes already asked for, then close."""
        self._requests.put(None)
        self._writer.join()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


# -- the writer's side (its own connection, inside its transaction) ---------------------------


def _commit(db: sqlite3.Connection, batch: list[_Request]) -> None:
    outcomes: list[tuple[_Request, Any, BaseException | None]] = []
    try:
        _begin(db)
        for request in batch:
            outcomes.append((request, *_run_one(db, request)))
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        for request in batch:
            request.done.set_exception(exc)
        return
    for request, result, error in outcomes:
        if error is None:
            request.done.set_result(result)
        else:
            request.done.set_exception(error)


def _run_one(db: sqlite3.Connection, request: _Request) -> tuple[Any, BaseException | None]:
    db.execute("SAVEPOINT one")
    try:
        result = request.run(db)
    except Exception as exc:  # this request's own error; the rest of the batch goes on
        db.execute("ROLLBACK TO one")
        db.execute("RELEASE one")
        return None, exc
    db.execute("RELEASE one")
    return result, None


def _append(
    db: sqlite3.Connection,
    task_id: str,
    type_: str,
    data: dict[str, Any],
    event_id: str,
    expected_version: int | None,
) -> TaskView | None:
    if db.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone():
        return None
    view = _view(db, task_id)
    current = view.version if view else 0
    if expected_version not in (None, current):
        raise Conflict(f"task {task_id} is at version {current}, not {expected_version}")
    event = Event(task_id, type_, data, time.time(), current + 1)
    new = apply(view, event)
    db.execute(
        "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (event_id, task_id, event.version, type_, _dumps(data), event.at),
    )
    _project(db, view, new)
    return new


def _set_budget(
    db: sqlite3.Connection, scope: str, who: str, day: str, usd: float, by: str
) -> None:
    aggregate = f"{BUDGET_AGGREGATE}{scope}:{who}:{day}"
    row = db.execute("SELECT MAX(version) FROM events WHERE aggregate_id = ?", (aggregate,))
    version = (row.fetchone()[0] or 0) + 1
    data = {"scope": scope, "who": who, "day": day, "usd": usd, "by": by}
    db.execute(
        "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
        " VALUES (?, ?, ?, 'budget_set', ?, ?)",
        (f"{aggregate}:{version}", aggregate, version, _dumps(data), time.time()),
    )
    _project_budget(db, data)


def _project_budget(db: sqlite3.Connection, data: dict[str, Any]) -> None:
    db.execute(
        "INSERT OR REPLACE INTO budgets (scope, who, day, usd) VALUES (?, ?, ?, ?)",
        (data["scope"], data["who"], data["day"], data["usd"]),
    )


def _project(db: sqlite3.Connection, before: TaskView | None, after: TaskView) -> None:
    """The projections' share of one event: the task's row, and the counters when it ended."""
    _write_row(db, after)
    count = count_for(before, after)
    if count is not None:
        _add_count(db, count)


def _add_count(db: sqlite3.Connection, c: Count) -> None:
    db.execute(
        "INSERT INTO stats (slot, outcome, bucket, user, channel, tasks, tokens_in, tokens_out,"
        " cost) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)"
        " ON CONFLICT (slot, outcome, bucket, user, channel) DO UPDATE SET"
        " tasks = tasks + 1, tokens_in = tokens_in + excluded.tokens_in,"
        " tokens_out = tokens_out + excluded.tokens_out, cost = cost + excluded.cost",
        (c.slot, c.outcome, c.bucket, c.user, c.channel, c.tokens_in, c.tokens_out, c.cost),
    )
    db.execute(
        "INSERT INTO stats_all (slot, outcome, bucket, tasks, tokens_in, tokens_out, cost)"
        " VALUES (?, ?, ?, 1, ?, ?, ?)"
        " ON CONFLICT (slot, outcome, bucket) DO UPDATE SET"
        " tasks = tasks + 1, tokens_in = tokens_in + excluded.tokens_in,"
        " tokens_out = tokens_out + excluded.tokens_out, cost = cost + excluded.cost",
        (c.slot, c.outcome, c.bucket, c.tokens_in, c.tokens_out, c.cost),
    )
    db.executemany(_ADD_SPEND, _spend_rows(c, 1))


def _rebuild(db: sqlite3.Connection) -> int:
    db.execute("DELETE FROM tasks")
    db.execute("DELETE FROM stats")
    db.execute("DELETE FROM stats_all")
    db.execute("DELETE FROM spend")
    db.execute("DELETE FROM budgets")
    views: dict[str, TaskView] = {}
    rows = db.execute(
        "SELECT aggregate_id, type, data, at, version, event_id FROM events ORDER BY seq"
    )
    for r in rows.fetchall():
        if r[0].startswith(BUDGET_AGGREGATE):
            _project_budget(db, json.loads(r[2]))
            continue
        event = Event(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5])
        before = views.get(event.task_id)
        views[event.task_id] = after = apply(before, event)
        if (count := count_for(before, after)) is not None:
            _add_count(db, count)
    for view in views.values():
        _write_row(db, view)
    return len(views)


def _write_row(db: sqlite3.Connection, view: TaskView) -> None:
    db.execute(
        "INSERT OR REPLACE INTO tasks"
        " (id, status, version, user, channel, created_at, updated_at, state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            view.id,
            view.status.value,
            view.version,
            view.user,
            view.channel,
            view.created_at,
            view.updated_at,
            _dumps(vars(view)),
        ),
    )


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the schema up to SCHEMA_VERSION, in one transaction, at start."""
    _begin(db)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        current = _version(db)
        if current > SCHEMA_VERSION:
            raise Conflict(
                f"the event store is at schema version {current}, newer than this aico "
                f"({SCHEMA_VERSION}): upgrade aico"
            )
        pending = [m for m in MIGRATIONS if m[0] > current]
        for _version_number, statements, _ in pending:
            for statement in filter(str.strip, statements.split(";")):
                db.execute(statement)
        if current and any(rebuild for *_, rebuild in pending):
            _rebuild(db)
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _begin(db: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, retrying every millisecond or so while another process holds the write
    lock. (SQLite's own busy handler sleeps 1, 2, 5 … 100 ms between tries: long tails.)"""
    _patiently(lambda: db.execute("BEGIN IMMEDIATE"))


def _patiently(statement: Callable[[], object], patience: float = 30.0) -> None:
    """Run `statement` again every millisecond or so while the database is locked by another
    process. (Switching a new file to WAL answers "locked" at once, without the busy handler,
    when several processes open it together.)"""
    deadline = time.monotonic() + patience
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.0005, 0.0015))


def _who(user: str, channel: str) -> tuple[str, tuple[str, ...]]:
    if user:
        return "WHERE user = ?", (user,)
    if channel:
        return "WHERE channel = ?", (channel,)
    return "", ()


def _view(db: sqlite3.Connection, task_id: str) -> TaskView | None:
    row = db.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return _load_view(row[0]) if row else None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load_view(state: str) -> TaskView:
    raw = json.loads(state)
    raw["status"] = TaskStatus(raw["status"])
    return TaskView(**raw)
