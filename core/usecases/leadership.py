"""Which `aico pm` runs the cluster-wide jobs (the recovery sweep, the scaling decision, the
forecast's training): the one whose broker connection holds the exclusive queue LEADER_QUEUE.
RabbitMQ gives that queue to one connection at a time and drops it the moment the connection
ends, so when the leader dies another pm takes over at its next tick, and records the takeover.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.domain import pool
from core.errors import AicoError
from core.ports import Broker, EventStore

log = logging.getLogger(__name__)

LEADER_QUEUE = "aico.pm.leader"
CLAIM_PATIENCE = 5.0  # seconds to wait for the broker's answer


@dataclass
class Leadership:
    link: Broker
    store: EventStore
    me: str  # host:pid of this pm
    clock: Callable[[], float] = time.time
    on_elected: Callable[[], object] = lambda: None  # the cluster-wide jobs, run at once
    leader: bool = False

    def tick(self) -> bool:
        """Claim (or keep) the lead; returns whether this pm leads now."""
        try:
            held = self.link.claim(LEADER_QUEUE).result(CLAIM_PATIENCE)
        except (AicoError, TimeoutError, OSError):
            # No broker: no other pm can claim the lead either (unless only this one lost it, a
            # partition: then both lead until the broker answers again). The leader keeps the
            # jobs that matter most now: the checks that say the broker is down.
            return self.leader
        was, self.leader = self.leader, held
        if held and not was:
            self._took_over()
            self.on_elected()
        elif was and not held:
            log.warning("another pm leads now")
        return held

    def _took_over(self) -> None:
        before = self.store.latest(pool.LEADER)
        previous = str(before.data.get("leader", "")) if before else ""
        if previous == self.me:
            previous = ""  # our own lead again, after a reconnection
        data: dict[str, object] = {"leader": self.me, "previous": previous}
        if silent := self._silent_for(previous):
            data["silent_s"] = silent  # how long the old leader had been silent
        self.store.record(pool.LEADER, pool.LEADER_ELECTED, data)
        log.info(
            "this pm leads the cluster-wide jobs now%s", f" (after {previous})" * bool(previous)
        )

    def _silent_for(self, previous: str) -> float:
        """Seconds since the previous leader's last heartbeat (0 if unknown)."""
        now = self.clock()
        for beat in self.store.workers(seen_since=now - 3600):
            if previous and beat.get("pm") == previous:
                return round(now - float(beat["seen_at"]), 3)
        return 0.0
