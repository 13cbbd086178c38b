"""What the SQL event stores share, written once: the schema and its migrations, the migration
runner, the SQL of every write and read, the recording of an event and its projections, and the
rebuild. The SQLite and PostgreSQL adapters keep only what differs: connections, locking,
transactions and backup.

The dialects differ in a few words, kept as data in a `Dialect`: each statement here is a
template, written with `?` for a parameter and `{name}` for a dialect's word, and is rendered
once per dialect at import (`Sql`). The projections themselves are pure functions
(core.domain.projections); this module turns their changes into rows.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from core.domain import fastjson
from core.domain.budget import AGGREGATE as BUDGET_AGGREGATE
from core.domain.events import Event, TaskView, apply
from core.domain.pool import SYSTEM as SYSTEM_AGGREGATES
from core.domain.pool import Record
from core.domain.projections import (
    CLAUDE,
    COUNTERS,
    SPEND,
    STATS,
    TOTALS,
    Changes,
    Replay,
    budget,
)
from core.domain.projections import changes as changes_of
from core.domain.stats import Activity, Spender, Summary, day_of, slot_of
from core.domain.task import TaskStatus
from core.errors import Conflict

T = TypeVar("T")


class Connection(Protocol):
    """What is used of a DB-API connection: sqlite3's and psycopg's both have it."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...

    def cursor(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    """The words in which one database's SQL differs from another's."""

    name: str
    placeholder: str  # a parameter: ? | %s
    seq: str  # the type of events.seq, the order in which events were recorded
    real: str  # a float column
    bigint: str  # a counter column
    json: str  # a JSON column (kept as the text written)
    json_value: str  # a JSON parameter (? for one, as a template)
    user: str  # the column of a task's user (`user` is reserved in PostgreSQL)
    thread_ts: str  # a task row's thread, from its state
    mode: str  # a task row's mode ("", "code", "project"), from its state
    times: str  # a task row's started_at and finished_at, from its state (two columns)
    without_rowid: str  # a table option for tables that are only their primary key
    decode: Callable[[Any], Any]  # a JSON column's value as read -> a new dict (or list)
    lock: str = ""  # SELECT taking a write lock on one aggregate (one parameter), if needed
    lock_events: str = ""  # what a rebuild runs first so no event is recorded meanwhile
    replay_cursor: Callable[[Any], Any] = lambda db: db.cursor()  # what streams the events

    def render(self, template: str) -> str:
        words = {
            "seq": self.seq,
            "real": self.real,
            "bigint": self.bigint,
            "json": self.json,
            "json_value": self.json_value,
            "user": self.user,
            "thread_ts": self.thread_ts,
            "mode": self.mode,
            "without_rowid": self.without_rowid,
        }
        return template.format(**words).replace("?", self.placeholder)


# -- the schema -------------------------------------------------------------------------------

_V1 = """
CREATE TABLE IF NOT EXISTS events (
    seq {seq},
    event_id TEXT NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    data {json} NOT NULL,
    at {real} NOT NULL,
    UNIQUE (aggregate_id, version)
);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    {user} TEXT NOT NULL,
    channel TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    state {json} NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, created_at);
"""
_V2 = """
CREATE INDEX tasks_by_user ON tasks ({user}, created_at);
CREATE INDEX tasks_by_channel ON tasks (channel, created_at);
CREATE INDEX tasks_by_created ON tasks (created_at);
CREATE TABLE stats (
    slot {bigint} NOT NULL,
    outcome TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    {user} TEXT NOT NULL,
    channel TEXT NOT NULL,
    tasks {bigint} NOT NULL,
    tokens_in {bigint} NOT NULL,
    tokens_out {bigint} NOT NULL,
    cost {real} NOT NULL,
    PRIMARY KEY (slot, outcome, bucket, {user}, channel)
);
CREATE INDEX stats_by_user ON stats ({user}, slot);
CREATE INDEX stats_by_channel ON stats (channel, slot);
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    state {json} NOT NULL,
    seen_at {real} NOT NULL
);
"""
_V3 = """
CREATE TABLE budgets (
    scope TEXT NOT NULL,
    who TEXT NOT NULL,
    day TEXT NOT NULL,
    usd {real} NOT NULL,
    PRIMARY KEY (scope, who, day)
);
"""
# Everyone's counters, without the user and channel: what /aico status reads (a day of them is
# at most 288 slots x the buckets used, however many users and channels there are).
_V4 = """
CREATE TABLE stats_all (
    slot {bigint} NOT NULL,
    outcome TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    tasks {bigint} NOT NULL,
    tokens_in {bigint} NOT NULL,
    tokens_out {bigint} NOT NULL,
    cost {real} NOT NULL,
    PRIMARY KEY (slot, outcome, bucket)
){without_rowid};
"""
# A conversation is the tasks of one thread: found by the thread a reply comes in.
_V5 = """
CREATE INDEX tasks_by_thread ON tasks (channel, {thread_ts}, created_at);
"""
# Each user's and channel's day (tasks, cost): the top spenders in /aico status.
_V6 = """
CREATE TABLE spend (
    day TEXT NOT NULL,
    scope TEXT NOT NULL,
    who TEXT NOT NULL,
    tasks {bigint} NOT NULL,
    cost {real} NOT NULL,
    PRIMARY KEY (day, scope, who)
){without_rowid};
"""
# Done tasks by the bucket of Claude's time for their answer: the Claude latency of /metrics.
_V7 = """
CREATE TABLE claude_all (
    slot {bigint} NOT NULL,
    bucket INTEGER NOT NULL,
    tasks {bigint} NOT NULL,
    PRIMARY KEY (slot, bucket)
){without_rowid};
"""
# (version, statements, rebuild the projections afterwards); the same numbers on every backend
MIGRATIONS: list[tuple[int, str, bool]] = [
    (1, _V1, False),
    (2, _V2, True),
    (3, _V3, False),
    (4, _V4, True),
    (5, _V5, False),
    (6, _V6, True),
    (7, _V7, True),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
PROJECTIONS = ("tasks", *COUNTERS, "budgets")  # what a rebuild derives again

_COLUMNS = "aggregate_id, type, data, at, version, event_id"  # an Event's fields, in order
_ADD_COUNTS = (
    " tasks = {table}.tasks + excluded.tasks,"
    " tokens_in = {table}.tokens_in + excluded.tokens_in,"
    " tokens_out = {table}.tokens_out + excluded.tokens_out, cost = {table}.cost + excluded.cost"
)
_SUMS = (
    # SUM of a BIGINT is a NUMERIC in PostgreSQL (a Decimal in Python): back to BIGINT.
    "SELECT outcome, bucket, CAST(SUM(tasks) AS BIGINT), CAST(SUM(tokens_in) AS BIGINT),"
    " CAST(SUM(tokens_out) AS BIGINT), SUM(cost) FROM {table} {where} GROUP BY outcome, bucket"
)


class Sql:
    """Every statement of the store, rendered for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        q = dialect.render
        self.migrations = [(n, q(ddl), rebuild) for n, ddl, rebuild in MIGRATIONS]
        self.create_meta = (
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        self.version = "SELECT value FROM meta WHERE key = 'schema_version'"
        self.set_version = q(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        # -- writes
        self.lock = q(dialect.lock)
        self.seen_and_state = q(
            "SELECT EXISTS (SELECT 1 FROM events WHERE event_id = ?),"
            " (SELECT state FROM tasks WHERE id = ?)"
        )
        self.next_version = q(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM events WHERE aggregate_id = ?"
        )
        self.record = q(
            "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
            " VALUES (?, ?, ?, ?, {json_value}, ?)"
        )
        self.write_task = q(
            "INSERT INTO tasks (id, status, version, {user}, channel, created_at, updated_at,"
            " state) VALUES (?, ?, ?, ?, ?, ?, ?, {json_value})"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
            " version = excluded.version, {user} = excluded.{user}, channel = excluded.channel,"
            " created_at = excluded.created_at, updated_at = excluded.updated_at,"
            " state = excluded.state"
        )
        self.add = {
            STATS: q(
                "INSERT INTO stats (slot, outcome, bucket, {user}, channel, tasks, tokens_in,"
                " tokens_out, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (slot, outcome, bucket, {user}, channel) DO UPDATE SET"
                + _ADD_COUNTS.replace("{table}", "stats")
            ),
            TOTALS: q(
                "INSERT INTO stats_all (slot, outcome, bucket, tasks, tokens_in, tokens_out, cost)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (slot, outcome, bucket) DO UPDATE SET"
                + _ADD_COUNTS.replace("{table}", "stats_all")
            ),
            SPEND: q(
                "INSERT INTO spend (day, scope, who, tasks, cost) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (day, scope, who) DO UPDATE SET"
                " tasks = spend.tasks + excluded.tasks, cost = spend.cost + excluded.cost"
            ),
            CLAUDE: q(
                "INSERT INTO claude_all (slot, bucket, tasks) VALUES (?, ?, ?)"
                " ON CONFLICT (slot, bucket) DO UPDATE SET"
                " tasks = claude_all.tasks + excluded.tasks"
            ),
        }
        self.set_budget = q(
            "INSERT INTO budgets (scope, who, day, usd) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (scope, who, day) DO UPDATE SET usd = excluded.usd"
        )
        self.heartbeat = q(
            "INSERT INTO workers (id, state, seen_at) VALUES (?, {json_value}, ?)"
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, seen_at = excluded.seen_at"
        )
        self.all_events = f"SELECT {_COLUMNS} FROM events ORDER BY seq"
        # -- reads
        self.budget = q("SELECT usd FROM budgets WHERE scope = ? AND who = ? AND day = ?")
        self.task = q("SELECT state FROM tasks WHERE id = ?")
        self.task_by_event = q(
            "SELECT t.state FROM events e JOIN tasks t ON t.id = e.aggregate_id"
            " WHERE e.event_id = ?"
        )
        self.events = q(f"SELECT {_COLUMNS} FROM events WHERE aggregate_id = ? ORDER BY version")
        self.tasks_in = q("SELECT state FROM tasks WHERE status = ? ORDER BY created_at")
        self.tasks_in_mode = q(
            "SELECT state FROM tasks WHERE status = ? AND {mode} = ? ORDER BY created_at"
        )
        self.top_spenders = q(
            "SELECT who, tasks, cost FROM spend WHERE day = ? AND scope = ?"
            " ORDER BY cost DESC, tasks DESC LIMIT ?"
        )
        self.thread = q(
            "SELECT state FROM tasks WHERE channel = ? AND {thread_ts} = ? ORDER BY created_at"
        )
        # by whom: everyone's (""), one user's, one channel's
        who = {"": "", "user": "WHERE {user} = ?", "channel": "WHERE channel = ?"}
        self.recent = {
            k: q(f"SELECT state FROM tasks {w} ORDER BY created_at DESC LIMIT ?")
            for k, w in who.items()
        }
        self.summary = {
            k: q(
                _SUMS.format(
                    table="stats" if w else "stats_all",
                    where=f"{w} AND slot >= ?" if w else "WHERE slot >= ?",
                )
            )
            for k, w in who.items()
        }
        self.workers = q("SELECT id, state, seen_at FROM workers WHERE seen_at >= ? ORDER BY id")
        self.tail = q(
            "SELECT type, data, at, version FROM events WHERE aggregate_id = ?"
            " ORDER BY version DESC LIMIT ?"
        )
        self.task_counts = "SELECT status, COUNT(*) FROM tasks GROUP BY status"
        self.forget_workers = q("DELETE FROM workers WHERE seen_at < ?")
        # statistics: the 5-minute counters older than a slot, and the days older than a day
        self.forget_stats = [
            q(f"DELETE FROM {t} WHERE slot < ?") for t in ("stats", "stats_all", "claude_all")
        ]
        self.claude_times = q(
            "SELECT bucket, CAST(SUM(tasks) AS BIGINT) FROM claude_all WHERE slot >= ?"
            " GROUP BY bucket"
        )
        self.forget_spend = q("DELETE FROM spend WHERE day < ?")
        self.arrivals = q("SELECT created_at FROM tasks WHERE created_at >= ? ORDER BY created_at")
        # A task's first attempt starts within minutes of its arrival: the window of tasks done
        # lately is found through the (status, created_at) index, an hour back at most.
        self.done_since = q(
            f"SELECT {dialect.times} FROM tasks"
            " WHERE status = ? AND created_at >= ? AND updated_at >= ?"
        )


# -- inside a write transaction ---------------------------------------------------------------


def append_event(
    db: Connection,
    sql: Sql,
    task_id: str,
    type_: str,
    data: dict[str, Any],
    payload: str,
    event_id: str,
    expected_version: int | None,
    now: Callable[[], float],
) -> TaskView | None:
    """Record one event of a task (`payload` is `data` as JSON) stamped `now()`, and project it;
    None if `event_id` was recorded before."""
    if sql.lock:
        db.execute(sql.lock, (task_id,))
    seen, state = db.execute(sql.seen_and_state, (event_id, task_id)).fetchone()
    if seen:
        return None
    view = load_view(sql.dialect, state) if state is not None else None
    current = view.version if view else 0
    if expected_version not in (None, current):
        raise Conflict(f"task {task_id} is at version {current}, not {expected_version}")
    event = Event(task_id, type_, data, now(), current + 1)
    new = apply(view, event)
    db.execute(sql.record, (event_id, task_id, event.version, type_, payload, event.at))
    project(db, sql, changes_of(view, new))
    return new


def project(db: Connection, sql: Sql, changes: Changes) -> None:
    """One event's changes to the projections."""
    db.execute(sql.write_task, task_row(changes.task))
    for increment in changes.increments:
        db.execute(sql.add[increment.table], increment.row)


def record_budget(db: Connection, sql: Sql, data: dict[str, Any]) -> None:
    """A budget_set event (the next version of its day's aggregate) and its projection."""
    aggregate = f"{BUDGET_AGGREGATE}{data['scope']}:{data['who']}:{data['day']}"
    if sql.lock:
        db.execute(sql.lock, (aggregate,))
    (version,) = db.execute(sql.next_version, (aggregate,)).fetchone()
    event_id = f"{aggregate}:{version}"
    db.execute(sql.record, (event_id, aggregate, version, "budget_set", dumps(data), time.time()))
    db.execute(sql.set_budget, budget(data).row)


def record_pool(db: Connection, sql: Sql, aggregate: str, type_: str, payload: str, at: float):
    """The next event of a system aggregate (core.domain.pool.SYSTEM); returns its version."""
    if sql.lock:
        db.execute(sql.lock, (aggregate,))
    (version,) = db.execute(sql.next_version, (aggregate,)).fetchone()
    event_id = f"{aggregate}:{version}"
    db.execute(sql.record, (event_id, aggregate, version, type_, payload, at))
    return int(version)


def rebuild(db: Connection, sql: Sql) -> int:
    """Derive every projection again from the events, replayed in the order they were recorded;
    returns the number of tasks."""
    if sql.dialect.lock_events:
        db.execute(sql.dialect.lock_events)
    for table in PROJECTIONS:
        db.execute(f"DELETE FROM {table}")
    replay, decode = Replay(), sql.dialect.decode
    with contextlib.closing(sql.dialect.replay_cursor(db)) as events:  # a stream, not a list
        events.execute(sql.all_events)
        for aggregate_id, type_, data, at, version, event_id in events:
            replay.feed(aggregate_id, type_, decode(data), at, version, event_id)
    writes = db.cursor()
    if replay.views:
        writes.executemany(sql.write_task, [task_row(v) for v in replay.views.values()])
    for table in COUNTERS:
        if rows := [increment.row for increment in replay.increments(table)]:
            writes.executemany(sql.add[table], rows)
    if replay.budgets:
        writes.executemany(sql.set_budget, [b.row for b in replay.budgets.values()])
    return len(replay.views)


def migrate(db: Connection, sql: Sql) -> None:
    """Bring the schema up to SCHEMA_VERSION, inside the transaction (and lock) the caller holds;
    a migration that adds a projection derives it from the events."""
    db.execute(sql.create_meta)
    current = schema_version(db, sql)
    if current > SCHEMA_VERSION:
        raise Conflict(
            f"the event store is at schema version {current}, newer than this aico "
            f"({SCHEMA_VERSION}): upgrade aico"
        )
    pending = [m for m in sql.migrations if m[0] > current]
    for _number, statements, _ in pending:
        for statement in filter(str.strip, statements.split(";")):
            db.execute(statement)
    if current and any(rebuild for *_, rebuild in pending):
        rebuild(db, sql)
    db.execute(sql.set_version, (str(SCHEMA_VERSION),))


def schema_version(db: Connection, sql: Sql) -> int:
    row = db.execute(sql.version).fetchone()
    return int(row[0]) if row else 0


# -- rows -------------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    return fastjson.dumps(value)


def task_row(v: TaskView) -> tuple[Any, ...]:
    state = dumps(vars(v))
    return (v.id, v.status.value, v.version, v.user, v.channel, v.created_at, v.updated_at, state)


def load_view(dialect: Dialect, state: Any) -> TaskView:
    raw = dialect.decode(state)
    raw["status"] = TaskStatus(raw["status"])
    return TaskView(**raw)


# -- the API both stores share ----------------------------------------------------------------


class SqlEventStore(ABC):
    """The event store's API, on any dialect: a store gives its statements (`_sql`) and how it
    reads (`_rows`), runs a write transaction (`_transact`), one write statement alone
    (`_execute`) and an append (`_append_one`)."""

    _sql: Sql

    @abstractmethod
    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The rows of one read."""

    @abstractmethod
    def _transact(self, run: Callable[[Any], T]) -> T:
        """`run(db)` in one write transaction: committed if it returns, rolled back if not."""

    @abstractmethod
    def _execute(self, sql: str, args: tuple[Any, ...]) -> None:
        """One write statement, committed on its own."""

    @abstractmethod
    def _append_one(self, *args: Any) -> TaskView | None:
        """append_event(db, sql, *args, now) in a write transaction, where args are (task_id,
        type_, data, payload, event_id, expected_version)."""

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
        before (an idempotent replay changes nothing). Returns once the event is durable.
        `expected_version`: raise Conflict unless the task is still at that version."""
        event_id = event_id or f"{task_id}:{type_}:{time.time_ns()}"
        payload = dumps(data)  # data that is not JSON fails here, before any SQL
        return self._append_one(task_id, type_, data, payload, event_id, expected_version)

    def set_budget(self, scope: str, who: str, day: str, usd: float, by: str) -> None:
        """Today's limit for a user or a channel (`scope`), set by an admin; an event like any."""
        data = {"scope": scope, "who": who, "day": day, "usd": usd, "by": by}
        self._transact(lambda db: record_budget(db, self._sql, data))

    def record(self, aggregate_id: str, type_: str, data: dict[str, Any]) -> Record:
        """The next event of one of the system's aggregates (core.domain.pool.SYSTEM): a leader
        elected, a scaling decision, a pin, a check's change, an alert; an event like any, but it
        changes no task."""
        if not aggregate_id.startswith(SYSTEM_AGGREGATES):
            raise ValueError(f"{aggregate_id!r} is not one of the system's aggregates")
        payload, at = dumps(data), time.time()
        version = self._transact(
            lambda db: record_pool(db, self._sql, aggregate_id, type_, payload, at)
        )
        return Record(aggregate_id, type_, data, at, version)

    def heartbeat(self, worker_id: str, state: dict[str, Any]) -> None:
        """A worker's live state (busy slots, breaker); not an event: it is replaced each time."""
        self._execute(self._sql.heartbeat, (worker_id, dumps(state), time.time()))

    def maintain(
        self, heartbeats_older_than: float, stats_older_than: float = 0.0
    ) -> dict[str, int]:
        """Retention: heartbeats not renewed since `heartbeats_older_than` are removed (workers
        long gone), and the statistics counters of before `stats_older_than` (0: all kept); a
        backend may do more (SQLite checkpoints its WAL). Events are never removed: they are
        the history, and `aico db rebuild` derives every counter again from them."""

        def forget(db: Any) -> dict[str, int]:
            gone = {
                "heartbeats_removed": db.execute(
                    self._sql.forget_workers, (heartbeats_older_than,)
                ).rowcount
            }
            if stats_older_than > 0:
                slot, day = slot_of(stats_older_than), day_of(stats_older_than)
                rows = sum(db.execute(sql, (slot,)).rowcount for sql in self._sql.forget_stats)
                rows += db.execute(self._sql.forget_spend, (day,)).rowcount
                gone["statistics_rows_removed"] = rows
            return {k: max(0, int(v or 0)) for k, v in gone.items()}

        return {**self._transact(forget), **self._housekeep()}

    def _housekeep(self) -> dict[str, int]:
        return {}

    def rebuild(self) -> int:
        """Derive every projection again from the events, in one transaction; returns the number
        of tasks."""
        return self._transact(lambda db: rebuild(db, self._sql))

    # -- reading --------------------------------------------------------------------------

    def budget(self, scope: str, who: str, day: str) -> float | None:
        """The limit an admin set for `who` on `day`, if any."""
        rows = self._rows(self._sql.budget, (scope, who, day))
        return float(rows[0][0]) if rows else None

    def task(self, task_id: str) -> TaskView | None:
        return self._view(self._sql.task, (task_id,))

    def task_by_event(self, event_id: str) -> TaskView | None:
        return self._view(self._sql.task_by_event, (event_id,))

    def events(self, task_id: str) -> list[Event]:
        decode = self._sql.dialect.decode
        rows = self._rows(self._sql.events, (task_id,))
        return [Event(r[0], r[1], decode(r[2]), r[3], r[4], r[5]) for r in rows]

    def tasks_in(self, status: TaskStatus, mode: str = "") -> list[TaskView]:
        if mode:  # filtered by the database: a backlog of tasks is not read to find projects
            return self._views(self._sql.tasks_in_mode, (status.value, mode))
        return self._views(self._sql.tasks_in, (status.value,))

    def top_spenders(self, day: str, scope: str, limit: int = 3) -> list[Spender]:
        """The users (scope "user") or channels ("channel") that spent most on `day`."""
        rows = self._rows(self._sql.top_spenders, (day, scope, limit))
        return [Spender(r[0], int(r[1]), float(r[2])) for r in rows]

    def thread(self, channel: str, thread_ts: str) -> list[TaskView]:
        """The tasks of one thread, oldest first: a conversation's turns."""
        return self._views(self._sql.thread, (channel, thread_ts))

    def recent(self, limit: int, user: str = "", channel: str = "") -> list[TaskView]:
        """The latest tasks, newest first: everyone's, or one user's, or one channel's."""
        by, args = _by(user, channel)
        return self._views(self._sql.recent[by], (*args, limit))

    def summary(self, since: float, user: str = "", channel: str = "") -> Summary:
        """Tasks that ended since `since`: everyone's, or one user's, or one channel's."""
        by, args = _by(user, channel)
        summary = Summary()
        for row in self._rows(self._sql.summary[by], (*args, slot_of(since))):
            summary.add(*row)
        return summary

    def workers(self, seen_since: float) -> list[dict[str, Any]]:
        """The state of every worker heard from since `seen_since`."""
        decode = self._sql.dialect.decode
        rows = self._rows(self._sql.workers, (seen_since,))
        return [{"id": r[0], **decode(r[1]), "seen_at": r[2]} for r in rows]

    def latest(self, aggregate_id: str) -> Record | None:
        """The latest event of a system aggregate, or None before its first."""
        last = self.tail(aggregate_id, 1)
        return last[0] if last else None

    def tail(self, aggregate_id: str, limit: int) -> list[Record]:
        """The last `limit` events of a system aggregate, oldest first."""
        decode = self._sql.dialect.decode
        rows = self._rows(self._sql.tail, (aggregate_id, limit))
        return [Record(aggregate_id, r[0], decode(r[1]), r[2], r[3]) for r in reversed(rows)]

    def claude_times(self, since: float) -> dict[int, int]:
        """Done tasks since `since` by the bucket of Claude's time for their answer (bucket ->
        tasks; core.domain.stats.bucket_seconds gives a bucket's upper bound)."""
        rows = self._rows(self._sql.claude_times, (slot_of(since),))
        return {int(r[0]): int(r[1]) for r in rows}

    def task_counts(self) -> dict[str, int]:
        """How many tasks are in each status now (every status named, 0 if none)."""
        counts = {status.value: 0 for status in TaskStatus}
        counts.update({str(r[0]): int(r[1]) for r in self._rows(self._sql.task_counts, ())})
        return counts

    def activity(self, since: float) -> Activity:
        """Tasks that arrived since `since` (their arrival times, oldest first), and the service
        times of those done since then: what the scaling policy reads of the load."""
        arrivals = [float(r[0]) for r in self._rows(self._sql.arrivals, (since,))]
        # Only the two times of each task, read by the database: not the whole view of every
        # task done in the window (thousands a minute at full speed).
        done = self._rows(self._sql.done_since, (TaskStatus.DONE.value, since - 3600, since))
        service = [
            float(finished) - float(started)
            for started, finished in done
            if started and finished is not None and float(finished) >= float(started)
        ]
        return Activity(arrivals, service)

    def schema_version(self) -> int:
        rows = self._rows(self._sql.version, ())
        return int(rows[0][0]) if rows else 0

    def _view(self, sql: str, args: tuple[Any, ...]) -> TaskView | None:
        rows = self._rows(sql, args)
        return load_view(self._sql.dialect, rows[0][0]) if rows else None

    def _views(self, sql: str, args: tuple[Any, ...]) -> list[TaskView]:
        dialect = self._sql.dialect
        return [load_view(dialect, r[0]) for r in self._rows(sql, args)]


def _by(user: str, channel: str) -> tuple[str, tuple[str, ...]]:
    if user:
        return "user", (user,)
    if channel:
        return "channel", (channel,)
    return "", ()
