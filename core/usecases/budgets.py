"""Daily budgets per user and per channel, checked at intake against what the store says was
spent today (UTC); an admin can raise a limit for today."""

from __future__ import annotations

import time
from collections.abc import Callable

from core.domain.budget import CHANNEL, USER, Limit, today
from core.domain.stats import start_of_day
from core.errors import InvalidInput
from core.ports import EventStore


class Budgets:
    def __init__(
        self,
        store: EventStore,
        user_daily: float,
        channel_daily: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.defaults = {USER: user_daily, CHANNEL: channel_daily}
        self.clock = clock

    def limits(self, user: str, channel: str) -> list[Limit]:
        """Where `user` and `channel` stand today."""
        return [self._limit(USER, user), self._limit(CHANNEL, channel)]

    def check(self, user: str, channel: str) -> None:
        """InvalidInput with the figures if the user or the channel has spent its budget. (What
        was spent is only read where a limit applies: this runs before every ack.)"""
        for scope, who in ((USER, user), (CHANNEL, channel)):
            if (
                self._usd(scope, who, self.clock()) > 0
                and (limit := self._limit(scope, who)).reached
            ):
                raise InvalidInput(limit.refusal())

    def raise_today(self, scope: str, who: str, usd: float, by: str) -> Limit:
        if usd <= 0:
            raise InvalidInput("A budget is a positive amount of US dollars, like `25`.")
        self.store.set_budget(scope, who, today(self.clock()), usd, by)
        return self._limit(scope, who)

    def _limit(self, scope: str, who: str) -> Limit:
        now = self.clock()
        spent = self.store.summary(start_of_day(now), **{scope: who}).cost
        return Limit(scope, who, self._usd(scope, who, now), spent)

    def _usd(self, scope: str, who: str, now: float) -> float:
        """Today's limit: what an admin set for today, or the default."""
        set_today = self.store.budget(scope, who, today(now))
        return set_today if set_today is not None else self.defaults[scope]
