"""The event store on SQLite: append-only events plus a task projection, in one transaction.

Writes go through one writer thread per process that commits whatever appends are waiting in a
single `BEGIN IMMEDIATE` transaction (group commit): one fsync for many events, and no two
threads of a process fighting over SQLite's write lock, whose busy handler sleeps in steps of up
to 100 ms. Each append still succeeds or fails on its own (a savepoint each). Reads use one
connection per thread and never wait for writers (WAL).
"""

from __future__ import annotations

import json
import queue
import random
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.domain.events import Event, TaskView, apply
from core.domain.task import TaskStatus
from core.errors import Conflict

SCHEMA_VERSION = 1
MAX_BATCH = 256
_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class _Append:
    task_id: str
    type: str
    data: dict[str, Any]
    event_id: str
    expected_version: int | None = None
    done: Future[TaskView | None] = field(default_factory=Future)


class SqliteEventStore:
    """One SQLite file in WAL mode with `synchronous=FULL`; appends are group-committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._requests: queue.SimpleQueue[_Append | None] = queue.SimpleQueue()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        db.execute("PRAGMA busy_timeout = 0")  # the writer waits for the lock itself: _begin
        _begin(db)
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        db.execute("COMMIT")
        self._writer = threading.Thread(
            target=self._write_loop, args=(db,), name="store-writer", daemon=True
        )
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
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
        request = _Append(task_id, type_, data, event_id, expected_version)
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
            self._commit(db, batch)
        db.close()

    def _commit(self, db: sqlite3.Connection, batch: list[_Append]) -> None:
        outcomes: list[tuple[_Append, Any, BaseException | None]] = []
        try:
            _begin(db)
            for request in batch:
                outcomes.append((request, *self._apply_one(db, request)))
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

    def _apply_one(
        self, db: sqlite3.Connection, request: _Append
    ) -> tuple[TaskView | None, BaseException | None]:
        db.execute("SAVEPOINT one")
        try:
            result = self._insert(db, request)
        except Exception as exc:  # this append's own error; the rest of the batch goes on
            db.execute("ROLLBACK TO one")
            db.execute("RELEASE one")
            return None, exc
        db.execute("RELEASE one")
        return result, None

    def _insert(self, db: sqlite3.Connection, request: _Append) -> TaskView | None:
        seen = db.execute("SELECT 1 FROM events WHERE event_id = ?", (request.event_id,))
        if seen.fetchone():
            return None
        view = self._view(db, request.task_id)
        current = view.version if view else 0
        if request.expected_version not in (None, current):
            raise Conflict(
                f"task {request.task_id} is at version {current}, not {request.expected_version}"
            )
        version = current + 1
        event = Event(request.task_id, request.type, request.data, time.time(), version)
        new = apply(view, event)
        db.execute(
            "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (request.event_id, event.task_id, version, event.type, _dumps(event.data), event.at),
        )
        db.execute(
            "INSERT OR REPLACE INTO tasks"
            " (id, status, version, user, channel, created_at, updated_at, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.id,
                new.status.value,
                new.version,
                new.user,
                new.channel,
                new.created_at,
                new.updated_at,
                _dumps(vars(new)),
            ),
        )
        return new

    # -- reading --------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskView | None:
        return self._view(self._db(), task_id)

    def task_by_event(self, event_id: str) -> TaskView | None:
        row = (
            self._db()
            .execute("SELECT aggregate_id FROM events WHERE event_id = ?", (event_id,))
            .fetchone()
        )
        return self.task(row[0]) if row else None

    def events(self, task_id: str) -> list[Event]:
        rows = self._db().execute(
            "SELECT aggregate_id, type, data, at, version, event_id FROM events"
            " WHERE aggregate_id = ? ORDER BY version",
            (task_id,),
        )
        return [Event(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def tasks_in(self, status: TaskStatus) -> list[TaskView]:
        rows = self._db().execute(
            "SELECT state FROM tasks WHERE status = ? ORDER BY created_at", (status.value,)
        )
        return [_load_view(r[0]) for r in rows]

    def close(self) -> None:
        """Finish the appends already asked for, then close."""
        self._requests.put(None)
        self._writer.join()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @staticmethod
    def _view(db: sqlite3.Connection, task_id: str) -> TaskView | None:
        row = db.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return _load_view(row[0]) if row else None


def _begin(db: sqlite3.Connection, patience: float = 30.0) -> None:
    """BEGIN IMMEDIATE, retrying every millisecond or so while another process holds the write
    lock. (SQLite's own busy handler sleeps 1, 2, 5 … 100 ms between tries: long tails.)"""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.0005, 0.0015))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load_view(state: str) -> TaskView:
    raw = json.loads(state)
    raw["status"] = TaskStatus(raw["status"])
    return TaskView(**raw)
