"""What is particular to the SQLite store (tests/contract has what every backend does):
migrations from older schemas, the backup, and surviving kill -9 of a writer."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from core.adapters.sqlite_store import _V1, SCHEMA_VERSION, SqliteEventStore
from core.domain import events
from core.domain.task import TaskStatus
from core.errors import Conflict

SUBMIT = {"user": "U1", "channel": "C1", "prompt": "p"}


def test_a_version_1_store_is_migrated_at_start_and_its_history_counted(tmp_path):
    # Given a store written by the first version of aico (no statistics yet)
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_V1 + "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    now = time.time()
    for version, (type_, data) in enumerate(
        [(events.SUBMITTED, SUBMIT), (events.COMPLETED, {"usage": {"output_tokens": 9}})], 1
    ):
        db.execute(
            "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
            " VALUES (?, 't1', ?, ?, ?, ?)",
            (f"t1:{version}", version, type_, json.dumps(data), now),
        )
    db.commit()
    db.close()

    # When this version opens it
    store = SqliteEventStore(path)

    # Then the schema is current and the old task shows in the projections
    assert store.schema_version() == SCHEMA_VERSION
    assert store.task("t1").status is TaskStatus.DONE
    summary = store.summary(now - 60)
    assert (summary.done, summary.tokens_out) == (1, 9)


def test_a_store_from_a_newer_aico_is_refused(tmp_path):
    path = tmp_path / "new.db"
    SqliteEventStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(Conflict, match="newer than this aico"):
        SqliteEventStore(path)


def test_a_backup_taken_while_writing_is_a_consistent_store(tmp_path):
    store = SqliteEventStore(tmp_path / "live.db")
    for i in range(50):
        store.append(f"t{i}", events.SUBMITTED, SUBMIT, f"t{i}:s")

    store.backup(tmp_path / "backups" / "copy.db")
    store.append("late", events.SUBMITTED, SUBMIT, "late:s")

    copy = SqliteEventStore(tmp_path / "backups" / "copy.db")
    assert len(copy.tasks_in(TaskStatus.SUBMITTED)) == 50
    assert copy.task("late") is None


WRITER = """
import sys
from pathlib import Path
import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
store = SqliteEventStore(Path(sys.argv[1]))
print("ready", flush=True)
i = 0
while True:
    task = f"t{i}"
    store.append(task, events.SUBMITTED, {"user": "U", "channel": "C", "prompt": "p"}, task)
    store.append(task, events.POSTED, {"thread_ts": "1.0"}, task + ":posted")
    i += 1
"""


def test_kill_9_of_a_writer_leaves_no_partial_event(tmp_path):
    # Given a process appending as fast as it can
    path = tmp_path / "aico.db"
    SqliteEventStore(path).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(0.5)

    # When it is killed in the middle of it
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)

    # Then the file is sound, and every task's row matches its last event exactly
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute(
            "SELECT t.version, (SELECT MAX(version) FROM events e WHERE e.aggregate_id = t.id)"
            " FROM tasks t"
        ).fetchall()
        events_without_task = db.execute(
            "SELECT COUNT(*) FROM events WHERE aggregate_id NOT IN (SELECT id FROM tasks)"
        ).fetchone()[0]
    assert len(rows) > 10, "the writer got going"
    assert all(row_version == last for row_version, last in rows)
    assert events_without_task == 0
    # and the write lock it may have held is free: the next writer commits
    after = SqliteEventStore(path)
    assert after.append("after", events.SUBMITTED, SUBMIT, "after") is not None
    after.close()


LATE_WRITER = """
import sys
from pathlib import Path

import core.adapters.sqlite_store as sqlite_store
from core.domain import events

sqlite_store.YIELD_AT_MOST = float(sys.argv[2])
store = sqlite_store.SqliteEventStore(Path(sys.argv[1]))
print("asking", flush=True)
store.append("worker", events.SUBMITTED, {"user": "U", "channel": "C", "prompt": "p"})
print("done", flush=True)
"""


def _first_writer_waits(path):
    """Stand for a first writer (the bot's) waiting for the write lock: byte 1 of the lock
    file held shared, as _Lane holds it while it waits."""
    import fcntl
    import os

    fd = os.open(path.with_name(path.name + "-lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_SH, 1, 1)
    return fd


def _late_writer(path, hold_back: float) -> subprocess.Popen:
    writer = subprocess.Popen(
        [sys.executable, "-c", LATE_WRITER, str(path), str(hold_back)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline().strip() == "asking"
    return writer


def test_the_other_writers_hold_back_while_the_bots_writer_waits_for_the_lock(tmp_path):
    import os

    path = tmp_path / "aico.db"
    store = SqliteEventStore(path)
    waiting = _first_writer_waits(path)

    # When a worker's writer has an event to commit while the bot's writer waits
    writer = _late_writer(path, hold_back=60.0)

    # Then it holds back until the bot's writer has the lock (here: stops waiting)
    time.sleep(0.5)
    assert store.task("worker") is None
    os.close(waiting)
    assert writer.stdout.readline().strip() == "done"
    assert writer.wait(10) == 0
    assert store.task("worker") is not None
    store.close()


def test_a_writer_holds_back_for_a_waiting_bot_only_so_long(tmp_path):
    import os

    path = tmp_path / "aico.db"
    store = SqliteEventStore(path)
    waiting = _first_writer_waits(path)

    # A bot's writer that waits for ever does not stop the others (they hold back 5 ms)
    writer = _late_writer(path, hold_back=0.005)

    assert writer.stdout.readline().strip() == "done"
    assert writer.wait(10) == 0
    assert store.task("worker") is not None
    os.close(waiting)
    store.close()
