import threading

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.task import TaskStatus

SUBMIT = {"user": "U1", "channel": "C1", "prompt": "p"}


def test_events_are_versioned_and_the_projection_follows(tmp_path):
    store = SqliteEventStore(tmp_path / "a.db")
    store.append("t1", events.SUBMITTED, SUBMIT, "t1:submitted")
    store.append("t1", events.POSTED, {"thread_ts": "1.2"}, "t1:posted")
    view = store.append("t1", events.QUEUED, {}, "t1:queued")
    assert view.status is TaskStatus.QUEUED and view.thread_ts == "1.2"
    assert [(e.version, e.type) for e in store.events("t1")] == [
        (1, "submitted"),
        (2, "posted"),
        (3, "queued"),
    ]
    assert [t.id for t in store.tasks_in(TaskStatus.QUEUED)] == ["t1"]


def test_replaying_an_event_id_changes_nothing(tmp_path):
    store = SqliteEventStore(tmp_path / "a.db")
    store.append("t1", events.SUBMITTED, SUBMIT, "t1:submitted")
    assert store.append("t1", events.SUBMITTED, SUBMIT, "t1:submitted") is None
    assert len(store.events("t1")) == 1


def test_a_second_process_sees_what_the_first_wrote(tmp_path):
    SqliteEventStore(tmp_path / "a.db").append("t1", events.SUBMITTED, SUBMIT, "t1:submitted")
    assert SqliteEventStore(tmp_path / "a.db").task("t1").prompt == "p"


def test_concurrent_writers_never_lose_or_duplicate_a_version(tmp_path):
    store = SqliteEventStore(tmp_path / "a.db")
    store.append("t1", events.SUBMITTED, SUBMIT, "t1:submitted")

    def write(n):
        for i in range(25):
            store.append("t1", events.POSTED, {"thread_ts": f"{n}.{i}"}, f"t1:{n}:{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = [e.version for e in store.events("t1")]
    assert versions == list(range(1, 102))


def test_a_bad_append_fails_alone_and_the_others_in_its_batch_are_kept(tmp_path):
    store = SqliteEventStore(tmp_path / "a.db")
    errors, threads = [], []

    def good(n):
        store.append(f"ok{n}", events.SUBMITTED, SUBMIT, f"ok{n}:submitted")

    def bad():
        try:
            store.append("ghost", events.STARTED, {}, "ghost:started")
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=good, args=(n,)) for n in range(20)]
    threads.insert(10, threading.Thread(target=bad))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1 and "no submitted event" in str(errors[0])
    assert len(store.tasks_in(TaskStatus.SUBMITTED)) == 20
    assert store.task("ghost") is None


def test_close_finishes_what_was_asked_and_the_file_has_it(tmp_path):
    store = SqliteEventStore(tmp_path / "a.db")
    store.append("t1", events.SUBMITTED, SUBMIT, "t1:submitted")
    store.close()
    assert SqliteEventStore(tmp_path / "a.db").task("t1").status is TaskStatus.SUBMITTED


def test_data_that_is_not_json_is_refused_without_stopping_the_writer(tmp_path):
    store = SqliteEventStore(tmp_path / "a.db")
    with pytest.raises(TypeError):
        store.append("t1", events.SUBMITTED, {**SUBMIT, "x": object()}, "t1:submitted")
    assert store.append("t2", events.SUBMITTED, SUBMIT, "t2:submitted").id == "t2"


def test_two_processes_writing_at_once_both_get_every_event_in(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; from core.adapters.sqlite_store import "
        "SqliteEventStore; from core.domain import events; s = SqliteEventStore(Path(sys.argv[1]));"
        "[s.append(f'{sys.argv[2]}{i}', events.SUBMITTED, {'user': 'U', 'channel': 'C', "
        "'prompt': 'p'}, f'{sys.argv[2]}{i}:s') for i in range(200)]"
    )
    path = tmp_path / "a.db"
    SqliteEventStore(path)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in "ab"]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert len(SqliteEventStore(path).tasks_in(TaskStatus.SUBMITTED)) == 400


def test_a_task_can_be_found_by_the_event_that_made_it(tmp_path):
    store = SqliteEventStore(tmp_path / "a.db")
    store.append("t1", events.SUBMITTED, SUBMIT, "intake:trigger-1")
    assert store.task_by_event("intake:trigger-1").id == "t1"
    assert store.task_by_event("intake:other") is None
