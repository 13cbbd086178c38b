"""Daily budgets on a real event store and a clock the test holds: a channel that has spent its
limit is refused with the figures, an admin's raise lets it through for today, and at midnight
UTC the spend is back to nothing and the raise is gone."""

from __future__ import annotations

import itertools
import time

import pytest

from core.adapters.sqlite_store import SqliteEventStore
from core.domain import events
from core.domain.budget import CHANNEL, USER
from core.domain.stats import start_of_day
from core.errors import InvalidInput
from core.usecases.budgets import Budgets

DAY = 86400.0
_ids = itertools.count(1)


class Clock:
    """What Budgets believes the time is. The store stamps events with the real time, so the
    clock starts at the real now and is only moved forward."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    store = SqliteEventStore(tmp_path / "aico.db")
    yield store
    store.close()


def spend(store, user: str, channel: str, usd: float) -> None:
    """A task answered for `user` in `channel` that cost `usd`, recorded the way the bot, the
    task worker and the result worker record it."""
    task_id = f"t{next(_ids):09d}"
    submitted = {"user": user, "channel": channel, "prompt": "work"}
    store.append(task_id, events.SUBMITTED, submitted, f"{task_id}:submitted")
    store.append(task_id, events.POSTED, {"thread_ts": "1.000"}, f"{task_id}:posted")
    store.append(task_id, events.QUEUED, {}, f"{task_id}:queued:0")
    store.append(task_id, events.STARTED, {"generation": 0, "delivery": 1}, f"{task_id}:start")
    usage = {"input_tokens": 1_000, "output_tokens": 2_000}
    completed = {"model": "claude-x", "usage": usage, "claude_ms": 10.0, "cost_usd": usd}
    store.append(task_id, events.COMPLETED, completed, f"{task_id}:completed:0")


def refusal(budgets: Budgets, user: str, channel: str) -> str:
    with pytest.raises(InvalidInput) as refused:
        budgets.check(user, channel)
    return str(refused.value)


def test_a_channel_that_spent_its_budget_refuses_everyone_in_it_with_the_figures(store):
    clock = Clock()
    budgets = Budgets(store, user_daily=0, channel_daily=1.0, clock=clock)

    # Given two people in one channel who spent $0.60, then $0.40 in all
    spend(store, "U1", "C1", 0.60)
    budgets.check("U2", "C1")  # below the limit: allowed
    spend(store, "U2", "C1", 0.40)

    # Then a third person there is refused, with what the channel spent and its limit
    said = refusal(budgets, "U3", "C1")
    assert "This channel's daily budget is spent: $1.00 of $1.00 today (UTC)" in said
    assert "`/aico budget channel <usd>`" in said, "says how an admin raises it"
    # And another channel, with no spend of its own, is not
    budgets.check("U3", "C2")
    (user, channel) = budgets.limits("U3", "C1")
    assert (channel.usd, channel.spent, channel.reached) == (1.0, pytest.approx(1.0), True)
    assert (user.usd, user.reached) == (0, False), "no user limit is set"


def test_an_admins_raise_lets_the_channel_through_today_only(store):
    clock = Clock()
    budgets = Budgets(store, user_daily=0, channel_daily=1.0, clock=clock)
    spend(store, "U1", "C1", 1.25)
    refusal(budgets, "U1", "C1")

    # When an admin raises today's limit of the channel
    raised = budgets.raise_today(CHANNEL, "C1", 5.0, by="UADMIN")

    # Then it is allowed again, with the new figures
    assert (raised.usd, raised.spent, raised.reached) == (5.0, pytest.approx(1.25), False)
    budgets.check("U1", "C1")

    # And a second before midnight UTC the day's spend still counts, against the raised limit
    midnight = start_of_day(clock.now) + DAY
    clock.now = midnight - 1
    spend(store, "U1", "C1", 4.0)  # (stamped now, really: still today)
    assert "$5.25 of $5.00" in refusal(budgets, "U2", "C1")

    # At midnight UTC the spend is back to nothing and the raise no longer applies
    clock.now = midnight
    (_, channel) = budgets.limits("U2", "C1")
    assert (channel.usd, channel.spent) == (1.0, 0.0)
    budgets.check("U2", "C1")


def test_a_users_budget_counts_them_in_every_channel_and_no_one_else(store):
    clock = Clock()
    budgets = Budgets(store, user_daily=0.5, channel_daily=0, clock=clock)
    spend(store, "U1", "C1", 0.30)
    spend(store, "U1", "C2", 0.20)

    assert "Your daily budget is spent: $0.5000 of $0.5000 today (UTC)" in refusal(
        budgets, "U1", "C3"
    )
    budgets.check("U2", "C1")
    budgets.raise_today(USER, "U1", 1.0, by="UADMIN")
    budgets.check("U1", "C1")
    clock.now = start_of_day(clock.now) + DAY
    assert budgets.limits("U1", "C1")[0].usd == 0.5, "the raise was for yesterday"


def test_a_raise_must_be_a_positive_amount(store):
    budgets = Budgets(store, user_daily=0, channel_daily=1.0, clock=Clock())
    with pytest.raises(InvalidInput, match="positive amount"):
        budgets.raise_today(CHANNEL, "C1", 0, by="UADMIN")
