"""Processes that start at once upgrade the store's schema once: one does it while the others
wait (README, "Running it"), on every backend.

Each process is a real one (`python -c`), opening the store by URL as `AICO_DB_URL` names it. They
are held at a gate after their imports and let go together, so their migrations overlap.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import psycopg

from aico.bootstrap import open_store
from core.adapters import postgres_store, sqlite_store
from core.domain import events
from core.domain.task import TaskStatus

PROCESSES = 2
OPEN_AND_APPEND = """
import sys
from aico.bootstrap import open_store
from core.domain import events

url, name = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()  # the gate: every process opens the store at the same moment
store = open_store(url)
store.append(name, events.SUBMITTED, {"user": "U1", "channel": "C1", "prompt": name}, name + ":s")
print(store.schema_version(), flush=True)
store.close()
"""


def start_together(url: str, names: list[str]) -> list[tuple[int, str, str]]:
    """Run OPEN_AND_APPEND in one process per name, let go at once; (code, stdout, stderr)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_APPEND, url, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        for proc in procs:  # every one has done its imports and waits at the gate
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outcomes = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            outcomes.append((proc.returncode, out.strip(), err))
        return outcomes
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_all_started_on_the_latest_schema(url: str, outcomes, names: list[str]) -> None:
    for code, out, err in outcomes:
        assert code == 0, f"a process failed to open the store:\n{err}"
        assert "already exists" not in err
        assert out == str(sqlite_store.SCHEMA_VERSION)
    store = open_store(url)
    try:
        assert store.schema_version() == sqlite_store.SCHEMA_VERSION
        assert sorted(t.id for t in store.tasks_in(TaskStatus.SUBMITTED)) == sorted(names)
    finally:
        store.close()


def test_both_backends_are_at_the_same_schema_version():
    assert postgres_store.SCHEMA_VERSION == sqlite_store.SCHEMA_VERSION


def test_processes_starting_at_once_on_a_fresh_store_create_the_schema_once(store_url):
    # Given a store that does not exist yet (an empty file name, an empty database)
    names = [f"p{i}" for i in range(PROCESSES)]

    # When several processes start at the same moment and each appends an event
    outcomes = start_together(store_url, names)

    # Then every one started (no one ran into another's half-made schema), the schema is the
    # latest and each one's event is in
    assert_all_started_on_the_latest_schema(store_url, outcomes, names)


# -- an old store, upgraded by processes that start at once ------------------------------------

OLD_EVENTS = [
    ("old", 1, events.SUBMITTED, {"user": "U1", "channel": "C1", "prompt": "from v1"}),
    ("old", 2, events.COMPLETED, {"usage": {"input_tokens": 3, "output_tokens": 9}}),
]


def write_version_1_sqlite(url: str) -> None:
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    db.executescript(
        sqlite_store._V1 + "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for task_id, version, type_, data in OLD_EVENTS:
        db.execute(
            "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (f"{task_id}:{version}", task_id, version, type_, json.dumps(data), time.time()),
        )
    db.commit()
    db.close()


def write_version_1_postgres(url: str) -> None:
    with psycopg.connect(url) as db:
        for statement in filter(str.strip, postgres_store._V1.split(";")):
            db.execute(statement)
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        for task_id, version, type_, data in OLD_EVENTS:
            db.execute(
                "INSERT INTO events (event_id, aggregate_id, version, type, data, at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (f"{task_id}:{version}", task_id, version, type_, json.dumps(data), time.time()),
            )


def test_processes_starting_at_once_on_an_old_store_upgrade_it_once(store_url):
    # Given a store written by the first version of aico: one task done, no statistics yet
    if store_url.startswith("sqlite"):
        write_version_1_sqlite(store_url)
    else:
        write_version_1_postgres(store_url)
    names = [f"p{i}" for i in range(PROCESSES)]

    # When several processes of this version start at the same moment
    outcomes = start_together(store_url, names)

    # Then they all started on the latest schema, and the old task is counted once in the
    # statistics the upgrade derived from its events
    assert_all_started_on_the_latest_schema(store_url, outcomes, names)
    store = open_store(store_url)
    try:
        assert store.task("old").status is TaskStatus.DONE
        summary = store.summary(time.time() - 3600)
        assert (summary.done, summary.tokens_out) == (1, 9)
    finally:
        store.close()


def test_four_processes_at_once_still_create_the_schema_once(store_url):
    names = [f"q{i}" for i in range(4)]
    assert_all_started_on_the_latest_schema(store_url, start_together(store_url, names), names)
