"""Feedback on answers: Slack's feedback buttons under each answer. A click is an event on the task
(who, good or bad) and a line of the day's tally (`ops:feedback`), which `/aico status` reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.domain import events
from core.domain.stats import start_of_day
from core.errors import InvalidInput
from core.ports import EventStore

TALLY = "ops:feedback"
RATED = "answer_rated"
RATINGS = ("good", "bad")
LOOK_BACK = 5000  # clicks of the tally read for today's figures


@dataclass
class Feedback:
    store: EventStore
    clock: Callable[[], float] = time.time

    def rate(self, value: str, user: str, click: str) -> str:
        """Record a click (`value` is "good:<task id>" or "bad:<task id>"; `click` tells one
        click from another); what to tell the person. InvalidInput for a value we never sent."""
        rating, _, task_id = value.partition(":")
        task = self.store.task(task_id) if rating in RATINGS else None
        if task is None:
            raise InvalidInput("This feedback button is not one of aico's answers.")
        data = {"by": user, "rating": rating}
        recorded = self.store.append(task_id, events.FEEDBACK, data, f"{task_id}:feedback:{click}")
        if recorded is not None:
            self.store.record(TALLY, RATED, {"task_id": task_id, **data})
        if rating == "good":
            return "Thanks: noted as a good answer."
        return "Thanks: noted as a bad answer. Reply in the thread to say what was wrong."

    def today(self) -> dict[str, int]:
        """Today's clicks (UTC) by rating."""
        since = start_of_day(self.clock())
        tally = dict.fromkeys(RATINGS, 0)
        for record in self.store.tail(TALLY, LOOK_BACK):
            if record.at >= since and record.data.get("rating") in tally:
                tally[record.data["rating"]] += 1
        return tally
