"""Scaling policies: how many task workers the pool should have, read from one moment of load.

A policy is an object with a little state (when it last changed the pool, since when it has
wanted fewer workers) and one method, `decide(load) -> Decision`. Every time it uses comes from
`load.at`: `aico pm` passes `time.monotonic()`, the simulator (core/usecases/simulation.py) its
simulated time, the tests a number they choose. The same code decides in both, so what the
simulator measures is what the pm does. Every target is clamped to [minimum, maximum].

Three policies, by name (`make_policy`):

- `threshold`: the old system's rule (ThresholdPolicy).
- `queue-ratio`: what a team gets from KEDA's RabbitMQ scaler on Kubernetes with the defaults
  (QueueRatioPolicy).
- `aico`: Little's law plus a backlog-drain term, up at once, down after a keep-alive with
  hysteresis, ahead of a forecast rise, held while the host is saturated (AicoPolicy).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

RATE_WINDOW_S = 60.0  # the window over which the pm and the simulator measure arrivals and
# service times for `Load.arrival_rate` and `Load.service_s`

POLICIES: tuple[str, ...] = ("threshold", "queue-ratio", "aico")
RISE_Z = 2.0  # how clearly the arrival rate must rise before aico believes a higher forecast
STARTUP_S = 10.0  # a new worker's start-up time that aico assumes when nobody tells it (the pm)


@dataclass(frozen=True)
class Load:
    """What a policy reads at one moment (cluster-wide)."""

    at: float  # seconds on the policy's clock (monotonic in the pm, simulated in the sim)
    queued: int  # tasks waiting in the queue (ready, not yet taken by a worker)
    busy: int  # slots working on a task now, over all workers
    workers: int  # workers in the pool now, starting ones included
    slots: int  # slots per worker (C)
    arrival_rate: float  # tasks/s that arrived over the recent window (0 if none)
    service_s: float  # mean service time (s) of the tasks finished in the window; 0: unknown
    forecast_rate: float | None = None  # the model's rate for the next minutes; None: not trusted
    saturated: str = ""  # why the host(s) cannot take another worker now ("" if they can)
    startup_s: float | None = None  # a new worker's start-up time (s); None: the policy's default


@dataclass(frozen=True)
class Decision:
    at: float
    policy: str  # "threshold" | "queue-ratio" | "aico"
    current: int
    target: int
    reason: str  # human-readable, for Slack and the event store
    held: str = ""  # a wanted change that was not made and why, "" if none

    @property
    def changed(self) -> bool:
        return self.target != self.current


class Policy(Protocol):
    name: str

    def decide(self, load: Load) -> Decision: ...


def make_policy(
    name: str, minimum: int, maximum: int, slots: int, startup_s: float | None = None
) -> Policy:
    """ "threshold" | "queue-ratio" | "aico"; ValueError (listing the names) otherwise.

    `startup_s` is a new worker's start-up time, for aico (None: its default, STARTUP_S); the
    baselines do not read it. A Load that carries `startup_s` overrides it."""
    if not 0 <= minimum <= maximum:
        raise ValueError(f"need 0 <= minimum <= maximum, got {minimum} and {maximum}")
    if slots < 1:
        raise ValueError(f"slots per worker must be >= 1, got {slots}")
    if name == "threshold":
        return ThresholdPolicy(minimum, maximum)
    if name == "queue-ratio":
        return QueueRatioPolicy(minimum, maximum, slots)
    if name == "aico":
        return AicoPolicy(
            minimum, maximum, slots, startup_s=STARTUP_S if startup_s is None else startup_s
        )
    raise ValueError(f"unknown scaling policy {name!r}; the policies are {', '.join(POLICIES)}")


def _clamp(value: int, minimum: int, maximum: int) -> int:
    return max(minimum, min(maximum, value))


class ThresholdPolicy:
    """The system aico replaces: +1 worker when more than 5 tasks are queued, -1 when the queue
    is empty, at most one change every 30 s.

    It reads the queue only: an empty queue takes a worker away even while every slot is busy,
    and a queue of 5 adds none however long it stays. It is asked as often as the caller likes
    (the simulator asks every second); the first change may come at once, each later one 30 s
    after the one before.
    """

    name = "threshold"

    def __init__(self, minimum: int, maximum: int, above: int = 5, every_s: float = 30.0) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.above, self.every_s = above, every_s
        self._changed_at: float | None = None

    def decide(self, load: Load) -> Decision:
        current = load.workers
        if load.queued > self.above:
            wanted, why = current + 1, f"queue {load.queued} > {self.above}: +1"
        elif load.queued == 0:
            wanted, why = current - 1, "queue empty: -1"
        else:
            wanted, why = current, f"queue {load.queued}: no change"
        wanted = _clamp(wanted, self.minimum, self.maximum)
        bounded = _clamp(current, self.minimum, self.maximum)
        held = ""
        if wanted != current and self._changed_at is not None:
            wait = self.every_s - (load.at - self._changed_at)
            if wait > 0:
                held = f"{why}; next change allowed in {wait:.0f} s"
                wanted = bounded
        if wanted != current:
            self._changed_at = load.at
        return Decision(load.at, self.name, current, wanted, f"{why} -> {wanted}", held)


class QueueRatioPolicy:
    """KEDA's RabbitMQ scaler in QueueLength mode, on Kubernetes' HPA, with their defaults.

    What it models, and the defaults a team gets without tuning:

    - The metric is the queue length as KEDA reads it by default: with an `amqp://` host
      (`protocol: auto` picks AMQP) it declares the queue passively and counts the messages
      ready, "ignoring unacked messages" (KEDA's docs), i.e. `queued` here: a task in a slot is an
      unacked delivery. That is the default a team gets, and its known weakness: a pool that is
      busy with an empty queue looks idle. `count_unacked=True` models the management API
      instead (`protocol: http`: ready + unacknowledged = queued + busy); the README compares
      aico with it too.
    - `value` (the target per replica) = C, the slots of one worker: desired =
      ceil(queue length / C) (an AverageValue target: HPA divides the metric by the target).
    - HPA evaluates every 15 s (`--horizontal-pod-autoscaler-sync-period`); KEDA's metrics server
      asks RabbitMQ at each evaluation. (KEDA's own `pollingInterval`, 30 s, only wakes a
      deployment scaled to zero; with minimum >= 1 it never does here.) We give it counts that
      are fresh at each evaluation, although the management API's counts are up to 5 s old.
    - HPA's tolerance: no change while the metric is within 10% of what the current replicas
      target.
    - HPA's default behaviour: scale-up without stabilisation, by at most max(4 pods, 100%) per
      15 s; scale-down to the highest recommendation of the last 300 s (the stabilisation
      window), by at most 100% per 15 s.
    - Clamped to [minReplicaCount, maxReplicaCount] = [minimum, maximum].
    """

    name = "queue-ratio"

    def __init__(
        self,
        minimum: int,
        maximum: int,
        slots: int,
        sync_s: float = 15.0,
        tolerance: float = 0.1,
        down_window_s: float = 300.0,
        up_pods: int = 4,
        up_percent: float = 100.0,
        count_unacked: bool = False,
    ) -> None:
        self.count_unacked = count_unacked
        self.minimum, self.maximum, self.target_per_worker = minimum, maximum, slots
        self.sync_s, self.tolerance, self.down_window_s = sync_s, tolerance, down_window_s
        self.up_pods, self.up_percent = up_pods, up_percent
        self._synced_at: float | None = None
        self._recommendations: deque[tuple[float, int]] = deque()
        self._ups: deque[tuple[float, int]] = deque()  # (when, pods added) in the last period
        self._last: Decision | None = None

    def decide(self, load: Load) -> Decision:
        current = load.workers
        if self._synced_at is not None and load.at - self._synced_at < self.sync_s:
            reason = self._last.reason if self._last else ""
            return Decision(load.at, self.name, current, current, reason)
        self._synced_at = load.at
        metric = load.queued + (load.busy if self.count_unacked else 0)
        proposal, why = self._proposal(metric, current)
        stabilised = self._stabilise(load.at, current, proposal)
        target = _clamp(self._rate_limit(load.at, current, stabilised), self.minimum, self.maximum)
        if target > current:
            self._ups.append((load.at, target - current))
        held = ""
        if target == current and proposal < current:
            held = f"scale-down stabilisation: {stabilised} wanted in the last 300 s"
        decision = Decision(load.at, self.name, current, target, f"{why} -> {target}", held)
        self._last = decision
        return decision

    def _proposal(self, metric: int, current: int) -> tuple[int, str]:
        why = f"queue length {metric} / {self.target_per_worker} per worker"
        if current > 0:
            ratio = metric / (self.target_per_worker * current)
            if abs(ratio - 1.0) <= self.tolerance:
                return current, f"{why} (within tolerance)"
        return math.ceil(metric / self.target_per_worker), why

    def _stabilise(self, at: float, current: int, proposal: int) -> int:
        while self._recommendations and self._recommendations[0][0] <= at - self.down_window_s:
            self._recommendations.popleft()
        down_limit = max([proposal, *(r for _, r in self._recommendations)])
        self._recommendations.append((at, proposal))
        # The up window is 0 s: the up limit is the proposal itself.
        return min(max(current, proposal), down_limit)

    def _rate_limit(self, at: float, current: int, desired: int) -> int:
        while self._ups and self._ups[0][0] <= at - self.sync_s:
            self._ups.popleft()
        if desired <= current:
            return desired  # 100% per period: down to the minimum in one step
        start = current - sum(n for _, n in self._ups)
        limit = max(start + self.up_pods, math.ceil(start * (1 + self.up_percent / 100)))
        return min(desired, limit)


class AicoPolicy:
    """aico's policy: the slots that what arrives needs (Little's law) plus what the queue needs.

    absorbed = the queued tasks that the busy slots take up within `wait_s` as they free
               (busy x wait_s / service), at most `wait_cap` tasks;
    flow     = rate x service: the slots busy in the steady state (Little's law), less its noise
               (see below), counted only while more is queued than is absorbed;
    backlog  = the queued tasks beyond the absorbed ones, each worth min(1, service / drain)
               slots, so that the backlog drains within drain = drain_s + drain_per_start x
               the start-up time (a worker started for it serves only after its start-up:
               with long start-ups, fewer workers that drain the backlog for longer cost fewer
               worker-seconds than many that each arrive to find it nearly gone);
    up       = ceil((flow + backlog) / C), at once.

    The rate is the one-minute arrival rate. The forecast's rate replaces it when it is higher
    and the measured rate is clearly rising (by RISE_Z standard deviations over a window), so
    that the pool grows ahead of a rising load, even before anything waits; a forecast above a
    falling rate is the model lagging a drop, and is not followed. The measured flow is noisy:
    a minute of Poisson arrivals gives rate x service a standard deviation of
    service x sqrt(rate / RATE_WINDOW_S) slots, and the flow is taken `noise_z` of them (plus
    `flow_tolerance` workers) lower, so that noise alone never grows the pool (if the load
    really is higher, the queue grows and the backlog term adds the workers). A queue the busy
    slots absorb grows nothing: a short wait costs less than a worker started for it. The cap
    keeps that tolerance a few seconds in a large pool too. While no task has finished in the
    window (service time unknown), every busy and queued task gets a slot. Starting workers
    count as capacity (they are in `load.workers`). No scale-up while the host is saturated:
    the target stays and `held` says why (the minimum is still kept).

    Down by what is in the system now, not by the one-minute rate (which stays high for a
    minute after a burst): to ceil((busy + queued) x (1 + headroom) / C), never below what the
    up rule wants nor below the flow that the measured rate says keeps arriving (less only
    `floor_z` standard deviations of its noise, fewer than the up rule's `noise_z`: a pool shed
    below its steady flow queues at once and grows back, paying a start-up each time), once
    fewer workers than the pool have been enough for `keep_alive_s` in a row; it then goes to
    the highest target wanted during the keep-alive. The gaps between the two rules (grow when
    the queue outgrows what the busy slots absorb and on the flow less `noise_z` of noise;
    shrink only when every task in the system fits in fewer workers and the flow less `floor_z`
    of noise does not need them) are the hysteresis.

    The start-up time comes with the load (`Load.startup_s`: the simulator passes its
    --startup) or else is `startup_s` (make_policy's, default STARTUP_S, which the pm uses).

    The constants were chosen with the simulator on random traces and settings
    (bench/heldout.py --set tuning) and reported on others (bench/heldout.py). A worker started
    and shed within seconds costs its start-up: sizing by the flow's noise, the absorbed queue
    and the flow floor on the way down cut the starts where workers are small (C of 1-4); the
    floor's smaller noise allowance (floor_z) and the drain time grown by the start-up
    (drain_per_start) were chosen on 12 scaled traces a family of the tuning seeds and checked
    on seeds 3000 on, before the report set was run.
    """

    name = "aico"

    def __init__(
        self,
        minimum: int,
        maximum: int,
        slots: int,
        drain_s: float = 10.0,
        wait_s: float = 8.0,
        flow_tolerance: float = 0.0,
        keep_alive_s: float = 3.0,
        headroom: float = 0.0,
        noise_z: float = 2.5,
        wait_cap: float = 30.0,
        floor_z: float = 1.0,
        drain_per_start: float = 0.5,
        startup_s: float = STARTUP_S,
    ) -> None:
        others = (wait_s, keep_alive_s, headroom, noise_z, wait_cap, floor_z, drain_per_start)
        if drain_s <= 0 or min(*others, startup_s) < 0:
            raise ValueError(
                "drain_s must be > 0; wait_s, keep_alive_s, headroom, noise_z, wait_cap,"
                " floor_z, drain_per_start, startup_s >= 0"
            )
        self.minimum, self.maximum, self.slots = minimum, maximum, slots
        self.drain_s, self.wait_s, self.flow_tolerance = drain_s, wait_s, flow_tolerance
        self.keep_alive_s, self.headroom = keep_alive_s, headroom
        self.noise_z, self.wait_cap = noise_z, wait_cap
        self.floor_z, self.drain_per_start, self.startup_s = floor_z, drain_per_start, startup_s
        self._lower_since: float | None = None
        self._lower_max = 0
        self._rates: deque[tuple[float, float]] = deque()  # (at, arrival rate) of the last minute

    def decide(self, load: Load) -> Decision:
        current = load.workers
        self._remember(load)
        needed, why = self.needed(load)
        up = self._clamp(math.ceil(needed / self.slots - 1e-9))
        if up > current:
            self._lower_since = None
            if load.saturated and current >= self.minimum:
                held = f"host saturated: {load.saturated}"
                return Decision(load.at, self.name, current, current, f"{why} -> {up}", held)
            return Decision(load.at, self.name, current, up, f"{why} -> {up} (up at once)")
        in_system = (load.busy + load.queued) * (1 + self.headroom) / self.slots
        floor = self.flow(load.arrival_rate, load.service_s, self.floor_z) / self.slots
        # never below what up wants, nor below what keeps arriving
        down = max(up, self._clamp(math.ceil(max(in_system, floor) - 1e-9)))
        if current > self.maximum:
            return Decision(load.at, self.name, current, self.maximum, f"{why}; over the maximum")
        if down >= current:
            self._lower_since = None
            target = self._clamp(current)
            return Decision(load.at, self.name, current, target, f"{why} -> {target}")
        return self._keep_alive(load, current, down, why)

    def _clamp(self, workers: int) -> int:
        return _clamp(workers, self.minimum, self.maximum)

    def _keep_alive(self, load: Load, current: int, down: int, why: str) -> Decision:
        if self._lower_since is None:
            self._lower_since, self._lower_max = load.at, down
        self._lower_max = max(self._lower_max, down)
        reason = f"{why}; {load.busy} busy + {load.queued} queued fit in {self._lower_max}"
        left = self.keep_alive_s - (load.at - self._lower_since)
        if left > 0:
            held = f"keep-alive {left:.0f} s left"
            return Decision(load.at, self.name, current, current, reason, held)
        target = self._lower_max
        self._lower_since = None
        return Decision(load.at, self.name, current, target, f"{reason} -> {target} (down)")

    def drain_time(self, load: Load) -> float:
        """Within how long the backlog is to drain: `drain_s` plus `drain_per_start` of the
        start-up time (the load's if it says, else `startup_s`)."""
        startup = self.startup_s if load.startup_s is None else load.startup_s
        return self.drain_s + self.drain_per_start * startup

    def _remember(self, load: Load) -> None:
        self._rates.append((load.at, load.arrival_rate))
        while len(self._rates) > 1 and self._rates[1][0] <= load.at - RATE_WINDOW_S:
            self._rates.popleft()

    def rising(self, load: Load) -> bool:
        """Whether the arrival rate is clearly above what it was a window ago: by more than
        RISE_Z standard deviations of the difference of two Poisson counts over the window."""
        if not self._rates:
            return False
        before, now = self._rates[0][1], load.arrival_rate
        noise = math.sqrt((before + now) / RATE_WINDOW_S)
        return now - before > RISE_Z * noise

    def flow(self, rate: float, service: float, z: float | None = None) -> float:
        """Slots that `rate` tasks/s of `service` s keep busy (Little's law), less the noise of a
        rate measured over RATE_WINDOW_S (`z` standard deviations, `noise_z` by default) and the
        tolerance."""
        if rate <= 0 or service <= 0:
            return 0.0
        noise = service * math.sqrt(rate / RATE_WINDOW_S)
        tolerance = (self.noise_z if z is None else z) * noise + self.flow_tolerance * self.slots
        return max(0.0, rate * service - tolerance)

    def needed(self, load: Load) -> tuple[float, str]:
        """Slots wanted now, and how that was worked out (the reason's first part)."""
        if load.service_s <= 0:
            slots = float(load.busy + load.queued)
            return slots, f"service time unknown: {load.busy} busy + {load.queued} queued"
        service = load.service_s
        absorbed = min(self.wait_cap, self.wait_s * load.busy / service)
        waiting = load.queued > absorbed
        rate, source = (load.arrival_rate, "arrivals") if waiting else (0.0, "")
        forecast = load.forecast_rate
        if forecast is not None and forecast > rate and self.rising(load):
            rate, source = forecast, "forecast"
        flow = self.flow(rate, service)
        drain = self.drain_time(load)
        backlog = max(0.0, load.queued - absorbed) * min(1.0, service / drain)
        parts = [f"{source} {rate:.2f}/s x {service:.1f} s"] if source else []
        parts.append(f"backlog {load.queued} in {drain:.0f} s" if load.queued else "")
        how = " + ".join(p for p in parts if p) or f"nothing queued, {load.busy} busy"
        return flow + backlog, f"{how}: {flow + backlog:.1f} slots / {self.slots} per worker"
