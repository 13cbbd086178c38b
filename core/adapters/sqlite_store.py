"""The event store on SQLite: append-only events, and the projections derived from them (tasks,
statistics) written in the same transaction. The schema, the SQL and the projections are the
same on every backend (store_schema); what is SQLite's is here: connections, the writer thread,
the write lock and the backup.

Writes go through one writer thread per process that takes the write lock (`BEGIN IMMEDIATE`)
and then commits whatever appends are waiting, those that came while it waited for the lock
included, in that one transaction (group commit): one fsync for many events, and no two
threads of a process fighting over SQLite's write lock, whose busy handler sleeps in steps of up
to 100 ms. Each append still succeeds or fails on its own (a savepoint each). Reads use one
connection per thread and never wait for writers (WAL).

The processes' writers queue for the write lock in the kernel (a POSIX record lock on a file
beside the database, taken before `BEGIN IMMEDIATE` and given back after `COMMIT`) instead of
each polling SQLite for it: the lock passes to a waiting process the moment it is free. The
bot's writer goes first (`first=True`): while it waits, the other writers hold back (at most
YIELD_AT_MOST), so a slash command's record, which its ack waits for, is not queued behind the
workers' writes. SQLite offers neither a queue nor a priority for its lock across processes,
hence this. A process that dies gives its record locks back.

The schema carries a version; migrations run at start, in one transaction, and a migration that
adds a projection rebuilds it from the events.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core.adapters import store_schema as schema
from core.domain import fastjson
from core.domain.events import TaskView

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_BATCH = 256
YIELD_AT_MOST = 0.005  # seconds a writer holds back while the first writer (the bot's) waits
SQLITE = schema.Dialect(
    name="sqlite",
    placeholder="?",
    seq="INTEGER PRIMARY KEY AUTOINCREMENT",
    real="REAL",
    bigint="INTEGER",
    json="TEXT",
    json_value="?",
    user="user",
    thread_ts="json_extract(state, '$.thread_ts')",
    mode="json_extract(state, '$.mode')",
    times="json_extract(state, '$.started_at'), json_extract(state, '$.finished_at')",
    without_rowid=" WITHOUT ROWID",
    decode=fastjson.loads,
    # no lock: the writer holds the database's (BEGIN IMMEDIATE), and is one thread
)
SQL = schema.Sql(SQLITE)
MIGRATIONS = SQL.migrations
_V1 = MIGRATIONS[0][1]
SCHEMA_VERSION = schema.SCHEMA_VERSION


@dataclass
class _Request:
    """One unit of work for the writer thread, run inside its transaction."""

    run: Callable[[sqlite3.Connection], Any]
    done: Future[Any] = field(default_factory=Future)


class SqliteEventStore(schema.SqlEventStore):
    """One SQLite file in WAL mode with `synchronous=FULL`; appends are group-committed."""

    _sql = SQL

    def __init__(self, path: Path, first: bool = False) -> None:
        self.path = path
        self._local = threading.local()
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        db.execute("PRAGMA busy_timeout = 0")  # the writer waits for the lock itself: _begin
        _migrate(db)
        self._lane = _Lane(path.with_name(path.name + "-lock"), first)
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

    def backup(self, target: Path) -> None:
        """A consistent copy of the whole store, taken while it is in use (SQLite's backup API;
        copying the file is not a backup under WAL)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(target) as copy:
            self._db().backup(copy)
        copy.close()

    def _housekeep(self) -> dict[str, int]:
        """Checkpoint the WAL into the database file and truncate it, so it cannot grow while
        readers come and go (SQLite checkpoints on its own only when no reader holds it)."""
        busy, pages, _moved = self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return {"wal_pages_checkpointed": int(pages), "wal_checkpoint_busy": int(busy)}

    def close(self) -> None:
        """Finish the writes already asked for, then close."""
        self._requests.put(None)
        self._writer.join()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- what SqlEventStore asks of a backend ----------------------------------------------

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._db().execute(sql, args).fetchall()

    def _append_one(self, *args: Any) -> TaskView | None:
        return self._transact(lambda db: _append(db, *args))

    def _execute(self, sql: str, args: tuple[Any, ...]) -> None:
        self._transact(lambda db: db.execute(sql, args))

    def _transact(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """`run(db)` by the writer thread, in its next transaction (a savepoint of its own)."""
        request = _Request(run)
        self._requests.put(request)
        return request.done.result()

    def _write_loop(self, db: sqlite3.Connection) -> None:
        """Take SQLite's write lock for the first request waiting, then commit with it every
        request that came while the lock was being waited for (another process held it): under
        load the batches grow instead of queueing one lock wait after another."""
        while (first := self._requests.get()) is not None:
            self._lane.take()  # the write lock's queue (it never raises: see _Lane)
            try:
                _begin(db)
            except sqlite3.Error as exc:
                self._lane.give_back()
                first.done.set_exception(exc)
                continue
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
            try:
                _commit(db, batch)
            finally:
                self._lane.give_back()
        db.close()
        self._lane.close()


class _Lane:
    """The queue for the write lock, in the kernel: byte 0 of the lock file is the lock (held
    from before BEGIN to after COMMIT), byte 1 says a first writer waits (it holds it shared
    while it waits)."""

    def __init__(self, path: Path, first: bool) -> None:
        self.first = first
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def take(self) -> None:
        try:
            self._take()
        except OSError as exc:  # a file system without record locks: SQLite's lock alone
            log.warning("the store's write lock queue is not available: %s", exc)
            self.give_back = self._no_lock  # type: ignore[method-assign]
            self.take = self._no_lock  # type: ignore[method-assign]

    def _no_lock(self) -> None:
        pass

    def _take(self) -> None:
        if self.first:
            fcntl.lockf(self._fd, fcntl.LOCK_SH, 1, 1)  # "a first writer waits"
            fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 1)
            return
        deadline = time.monotonic() + YIELD_AT_MOST
        while time.monotonic() < deadline:  # hold back while a first writer waits
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1)
            except OSError:
                time.sleep(0.0002)
                continue
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 1)
            break
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)

    def give_back(self) -> None:
        with contextlib.suppress(OSError):  # (only a closed descriptor fails: nothing is held)
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)

    def close(self) -> None:
        os.close(self._fd)


# -- the writer's side (its own connection, inside its transaction) ---------------------------


def _commit(db: sqlite3.Connection, batch: list[_Request]) -> None:
    """Run `batch` in the transaction begun for it (the write lock is held), and commit."""
    if len(batch) == 1:
        _commit_alone(db, batch[0])
        return
    outcomes: list[tuple[_Request, Any, BaseException | None]] = []
    try:
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


def _commit_alone(db: sqlite3.Connection, request: _Request) -> None:
    """A batch of one: its transaction is its own, so no savepoint is needed to undo it alone."""
    try:
        try:
            result = request.run(db)
        except Exception as exc:  # the request's own error: nothing of it is kept
            db.execute("ROLLBACK")
            request.done.set_exception(exc)
            return
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        request.done.set_exception(exc)
        return
    request.done.set_result(result)


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


def _append(db: sqlite3.Connection, task_id, type_, data, payload, event_id, expected_version):
    """append_event on the writer's connection, stamped by this module's clock (so bench.store
    can stamp planned times here: it wraps `_append` and replaces `time`)."""
    args = (task_id, type_, data, payload, event_id, expected_version)
    return schema.append_event(db, SQL, *args, now=time.time)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the schema up to SCHEMA_VERSION, in one transaction, at start."""
    _begin(db)
    try:
        schema.migrate(db, SQL)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


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
            time.sleep(random.uniform(0.0001, 0.0004))
