"""The event store on PostgreSQL, for when the processes run on more than one host. Same API and
semantics as the SQLite store (tests/contract runs both): append-only events, and the
projections derived from them (tasks, statistics) written in the same transaction.

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
inside. `jsonb` would refuse a `\\u0000` in a prompt.

The schema carries the same version numbers as SQLite's; migrations run at start in one
transaction under an advisory lock, so processes starting at once migrate once. Backups are
pg_dump's job, not this adapter's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from core.domain.budget import AGGREGATE as BUDGET_AGGREGATE
from core.domain.events import Event, TaskView, apply
from core.domain.stats import SLOT, Count, Spender, Summary, count_for, day_of, slot_of
from core.domain.task import TaskStatus
from core.errors import ConfigError, Conflict

log = logging.getLogger(__name__)
T = TypeVar("T")

POOL_SIZE = 8  # connections per process at most; PostgreSQL allows 100 in all by default
APPEND_RETRIES = 3
LOCK_PATIENCE = "30s"  # as long as the SQLite store waits for its write lock
_MIGRATION_LOCK = 0x61_69_63_6F_5F_64_62  # one bigint key for the whole schema ("aico_db")
_TASK_LOCKS = 0x6169636F  # the class of the (class, task) advisory locks ("aico")

# `user` is a reserved word in PostgreSQL: the column is `user_id` here.
_V1 = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    data JSON NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    UNIQUE (aggregate_id, version)
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    state JSON NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, created_at);
"""
_V2 = """
CREATE INDEX tasks_by_user ON tasks (user_id, created_at);
CREATE INDEX tasks_by_channel ON tasks (channel, created_at);
CREATE INDEX tasks_by_created ON tasks (created_at);
CREATE TABLE stats (
    slot BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    tasks BIGINT NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (slot, outcome, bucket, user_id, channel)
);
CREATE INDEX stats_by_user ON stats (user_id, slot);
CREATE INDEX stats_by_channel ON stats (channel, slot);
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    state JSON NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL
);
"""
_V3 = """
CREATE TABLE budgets (
    scope TEXT NOT NULL,
    who TEXT NOT NULL,
    day TEXT NOT NULL,
    usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, who, day)
);
"""
# Everyone's counters, without the user and channel: what /aico status reads.
_V4 = """
CREATE TABLE stats_all (
    slot BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    tasks BIGINT NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (slot, outcome, bucket)
);
"""
# A conversation is the tasks of one thread: found by the thread a reply comes in.
_V5 = """
CREATE INDEX tasks_by_thread ON tasks (channel, (state->>'thread_ts'), created_at);
"""
# Each user's and channel's day (tasks, cost): the top spenders in /aico status.
_V6 = """
CREATE TABLE spend (
    day TEXT NOT NULL,
    scope TEXT NOT NULL,
    who TEXT NOT NULL,
    tasks BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, scope, who)
);
"""
# (version, statements, rebuild the projections afterwards): the numbers are SQLite's.
MIGRATIONS: list[tuple[int, str, bool]] = [
    (1, _V1, False),
    (2, _V2, True),
    (3, _V3, False),
    (4, _V4, True),
    (5, _V5, False),
    (6, _V6, True),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_ADD_COUNT = (
    "INSERT INTO stats (slot, outcome, bucket, user_id, channel, tasks, tokens_in, tokens_out,"
    " cost) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (slot, outcome, bucket, user_id, channel) DO UPDATE SET"
    " tasks = stats.tasks + excluded.tasks, tokens_in = stats.tokens_in + excluded.tokens_in,"
    " tokens_out = stats.tokens_out + excluded.tokens_out, cost = stats.cost + excluded.cost"
)
_ADD_TOTAL = (
    "INSERT INTO stats_all (slot, outcome, bucket, tasks, tokens_in, tokens_out, cost)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (slot, outcome, bucket) DO UPDATE SET"
    " tasks = stats_all.tasks + excluded.tasks,"
    " tokens_in = stats_all.tokens_in + excluded.tokens_in,"
    " tokens_out = stats_all.tokens_out + excluded.tokens_out,"
    " cost = stats_all.cost + excluded.cost"
)
_WRITE_ROW = (
    "INSERT INTO tasks (id, status, version, user_id, channel, created_at, updated_at, state)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::json)"
    " ON CONFLICT (id) DO UPDATE SET status = excluded.status, version = excluded.version,"
    " user_id = excluded.user_id, channel = excluded.channel,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at, state = excluded.state"
)


class PostgresEventStore:
    """The event store in one PostgreSQL database, shared by every process on every host."""

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
        before (an idempotent replay changes nothing). Returns once the event is committed.
        `expected_version`: raise Conflict unless the task is still at that version."""
        event_id = event_id or f"{task_id}:{type_}:{time.time_ns()}"
        payload = _dumps(data)  # data that is not JSON fails here, before any SQL
        args = (task_id, type_, data, payload, event_id, expected_version)
        for _ in range(APPEND_RETRIES - 1):
            with contextlib.suppress(errors.UniqueViolation):
                return self._transact(_append, *args)
            log.info("task %s: append of %s lost a race; trying again", task_id, event_id)
        return self._transact(_append, *args)

    def set_budget(self, scope: str, who: str, day: str, usd: float, by: str) -> None:
        """Today's limit for a user or a channel (`scope`), set by an admin; an event like any."""
        self._transact(_set_budget, {"scope": scope, "who": who, "day": day, "usd": usd, "by": by})

    def budget(self, scope: str, who: str, day: str) -> float | None:
        """The limit an admin set for `who` on `day`, if any."""
        sql = "SELECT usd FROM budgets WHERE scope = %s AND who = %s AND day = %s"
        rows = self._rows(sql, (scope, who, day))
        return float(rows[0][0]) if rows else None

    def heartbeat(self, worker_id: str, state: dict[str, Any]) -> None:
        """A worker's live state (busy slots, breaker); not an event: it is replaced each time."""
        sql = (
            "INSERT INTO workers (id, state, seen_at) VALUES (%s, %s::json, %s)"
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, seen_at = excluded.seen_at"
        )
        with self._pool.connection() as db:
            db.execute(sql, (worker_id, _dumps(state), time.time()))

    def rebuild(self) -> int:
        """Derive every projection again from the events, in one transaction; returns the number
        of tasks. Appends wait until it is done, reads go on and see the old projections."""
        return self._transact(_rebuild)

    # -- reading --------------------------------------------------------------------------

    def task(self, task_id: str) -> TaskView | None:
        return self._view("SELECT state FROM tasks WHERE id = %s", (task_id,))

    def task_by_event(self, event_id: str) -> TaskView | None:
        sql = (
            "SELECT t.state FROM events e JOIN tasks t ON t.id = e.aggregate_id"
            " WHERE e.event_id = %s"
        )
        return self._view(sql, (event_id,))

    def events(self, task_id: str) -> list[Event]:
        rows = self._rows(
            "SELECT aggregate_id, type, data, at, version, event_id FROM events"
            " WHERE aggregate_id = %s ORDER BY version",
            (task_id,),
        )
        return [Event(*row) for row in rows]

    def tasks_in(self, status: TaskStatus) -> list[TaskView]:
        sql = "SELECT state FROM tasks WHERE status = %s ORDER BY created_at"
        return [_load_view(r[0]) for r in self._rows(sql, (status.value,))]

    def top_spenders(self, day: str, scope: str, limit: int = 3) -> list[Spender]:
        """The users (scope "user") or channels ("channel") that spent most on `day`."""
        sql = (
            "SELECT who, tasks, cost FROM spend WHERE day = %s AND scope = %s"
            " ORDER BY cost DESC, tasks DESC LIMIT %s"
        )
        return [Spender(r[0], int(r[1]), float(r[2])) for r in self._rows(sql, (day, scope, limit))]

    def thread(self, channel: str, thread_ts: str) -> list[TaskView]:
        """The tasks of one thread, oldest first: a conversation's turns."""
        sql = (
            "SELECT state FROM tasks WHERE channel = %s AND (state->>'thread_ts') = %s"
            " ORDER BY created_at"
        )
        return [_load_view(r[0]) for r in self._rows(sql, (channel, thread_ts))]

    def recent(self, limit: int, user: str = "", channel: str = "") -> list[TaskView]:
        """The latest tasks, newest first: everyone's, or one user's, or one channel's."""
        where, args = _who(user, channel)
        sql = f"SELECT state FROM tasks {where} ORDER BY created_at DESC LIMIT %s"
        return [_load_view(r[0]) for r in self._rows(sql, (*args, limit))]

    def summary(self, since: float, user: str = "", channel: str = "") -> Summary:
        """Tasks that ended since `since`: everyone's, or one user's, or one channel's."""
        where, args = _who(user, channel)
        table = "stats" if where else "stats_all"
        where = f"{where} {'AND' if where else 'WHERE'} slot >= %s"
        rows = self._rows(
            # SUM of a BIGINT is a NUMERIC (a Decimal in Python): back to BIGINT.
            "SELECT outcome, bucket, SUM(tasks)::BIGINT, SUM(tokens_in)::BIGINT,"
            f" SUM(tokens_out)::BIGINT, SUM(cost) FROM {table} {where} GROUP BY outcome, bucket",
            (*args, slot_of(since)),
        )
        summary = Summary()
        for row in rows:
            summary.add(*row)
        return summary

    def workers(self, seen_since: float) -> list[dict[str, Any]]:
        """The state of every worker heard from since `seen_since`."""
        sql = "SELECT id, state, seen_at FROM workers WHERE seen_at >= %s ORDER BY id"
        return [{"id": r[0], **r[1], "seen_at": r[2]} for r in self._rows(sql, (seen_since,))]

    def backup(self, target: Path) -> None:
        """Not here: a PostgreSQL database is backed up with pg_dump, by its operator."""
        raise ConfigError(
            "the event store is in PostgreSQL, so `aico db backup` (a copy of the SQLite file) "
            "does not apply: back it up with pg_dump, e.g. pg_dump --format=custom "
            f"--file={target} {self._database}"
        )

    def schema_version(self) -> int:
        rows = self._rows("SELECT value FROM meta WHERE key = 'schema_version'", ())
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        """Close every connection; the writes asked for have all committed (append waits)."""
        self._pool.close()

    def _transact(self, run: Callable[..., T], *args: Any) -> T:
        """`run(db, *args)` in one transaction: committed if it returns, rolled back if not."""
        with self._pool.connection() as db, db.transaction():
            return run(db, *args)

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as db:
            return db.execute(sql, args).fetchall()

    def _view(self, sql: str, args: tuple[Any, ...]) -> TaskView | None:
        rows = self._rows(sql, args)
        return _load_view(rows[0][0]) if rows else None


# -- inside a write transaction ---------------------------------------------------------------


def _append(
    db: psycopg.Connection,
    task_id: str,
    type_: str,
    data: dict[str, Any],
    payload: str,
    event_id: str,
    expected_version: int | None,
) -> TaskView | None:
    db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_TASK_LOCKS, task_id))
    seen, state = db.execute(  # a statement after the lock: it sees the last holder's commit
        "SELECT EXISTS (SELECT 1 FROM events WHERE event_id = %s),"
        " (SELECT state FROM tasks WHERE id = %s)",
        (event_id, task_id),
    ).fetchone()
    if seen:
        return None
    view = _load_view(state) if state is not None else None
    current = view.version if view else 0
    if expected_version not in (None, current):
        raise Conflict(f"task {task_id} is at version {current}, not {expected_version}")
    event = Event(task_id, type_, data, time.time(), current + 1)
    new = apply(view, event)
    db.execute(
        "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
        " VALUES (%s, %s, %s, %s, %s::json, %s)",
        (event_id, task_id, event.version, type_, payload, event.at),
    )
    db.execute(_WRITE_ROW, _task_row(new))
    if (count := count_for(view, new)) is not None:
        db.execute(_ADD_COUNT, _count_row(count, 1))
        db.execute(_ADD_TOTAL, _total_row(count, 1))
        db.cursor().executemany(_ADD_SPEND, _spend_rows(count, 1))
    return new


def _set_budget(db: psycopg.Connection, data: dict[str, Any]) -> None:
    aggregate = f"{BUDGET_AGGREGATE}{data['scope']}:{data['who']}:{data['day']}"
    db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_TASK_LOCKS, aggregate))
    sql = "SELECT COALESCE(MAX(version), 0) + 1 FROM events WHERE aggregate_id = %s"
    (version,) = db.execute(sql, (aggregate,)).fetchone()
    db.execute(
        "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
        " VALUES (%s, %s, %s, 'budget_set', %s::json, %s)",
        (f"{aggregate}:{version}", aggregate, version, _dumps(data), time.time()),
    )
    _project_budget(db, data)


def _project_budget(db: psycopg.Connection, data: dict[str, Any]) -> None:
    db.execute(
        "INSERT INTO budgets (scope, who, day, usd) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (scope, who, day) DO UPDATE SET usd = excluded.usd",
        (data["scope"], data["who"], data["day"], data["usd"]),
    )


def _rebuild(db: psycopg.Connection) -> int:
    """Replay every event in order into fresh projections. SHARE mode lets reads go on and makes
    appends (which insert into events) wait, so no event slips in between replay and commit."""
    db.execute("LOCK TABLE events IN SHARE MODE")
    for table in ("tasks", "stats", "stats_all", "spend", "budgets"):
        db.execute(f"DELETE FROM {table}")
    replay = _Replay()
    with db.cursor(name="replay") as events:  # server-side: the events stream, not one list
        events.execute(
            "SELECT aggregate_id, type, data, at, version, event_id FROM events ORDER BY seq"
        )
        for row in events:
            replay.feed(row)
    replay.write(db)
    return len(replay.views)


_ADD_SPEND = (
    "INSERT INTO spend (day, scope, who, tasks, cost) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (day, scope, who) DO UPDATE SET"
    " tasks = spend.tasks + excluded.tasks, cost = spend.cost + excluded.cost"
)


def _spend_rows(c: Count, tasks: int) -> list[tuple[Any, ...]]:
    day = day_of(c.slot * SLOT)
    return [(day, "user", c.user, tasks, c.cost), (day, "channel", c.channel, tasks, c.cost)]


@dataclass
class _Replay:
    """The projections as the events replayed so far make them."""

    views: dict[str, TaskView] = field(default_factory=dict)
    counts: dict[tuple[Any, ...], tuple[Count, int]] = field(default_factory=dict)
    budgets: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def feed(self, row: tuple[Any, ...]) -> None:
        if row[0].startswith(BUDGET_AGGREGATE):  # the last limit set for a day is the one
            data = row[2]
            self.budgets[data["scope"], data["who"], data["day"]] = data
            return
        event = Event(*row)
        before = self.views.get(event.task_id)
        self.views[event.task_id] = after = apply(before, event)
        if (count := count_for(before, after)) is not None:
            self._tally(count)

    def _tally(self, c: Count) -> None:
        """Sum counter rows in event order, as the appends did one at a time (same float sums)."""
        if (seen := self.counts.get(_key(c))) is None:
            self.counts[_key(c)] = (c, 1)
            return
        old, n = seen
        total = replace(
            old,
            tokens_in=old.tokens_in + c.tokens_in,
            tokens_out=old.tokens_out + c.tokens_out,
            cost=old.cost + c.cost,
        )
        self.counts[_key(c)] = (total, n + 1)

    def write(self, db: psycopg.Connection) -> None:
        if self.views:
            db.cursor().executemany(_WRITE_ROW, [_task_row(v) for v in self.views.values()])
        if self.counts:
            rows = [_count_row(c, n) for c, n in self.counts.values()]
            db.cursor().executemany(_ADD_COUNT, rows)
            db.cursor().executemany(_ADD_TOTAL, _totals(self.counts.values()))
            for c, n in self.counts.values():
                db.cursor().executemany(_ADD_SPEND, _spend_rows(c, n))
        for data in self.budgets.values():
            _project_budget(db, data)


def _key(c: Count) -> tuple[Any, ...]:
    return (c.slot, c.outcome, c.bucket, c.user, c.channel)


def _count_row(c: Count, tasks: int) -> tuple[Any, ...]:
    return (*_key(c), tasks, c.tokens_in, c.tokens_out, c.cost)


def _total_row(c: Count, tasks: int) -> tuple[Any, ...]:
    return (c.slot, c.outcome, c.bucket, tasks, c.tokens_in, c.tokens_out, c.cost)


def _totals(counts: Iterable[tuple[Count, int]]) -> list[tuple[Any, ...]]:
    """The rollup of per-user-and-channel counts into everyone's, one row per key."""
    totals: dict[tuple[Any, ...], list[Any]] = {}
    for c, n in counts:
        row = totals.setdefault((c.slot, c.outcome, c.bucket), [0, 0, 0, 0.0])
        for i, value in enumerate((n, c.tokens_in, c.tokens_out, c.cost)):
            row[i] += value
    return [(*key, *values) for key, values in totals.items()]


def _task_row(v: TaskView) -> tuple[Any, ...]:
    state = _dumps(vars(v))
    return (v.id, v.status.value, v.version, v.user, v.channel, v.created_at, v.updated_at, state)


# -- the schema -------------------------------------------------------------------------------


def _migrate_at_start(url: str) -> None:
    """Connect once, plainly, so a wrong URL or a server that is down fails the start with
    PostgreSQL's own reason (a pool would only time out), and bring the schema up to date."""
    try:
        db = psycopg.connect(url, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot open the PostgreSQL event store: {exc}".strip()) from exc
    with db:
        _migrate(db)


def _migrate(db: psycopg.Connection) -> None:
    """Bring the schema up to SCHEMA_VERSION in one transaction. The advisory lock makes every
    other process that starts now wait here, then find the work done."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise Conflict(
                f"the event store is at schema version {current}, newer than this aico "
                f"({SCHEMA_VERSION}): upgrade aico"
            )
        pending = [m for m in MIGRATIONS if m[0] > current]
        for _number, statements, _ in pending:
            for statement in filter(str.strip, statements.split(";")):
                db.execute(statement)
        if current and any(rebuild for *_, rebuild in pending):
            _rebuild(db)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )


def _configure(db: psycopg.Connection) -> None:
    """Each pooled connection waits at most LOCK_PATIENCE for a lock, then fails: a process on a
    host that vanished mid-append holds its task's lock until the server notices (TCP keepalive,
    two hours by default), and no one else should hang that long."""
    db.execute("SELECT set_config('lock_timeout', %s, false)", (LOCK_PATIENCE,))


def _who(user: str, channel: str) -> tuple[str, tuple[str, ...]]:
    if user:
        return "WHERE user_id = %s", (user,)
    if channel:
        return "WHERE channel = %s", (channel,)
    return "", ()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load_view(state: dict[str, Any]) -> TaskView:
    raw = dict(state)
    raw["status"] = TaskStatus(raw["status"])
    return TaskView(**raw)
