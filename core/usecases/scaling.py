"""The pool's size: what the elected pm decides for the whole cluster, and what each pm runs.

Every `aico pm` beats (its bounds, its workers, its host's CPU and memory) into the store. The
elected one reads the load — queue depth from the broker; arrivals and service times from the
event store; busy slots from the task workers' heartbeats; the hosts' saturation from the pm
beats — asks the policy (core.domain.scaling) for the cluster's target, or takes an admin's pin,
and records the decision with its reason and each host's share as an event. Every pm then runs
its share. A decision is recorded when it changes something (the target, the shares) or holds a
change back (a saturated host, a keep-alive), never once per tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.domain import pool
from core.domain.messages import TASKS
from core.domain.pool import Host, Record
from core.domain.scaling import RATE_WINDOW_S, Decision, Load, Policy
from core.errors import InvalidInput
from core.ports import EventStore
from core.usecases.forecast import ArrivalForecast
from core.usecases.status import LIVE_WITHIN, is_pm, is_task_worker, pool_state

log = logging.getLogger(__name__)

HISTORY_S = 3 * 86400.0  # what the forecast learns from


@dataclass
class PoolScaler:
    store: EventStore
    me: Host  # this pm (its id, bounds, external or not)
    policy: Callable[[int, int], Policy]  # (minimum, maximum) -> the policy, for those bounds
    depth: Callable[[str], tuple[int, int]]  # queue -> (ready, consumers)
    slots: int  # per task worker
    forecast: ArrivalForecast | None = None
    clock: Callable[[], float] = time.time  # event-store time (arrivals are stamped in it)
    ticks: Callable[[], float] = time.monotonic  # the policy's clock
    _policy: Policy | None = field(default=None, repr=False)
    _bounds: tuple[int, int] = (-1, -1)
    _last: Record | None = field(default=None, repr=False)

    # -- the elected pm ---------------------------------------------------------------------

    def decide(self, hosts: list[Host] | None = None) -> Record | None:
        """The cluster's target now, recorded if it changes anything; the latest decision.
        `hosts`: the other pm, as their heartbeats (read here when not given) describe them."""
        now = self.clock()
        beats = self.store.workers(seen_since=now - LIVE_WITHIN)
        if hosts is None:
            hosts = [Host.from_heartbeat(b) for b in beats if is_pm(b)]
        hosts = [h for h in hosts if h.id != self.me.id] + [self.me]
        low, high = self._cluster_bounds(hosts)
        last = self._last or self.store.latest(pool.DECISION)
        load = self._load(hosts, beats, now, last)
        pin = pool.pin_of(self.store.latest(pool.PIN))
        if pin is not None:
            target = max(low, min(high, pin.workers))
            decision = Decision(load.at, "pinned", load.workers, target, self._pinned(pin, target))
        else:
            decision = self._policy_for(low, high).decide(load)
        shares = {} if self.me.external else pool.shares(decision.target, hosts)
        self._last = last
        if self._news(last, decision, shares):
            self._last = self._record(decision, shares, load)
            log.info("pool: %s -> %d (%s)", decision.current, decision.target, decision.reason)
        return self._last

    def train(self) -> pool.Record | None:
        """Fit the arrival forecast on the history, and record how good it is."""
        if self.forecast is None:
            return None
        now = self.clock()
        arrivals = self.store.activity(now - HISTORY_S).arrivals
        quality = self.forecast.train(arrivals, now)
        data = {
            "trained": quality.trained,
            "samples": quality.samples,
            "mae_model": quality.mae_model,
            "mae_naive": quality.mae_naive,
            "trusted": quality.trusted,
            "summary": quality.describe(),
        }
        return self.store.record(pool.FORECAST, pool.FORECAST_TRAINED, data)

    def _load(self, hosts: list[Host], beats: list[dict], now: float, last: Record | None) -> Load:
        task_workers = [b for b in beats if is_task_worker(b)]
        queued, _consumers = self.depth(TASKS)
        window = max(RATE_WINDOW_S, self.forecast.lookback_s if self.forecast else 0.0)
        activity = self.store.activity(now - window)
        current = int(last.data["target"]) if last else sum(h.workers for h in hosts)
        if self.me.external and not last:
            current = len(task_workers)
        return Load(
            at=self.ticks(),
            queued=queued,
            busy=sum(int(b.get("busy", 0)) for b in task_workers),
            workers=current,
            slots=self.slots,
            arrival_rate=activity.rate(now - RATE_WINDOW_S, now),
            service_s=activity.mean_service,
            forecast_rate=self.forecast.rate(activity.arrivals, now) if self.forecast else None,
            saturated=_saturated(hosts),
        )

    def _cluster_bounds(self, hosts: list[Host]) -> tuple[int, int]:
        if self.me.external:  # the platform runs the workers: this pm's bounds are the cluster's
            return self.me.minimum, self.me.maximum
        return pool.bounds(hosts)

    def _policy_for(self, low: int, high: int) -> Policy:
        """The policy, made again only when the cluster's bounds change (a host came or went)."""
        if self._policy is None or self._bounds != (low, high):
            self._policy, self._bounds = self.policy(low, high), (low, high)
        return self._policy

    @staticmethod
    def _pinned(pin: pool.Pin, target: int) -> str:
        clamped = "" if target == pin.workers else f" (the hosts' bounds allow {target})"
        return f"pinned to {pin.workers} by <@{pin.by}>{clamped}"

    @staticmethod
    def _news(last: Record | None, decision: Decision, shares: dict[str, int]) -> bool:
        if last is None:
            return True
        before = last.data
        if decision.target != before["target"] or shares != before.get("shares", {}):
            return True
        if decision.reason.startswith("pinned") != bool(before.get("pinned")):
            return True
        return bool(decision.held) and not before.get("held")  # a hold begins

    def _record(self, decision: Decision, shares: dict[str, int], load: Load) -> Record:
        data = {
            "target": decision.target,
            "current": decision.current,
            "shares": shares,
            "policy": decision.policy,
            "reason": decision.reason,
            "held": decision.held,
            "pinned": decision.policy == "pinned",
            "by": self.me.id,
            "inputs": {
                "queued": load.queued,
                "busy": load.busy,
                "slots": load.slots,
                "arrival_rate": round(load.arrival_rate, 4),
                "service_s": round(load.service_s, 3),
                "forecast_rate": None
                if load.forecast_rate is None
                else round(load.forecast_rate, 4),
                "saturated": load.saturated,
            },
        }
        return self.store.record(pool.DECISION, pool.SCALED, data)

    # -- every pm ---------------------------------------------------------------------------

    def share(self, fallback: int) -> int:
        """What this pm should run: its share of the latest decision; `fallback` (what it runs)
        until a decision names it."""
        last = self.store.latest(pool.DECISION)
        self._last = last
        if last is None:
            return max(self.me.minimum, min(self.me.maximum, fallback))
        share = last.data.get("shares", {}).get(self.me.id)
        if share is None:
            return max(self.me.minimum, min(self.me.maximum, fallback))
        return max(self.me.minimum, min(self.me.maximum, int(share)))


def _saturated(hosts: list[Host]) -> str:
    """Why no host can take another worker ("" while one of them can): every host with room
    below its maximum is saturated."""
    with_room = [h for h in hosts if h.workers < h.maximum or h.external]
    reasons = [f"{h.id}: {h.saturated}" for h in with_room if h.saturated]
    return "; ".join(reasons) if with_room and len(reasons) == len(with_room) else ""


@dataclass
class PoolAdmin:
    """`/aico scale <n>` pins the pool; `/aico scale auto` hands it back to the policy. Each is an
    event; the elected pm applies it at its next decision (within seconds)."""

    store: EventStore
    clock: Callable[[], float] = time.time

    def pin(self, workers: int, by: str) -> str:
        if not 0 <= workers <= pool.MAX_PIN:
            raise InvalidInput(f"A pool has 0 to {pool.MAX_PIN} task workers, not {workers}.")
        self.store.record(pool.PIN, pool.PINNED, {"workers": workers, "by": by})
        hosts = pool_state(self.store, self.clock()).hosts
        low, high = pool.bounds(hosts)
        if not hosts:
            where = "no `aico pm` has reported in the last 15 s: it applies when one runs"
        elif low <= workers <= high:
            where = "the pm applies it within seconds"
        else:
            runs = max(low, min(high, workers))
            where = f"the hosts allow {low} to {high} (AICO_MIN/MAX_WORKERS), so {runs} will run"
        return (
            f"The pool is pinned to {workers} task worker(s): {where}. `/aico scale auto` ends it."
        )

    def auto(self, by: str) -> str:
        if pool.pin_of(self.store.latest(pool.PIN)) is None:
            return "The pool already follows the scaling policy."
        self.store.record(pool.PIN, pool.UNPINNED, {"by": by})
        return "The pool follows the scaling policy again."
