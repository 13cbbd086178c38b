import threading

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
