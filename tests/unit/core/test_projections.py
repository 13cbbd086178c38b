"""The projections as pure functions: what one event changes, and a replay of many."""

from __future__ import annotations

from core.domain import events
from core.domain.budget import AGGREGATE as BUDGET
from core.domain.events import Event, fold
from core.domain.projections import SPEND, STATS, TOTALS, Replay, changes
from core.domain.stats import bucket, day_of, slot_of

START = 1_700_000_000.0  # a task submitted then and done 4 s later, in one 5-minute slot


def life(task_id: str, user: str, cost: float, channel: str = "C1") -> list[Event]:
    return [
        Event(
            task_id, events.SUBMITTED, {"user": user, "channel": channel, "prompt": "p"}, START, 1
        ),
        Event(
            task_id,
            events.COMPLETED,
            {"usage": {"input_tokens": 2, "output_tokens": 3}, "cost_usd": cost},
            START + 4,
            2,
        ),
    ]


def test_a_task_that_ends_adds_once_to_every_table_of_counters():
    history = [*life("t", "U1", 0.5), Event("t", events.STARTED, {}, START + 9, 3)]
    submitted, done, late = (fold(history[: n + 1]) for n in range(3))

    assert changes(None, submitted).task == submitted
    assert changes(None, submitted).increments == ()
    ended = changes(submitted, done)
    assert ended.task == done
    key = (slot_of(START + 4), "done", bucket(4.0))
    assert [(i.table, i.row) for i in ended.increments] == [
        (STATS, (*key, "U1", "C1", 1, 2, 3, 0.5)),
        (TOTALS, (*key, 1, 2, 3, 0.5)),
        (SPEND, (day_of(START + 4), "user", "U1", 1, 0.5)),
        (SPEND, (day_of(START + 4), "channel", "C1", 1, 0.5)),
    ]
    assert changes(done, late).increments == ()


def test_a_replay_sums_each_row_in_event_order_as_the_appends_add_them():
    # Three tasks ending in one slot and bucket, two users: float sums depend on their order,
    # (0.1 + 0.2) + 0.6 != (0.1 + 0.6) + 0.2
    replay = Replay()
    for task_id, user, cost in [("a", "U1", 0.1), ("b", "U2", 0.2), ("c", "U1", 0.6)]:
        for e in life(task_id, user, cost):
            replay.feed(e.task_id, e.type, e.data, e.at, e.version, f"{task_id}:{e.version}")

    (total,) = replay.increments(TOTALS)
    assert total.amounts == (3, 6, 9, (0.1 + 0.2) + 0.6)
    per_user = {i.key[3]: i.amounts for i in replay.increments(STATS)}
    assert per_user == {"U1": (2, 4, 6, 0.1 + 0.6), "U2": (1, 2, 3, 0.2)}
    spend = {i.key[1:]: i.amounts for i in replay.increments(SPEND)}
    assert spend == {
        ("user", "U1"): (2, 0.1 + 0.6),
        ("user", "U2"): (1, 0.2),
        ("channel", "C1"): (3, (0.1 + 0.2) + 0.6),
    }
    assert sorted(replay.views) == ["a", "b", "c"]


def test_a_replay_keeps_the_last_budget_set_for_a_day_and_no_task_for_it():
    replay = Replay()
    for version, usd in enumerate([5.0, 7.5], 1):
        data = {"scope": "user", "who": "U1", "day": "2026-11-24", "usd": usd, "by": "UA"}
        replay.feed(f"{BUDGET}user:U1:2026-11-24", "budget_set", data, START, version, str(version))

    assert [b.row for b in replay.budgets.values()] == [("user", "U1", "2026-11-24", 7.5)]
    assert replay.views == {}
