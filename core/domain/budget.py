"""Daily budgets: a user or a channel that has spent its limit today (UTC) gets no new task
until tomorrow, or until an admin raises the limit for today."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.domain.pricing import usd

USER, CHANNEL = "user", "channel"
AGGREGATE = "budget:"  # event store ids of budget limits: budget:<scope>:<who>:<day>


@dataclass(frozen=True)
class Limit:
    scope: str  # USER or CHANNEL
    who: str
    usd: float  # 0: no limit
    spent: float

    @property
    def reached(self) -> bool:
        return self.usd > 0 and self.spent >= self.usd

    def refusal(self) -> str:
        whose = "Your" if self.scope == USER else "This channel's"
        raise_it = (
            f"`/aico budget user <@{self.who}> <usd>`"
            if self.scope == USER
            else "`/aico budget channel <usd>` in this channel"
        )
        return (
            f"{whose} daily budget is spent: {usd(self.spent)} of {usd(self.usd)} today (UTC). "
            f"It resets at midnight UTC; an admin can raise it for today with {raise_it}."
        )


def today(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now))
