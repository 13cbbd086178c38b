"""What every event store backend must do: the same tests for each (see conftest.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from core.domain import events
from core.domain.stats import SLOT, day_of
from core.domain.task import TaskStatus
from core.errors import Conflict

SUBMIT = {"user": "U1", "channel": "C1", "prompt": "p"}


def submit(store, task_id: str, user: str = "U1", channel: str = "C1") -> None:
    data = {"user": user, "channel": channel, "prompt": f"prompt of {task_id}"}
    store.append(task_id, events.SUBMITTED, data, f"{task_id}:submitted")


def finish(store, task_id: str, outcome: str = events.COMPLETED, **data) -> None:
    store.append(task_id, outcome, data, f"{task_id}:{outcome}")


# -- appending --------------------------------------------------------------------------------


def test_events_are_versioned_and_the_projection_follows(store):
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
    assert store.task("t1") == view


def test_tasks_in_a_status_can_be_narrowed_to_one_mode_by_the_store(store):
    for task_id, mode in (("t1", ""), ("t2", "project"), ("t3", "code"), ("t4", "project")):
        data = {**SUBMIT, **({"mode": mode} if mode else {})}
        store.append(task_id, events.SUBMITTED, data, f"{task_id}:submitted")
    store.append("t4", events.FAILED, {"error": "no"}, "t4:failed")

    assert [t.id for t in store.tasks_in(TaskStatus.SUBMITTED, mode="project")] == ["t2"]
    assert [t.id for t in store.tasks_in(TaskStatus.SUBMITTED, mode="code")] == ["t3"]
    assert [t.id for t in store.tasks_in(TaskStatus.SUBMITTED)] == ["t1", "t2", "t3"]


def test_replaying_an_event_id_changes_nothing(store):
    store.append("t1", events.SUBMITTED, SUBMIT, "t1:submitted")
    assert store.append("t1", events.SUBMITTED, SUBMIT, "t1:submitted") is None
    assert len(store.events("t1")) == 1


def test_a_task_can_be_found_by_the_event_that_made_it(store):
    store.append("t1", events.SUBMITTED, SUBMIT, "intake:trigger-1")
    assert store.task_by_event("intake:trigger-1").id == "t1"
    assert store.task_by_event("intake:other") is None


def test_an_append_can_require_the_version_it_read(store):
    submit(store, "t1")
    store.append("t1", events.POSTED, {"thread_ts": "1.2"}, expected_version=1)
    with pytest.raises(Conflict):
        store.append("t1", events.QUEUED, {}, expected_version=1)
    assert [e.type for e in store.events("t1")] == ["submitted", "posted"]


def test_another_process_sees_what_one_wrote(store, reopen):
    submit(store, "t1")
    assert reopen().task("t1").prompt == "prompt of t1"


def test_concurrent_writers_never_lose_or_duplicate_a_version(store):
    submit(store, "t1")

    def write(n):
        for i in range(25):
            store.append("t1", events.POSTED, {"thread_ts": f"{n}.{i}"}, f"t1:{n}:{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.version for e in store.events("t1")] == list(range(1, 102))


def test_a_bad_append_fails_alone_and_the_others_are_kept(store):
    errors = []

    def good(n):
        submit(store, f"ok{n}")

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


def test_data_that_is_not_json_is_refused_and_the_store_goes_on(store):
    with pytest.raises(TypeError):
        store.append("t1", events.SUBMITTED, {**SUBMIT, "x": object()}, "t1:submitted")
    assert store.append("t2", events.SUBMITTED, SUBMIT, "t2:submitted").id == "t2"


def test_close_finishes_what_was_asked(store, reopen):
    submit(store, "t1")
    store.close()
    assert reopen().task("t1").status is TaskStatus.SUBMITTED


def test_two_processes_writing_at_once_both_get_every_event_in(store, store_url, reopen):
    script = (
        "import sys; from aico.bootstrap import open_store; from core.domain import events;"
        "s = open_store(sys.argv[1]);"
        "[s.append(f'{sys.argv[2]}{i}', events.SUBMITTED, {'user': 'U', 'channel': 'C', "
        "'prompt': 'p'}, f'{sys.argv[2]}{i}:s') for i in range(200)]; s.close()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, store_url, n]) for n in "ab"]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert len(reopen().tasks_in(TaskStatus.SUBMITTED)) == 400


# -- history ----------------------------------------------------------------------------------


def test_recent_tasks_come_newest_first_for_everyone_a_user_or_a_channel(store):
    for task_id, user, channel in [("a", "U1", "C1"), ("b", "U2", "C1"), ("c", "U1", "C2")]:
        submit(store, task_id, user, channel)
        time.sleep(0.002)

    assert [t.id for t in store.recent(10)] == ["c", "b", "a"]
    assert [t.id for t in store.recent(1)] == ["c"]
    assert [t.id for t in store.recent(10, user="U1")] == ["c", "a"]
    assert [t.id for t in store.recent(10, channel="C1")] == ["b", "a"]


# -- statistics -------------------------------------------------------------------------------


def test_the_summary_counts_outcomes_tokens_and_cost(store):
    usage = {"input_tokens": 100, "output_tokens": 20}
    for i in range(3):
        submit(store, f"d{i}")
        finish(store, f"d{i}", usage=usage, cost_usd=0.5)
    submit(store, "f1")
    finish(store, "f1", events.FAILED, error="boom")
    submit(store, "open")

    summary = store.summary(since=time.time() - 3600)

    assert (summary.done, summary.failed, summary.cancelled) == (3, 1, 0)
    assert summary.success_rate == 0.75
    assert (summary.tokens_in, summary.tokens_out) == (300, 60)
    assert summary.cost == pytest.approx(1.5)
    assert 0 < summary.percentile(0.5) <= summary.percentile(0.95) < 10


def test_the_summary_is_for_a_user_or_a_channel_and_a_window(store):
    submit(store, "a", "U1", "C1")
    finish(store, "a", cost_usd=1.0)
    submit(store, "b", "U2", "C2")
    finish(store, "b", cost_usd=2.0)

    assert store.summary(time.time() - 60, user="U1").cost == pytest.approx(1.0)
    assert store.summary(time.time() - 60, channel="C2").cost == pytest.approx(2.0)
    assert store.summary(time.time() + 2 * SLOT).finished == 0


def test_a_late_event_after_the_end_is_not_counted_twice(store):
    submit(store, "a")
    finish(store, "a", cost_usd=1.0)
    store.append("a", events.STARTED, {"generation": 0}, "a:late")
    assert store.summary(time.time() - 60).done == 1


def test_rebuilding_derives_the_same_projections(store, reopen):
    submit(store, "a")
    finish(store, "a", usage={"input_tokens": 5, "output_tokens": 7}, cost_usd=0.25)
    submit(store, "b")
    before = ([store.task(t) for t in "ab"], store.summary(time.time() - 60))

    assert store.rebuild() == 2

    fresh = reopen()
    assert ([fresh.task(t) for t in "ab"], fresh.summary(time.time() - 60)) == before


# -- workers ----------------------------------------------------------------------------------


def test_a_workers_heartbeat_replaces_the_last_and_old_ones_fade(store):
    store.heartbeat("w1", {"busy": 1, "breaker": "closed"})
    store.heartbeat("w1", {"busy": 3, "breaker": "open"})
    store.heartbeat("w2", {"busy": 0, "breaker": "closed"})

    live = store.workers(seen_since=time.time() - 10)
    assert [(w["id"], w["busy"], w["breaker"]) for w in live] == [
        ("w1", 3, "open"),
        ("w2", 0, "closed"),
    ]
    assert store.workers(seen_since=time.time() + 10) == []


# -- budgets ----------------------------------------------------------------------------------


def test_a_budget_set_for_a_day_is_read_back_and_the_last_one_counts(store, reopen):
    assert store.budget("user", "U1", "2026-11-24") is None
    store.set_budget("user", "U1", "2026-11-24", 5.0, by="UADMIN")
    store.set_budget("user", "U1", "2026-11-24", 7.5, by="UADMIN")
    store.set_budget("channel", "C1", "2026-11-24", 20.0, by="UADMIN")

    again = reopen()
    assert again.budget("user", "U1", "2026-11-24") == 7.5
    assert again.budget("channel", "C1", "2026-11-24") == 20.0
    assert again.budget("user", "U1", "2026-11-25") is None
    again.rebuild()
    assert again.budget("user", "U1", "2026-11-24") == 7.5


# -- conversations ----------------------------------------------------------------------------


def test_a_threads_tasks_come_back_in_order(store):
    submit(store, "root")
    store.append("root", events.POSTED, {"thread_ts": "100.1"}, "root:posted")
    turn = {"user": "U2", "channel": "C1", "prompt": "and then?", "thread_ts": "100.1"}
    store.append("turn", events.SUBMITTED, {**turn, "conversation": "root"}, "turn:submitted")
    submit(store, "elsewhere")

    thread = store.thread("C1", "100.1")

    assert [t.id for t in thread] == ["root", "turn"]
    assert thread[1].conversation == "root" and thread[1].thread_ts == "100.1"
    assert store.thread("C2", "100.1") == []


def test_the_days_top_spenders_by_user_and_by_channel(store, reopen):
    for task_id, user, channel, cost in [
        ("a", "U1", "C1", 1.0),
        ("b", "U2", "C1", 3.0),
        ("c", "U1", "C2", 0.5),
        ("d", "U3", "C2", 0.25),
    ]:
        submit(store, task_id, user, channel)
        finish(store, task_id, cost_usd=cost)
    today = time.strftime("%Y-%m-%d", time.gmtime())

    users = store.top_spenders(today, "user", limit=2)
    assert [(s.who, s.tasks, s.cost) for s in users] == [("U2", 1, 3.0), ("U1", 2, 1.5)]
    channels = store.top_spenders(today, "channel")
    assert [(s.who, s.tasks, s.cost) for s in channels] == [("C1", 2, 4.0), ("C2", 2, 0.75)]
    assert store.top_spenders("2000-01-01", "user") == []
    store.rebuild()
    assert reopen().top_spenders(today, "user", limit=2) == users


# -- the pool ---------------------------------------------------------------------------------


def test_the_pools_events_are_versioned_and_the_latest_of_each_is_read_back(store, reopen):
    from core.domain import pool

    assert store.latest(pool.DECISION) is None
    store.record(pool.DECISION, pool.SCALED, {"target": 2, "reason": "burst"})
    store.record(pool.PIN, pool.PINNED, {"workers": 4, "by": "UADMIN"})
    last = store.record(pool.DECISION, pool.SCALED, {"target": 3, "reason": "more"})

    fresh = reopen()
    got = fresh.latest(pool.DECISION)
    assert (got.type, got.data, got.version) == (pool.SCALED, last.data, 2)
    assert fresh.latest(pool.PIN).data == {"workers": 4, "by": "UADMIN"}
    assert store.rebuild() == 0  # pool events are in the history, and make no task
    with pytest.raises(ValueError):
        store.record("t1", pool.SCALED, {})  # a task's aggregate is not the pool's


def test_activity_gives_recent_arrivals_and_the_service_times_of_tasks_done(store):
    t0 = time.time()
    for task_id in "abc":
        submit(store, task_id)
    store.append("a", events.STARTED, {"worker": "w", "delivery": 1, "generation": 0}, "a:s")
    time.sleep(0.05)
    finish(store, "a")
    finish(store, "b", outcome=events.FAILED, error="no")

    seen = store.activity(t0 - 1)

    assert len(seen.arrivals) == 3 and seen.arrivals == sorted(seen.arrivals)
    assert len(seen.service) == 1 and 0.04 <= seen.service[0] < 5  # only a's: done, with a start
    assert store.activity(time.time() + 1).arrivals == []


def test_task_counts_name_every_status(store):
    submit(store, "a")
    submit(store, "b")
    finish(store, "b")

    counts = store.task_counts()

    assert counts["submitted"] == 1 and counts["done"] == 1 and counts["failed"] == 0


def test_maintenance_forgets_old_heartbeats_and_keeps_every_event(store):
    store.heartbeat("gone:1", {"busy": 0})
    submit(store, "a")
    time.sleep(0.05)
    cutoff = time.time()
    store.heartbeat("live:2", {"busy": 1})

    done = store.maintain(heartbeats_older_than=cutoff)

    assert done["heartbeats_removed"] == 1
    assert [w["id"] for w in store.workers(seen_since=0)] == ["live:2"]
    assert [e.type for e in store.events("a")] == [events.SUBMITTED]


def test_maintenance_forgets_statistics_older_than_asked_and_a_rebuild_brings_them_back(store):
    submit(store, "a")
    finish(store, "a", cost_usd=0.5)
    assert store.summary(time.time() - 60).done == 1

    kept = store.maintain(heartbeats_older_than=0, stats_older_than=time.time() - 3600)
    assert kept["statistics_rows_removed"] == 0 and store.summary(time.time() - 60).done == 1

    gone = store.maintain(heartbeats_older_than=0, stats_older_than=time.time() + 86400)
    assert gone["statistics_rows_removed"] >= 3  # its user's, everyone's, its day's spend
    assert store.summary(0).done == 0 and store.top_spenders(day_of(time.time()), "user") == []
    assert store.task("a").status is TaskStatus.DONE  # the task and its events stay

    store.rebuild()
    assert store.summary(0).done == 1
