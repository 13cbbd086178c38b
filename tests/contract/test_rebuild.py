"""A rebuild derives exactly what the appends wrote, on every backend (see conftest.py)."""

from __future__ import annotations

import time

from core.domain import events


def test_a_rebuild_gives_the_same_counters_to_the_last_bit_of_their_sums(store, reopen):
    # Given tasks of two users that ended together, whose costs sum differently in another
    # order: (0.1 + 0.2) + 0.6 != (0.1 + 0.6) + 0.2
    for task_id, user, cost in [("a", "U1", 0.1), ("b", "U2", 0.2), ("c", "U1", 0.6)]:
        data = {"user": user, "channel": "C1", "prompt": "p"}
        store.append(task_id, events.SUBMITTED, data, f"{task_id}:s")
        store.append(task_id, events.COMPLETED, {"cost_usd": cost}, f"{task_id}:c")
    today = time.strftime("%Y-%m-%d", time.gmtime())

    def projections(s):
        since = time.time() - 3600
        return (
            s.summary(since),
            s.summary(since, user="U1"),
            s.top_spenders(today, "user"),
            s.top_spenders(today, "channel"),
            [s.task(t) for t in "abc"],
        )

    before = projections(store)

    # When the projections are derived again from the events
    assert store.rebuild() == 3

    # Then everyone's, a user's and the day's figures are exactly what they were
    assert projections(reopen()) == before
