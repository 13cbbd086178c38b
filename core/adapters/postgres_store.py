"""The event store on PostgreSQL, for when the processes run on more than one host. Same API and
semantics as the SQLite store (tests/contract runs both): append-only events, and the
projections derived from them (tasks, statistics) written in the same transaction. The schema,
the SQL and the projections are the same on every backend (store_schema); what is PostgreSQL's
is here: the connection pool, the advisory locks and the transactions.

Each append is one transaction on a connection from a small per-process pool. It first takes a
transaction-scoped advisory lock on its task (`pg_advisory_xact_lock(class, hashtext(task_id))`),
so appends to one task queue up behind each other across threads, processes and hosts, while
appends to different tasks run side by side. Under the lock (READ COMMITTED: each statement sees
what committed before it), the task's state read is its latest, so the next version is free.
The lock works for a task's first event too, where there is no row yet to `SELECT … FOR UPDATE`.
The keys (aggregate_id, version) and event_id stay unique in the schema all the same: a race the
lock cannot cover (one event_id sent for two tasks at once) hits them, and the loser is tried
again: it then finds the event recorded, an idempotent replay.

JSON (event data, a task's state, a worker's state) goes in `json` columns: PostgreSQL keeps the
text as written (the same bytes SQLite keeps), checks that it is JSON, and psql can still look
inside. `jsonb` would refuse a `\\u0000` in a prompt. `user` is a reserved word in PostgreSQL:
the column is `user_id` here.

The schema carries the same version numbers as SQLite's; migrations run at start in one
transaction under an advisory lock, so processes starting at once migrate once. A rebuild locks
the events table in SHARE mode: reads go on (and see the old projections), appends wait until it
is done. Backups are pg_dump's job, not this adapter's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from core.adapters import store_schema as schema
from core.domain.events import TaskView
from core.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

POOL_SIZE = 8  # connections per process at most; PostgreSQL allows 100 in all by default
APPEND_RETRIES = 3
LOCK_PATIENCE = "30s"  # as long as the SQLite store waits for its write lock
_MIGRATION_LOCK = 0x61_69_63_6F_5F_64_62  # one bigint key for the whole schema ("aico_db")
_TASK_LOCKS = 0x6169636F  # the class of the (class, task) advisory locks ("aico")

POSTGRES = schema.Dialect(
    name="postgres",
    placeholder="%s",
    seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    real="DOUBLE PRECISION",
    bigint="BIGINT",
    json="JSON",
    json_value="?::json",
    user="user_id",
    thread_ts="(state->>'thread_ts')",
    mode="(state->>'mode')",
    times="(state->>'started_at')::float8, (state->>'finished_at')::float8",
    without_rowid="",
    decode=dict,  # psycopg has parsed the JSON already: a copy of its own to change
    lock=f"SELECT pg_advisory_xact_lock({_TASK_LOCKS}, hashtext(?))",
    lock_events="LOCK TABLE events IN SHARE MODE",
    replay_cursor=lambda db: db.cursor(name="replay"),  # server-side: the events stream
)
SQL = schema.Sql(POSTGRES)
MIGRATIONS = SQL.migrations
_V1 = MIGRATIONS[0][1]
SCHEMA_VERSION = schema.SCHEMA_VERSION


class PostgresEventStore(schema.SqlEventStore):
    """The event store in one PostgreSQL database, shared by every process on every host."""

    _sql = SQL

    def __init__(self, url: str, pool_size: int = POOL_SIZE) -> None:
        self._database = conninfo_to_dict(url).get("dbname") or "<database>"  # no password
        _migrate_at_start(url)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},  # reads are one statement; writes say transaction()
            open=True,
            configure=_configure,
            name="aico-store",
        )

    def backup(self, target: Path) -> None:
        """Not here: a PostgreSQL database is backed up with pg_dump, by its operator."""
        raise ConfigError(
            "the event store is in PostgreSQL, so `aico db backup` (a copy of the SQLite file) "
            "does not apply: back it up with pg_dump, e.g. pg_dump --format=custom "
            f"--file={target} {self._database}"
        )

    def close(self) -> None:
        """Close every connection; the writes asked for have all committed (append waits)."""
        self._pool.close()

    # -- what SqlEventStore asks of a backend ----------------------------------------------

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as db:
            return db.execute(sql, args).fetchall()

    def _append_one(self, *args: Any) -> TaskView | None:
        """An append whose unique keys another one took first is tried again (see above)."""
        task_id, event_id = args[0], args[4]
        for _ in range(APPEND_RETRIES - 1):
            with contextlib.suppress(errors.UniqueViolation):
                return self._transact(lambda db: _append(db, *args))
            log.info("task %s: append of %s lost a race; trying again", task_id, event_id)
        return self._transact(lambda db: _append(db, *args))

    def _execute(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._pool.connection() as db:
            db.execute(sql, args)

    def _transact(self, run: Callable[[psycopg.Connection], T]) -> T:
        with self._pool.connection() as db, db.transaction():
            return run(db)


def _append(db: psycopg.Connection, task_id, type_, data, payload, event_id, expected_version):
    """append_event under its task's advisory lock, stamped by this module's clock (so
    bench.store can stamp planned times here: it wraps `_append` and replaces `time`)."""
    args = (task_id, type_, data, payload, event_id, expected_version)
    return schema.append_event(db, SQL, *args, now=time.time)


def _migrate_at_start(url: str) -> None:
    """Connect once, plainly, so a wrong URL or a server that is down fails the start with
    PostgreSQL's own reason (a pool would only time out), and bring the schema up to date. The
    advisory lock makes every other process that starts now wait, then find the work done."""
    try:
        db = psycopg.connect(url, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot open the PostgreSQL event store: {exc}".strip()) from exc
    with db, db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        schema.migrate(db, SQL)


def _configure(db: psycopg.Connection) -> None:
    """Each pooled connection waits at most LOCK_PATIENCE for a lock, then fails: a process on a
    host that vanished mid-append holds its task's lock until the server notices (TCP keepalive,
    two hours by default), and no one else should hang that long."""
    db.execute("SELECT set_config('lock_timeout', %s, false)", (LOCK_PATIENCE,))
