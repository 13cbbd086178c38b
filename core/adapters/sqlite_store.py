"""The event store on SQLite: append-only events plus a task projection, in one transaction."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.domain.events import Event, TaskView, apply
from core.domain.task import TaskStatus

SCHEMA_VERSION = 1
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


class SqliteEventStore:
    """One SQLite file in WAL mode; every write is `BEGIN IMMEDIATE` with `synchronous=FULL`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    def _write(self) -> _Transaction:
        return _Transaction(self._db())

    def append(
        self, task_id: str, type_: str, data: dict[str, Any], event_id: str = ""
    ) -> TaskView | None:
        """Record one event and return the task's new state; None if `event_id` was recorded
        before (an idempotent replay changes nothing)."""
        event_id = event_id or f"{task_id}:{type_}:{time.time_ns()}"
        with self._write() as db:
            if db.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone():
                return None
            view = self._view(db, task_id)
            event = Event(task_id, type_, data, time.time(), (view.version if view else 0) + 1)
            new = apply(view, event)
            db.execute(
                "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, task_id, event.version, type_, _dumps(data), event.at),
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
                    _dumps(asdict(new)),
                ),
            )
            return new

    def task(self, task_id: str) -> TaskView | None:
        return self._view(self._db(), task_id)

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
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @staticmethod
    def _view(db: sqlite3.Connection, task_id: str) -> TaskView | None:
        row = db.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return _load_view(row[0]) if row else None


class _Transaction:
    """`with` block around BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load_view(state: str) -> TaskView:
    raw = json.loads(state)
    raw["status"] = TaskStatus(raw["status"])
    return TaskView(**raw)
