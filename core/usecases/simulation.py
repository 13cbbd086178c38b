"""A discrete-event simulation of a pool of task workers under a scaling policy.

A trace is a list of tasks (arrival_s, service_s). Tasks wait in one FIFO queue and start in
any free slot of a ready worker (the least busy one, as RabbitMQ hands a delivery to a consumer
with prefetch room); wait = start - arrival. The pool starts at `minimum` ready workers at time
0. Every `tick_s` the policy is asked with a Load built as `aico pm` builds it (queue, busy
slots, workers including starting ones, the arrival rate and mean service time over the last
RATE_WINDOW_S, the forecast's rate), plus the start-up time `startup_s` (which the pm leaves
to the policy's default), and its decision is applied at once:

- a worker asked for becomes ready `startup_s` later;
- a scale-down first cancels workers still starting (the newest first), then drains ready ones,
  idle or least busy first: a draining worker takes no new task and leaves when its last task
  finishes. No task is ever cut.

worker_seconds counts every worker from when it was asked for until it left (start-up
included), up to the end of the simulation: when the last task finishes. With a forecast, it is
trained on the arrivals so far every `retrain_s` simulated seconds (the past only), and asked at
every tick. Everything is deterministic: the same trace and policy give the same figures.

At equal times, finished tasks free their slots first, then starting workers become ready, then
tasks arrive, then queued tasks start, then the policy is asked.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.domain.scaling import RATE_WINDOW_S, Load, Policy
from core.usecases.forecast import ArrivalForecast


@dataclass
class _Worker:
    id: int
    asked_at: float
    ready_at: float
    busy: int = 0
    draining: bool = False
    left_at: float | None = None

    def ready(self, now: float) -> bool:
        return self.left_at is None and not self.draining and self.ready_at <= now


class _Pool:
    """The workers, the queue and the tasks in flight."""

    def __init__(self, slots: int, startup_s: float) -> None:
        self.slots, self.startup_s = slots, startup_s
        self.workers: list[_Worker] = []  # every worker ever asked for
        self.active: list[_Worker] = []  # those that have not left
        self.queue: deque[tuple[float, float]] = deque()  # (arrival, service)
        self.running: list[tuple[float, int, int, float]] = []  # (finish, seq, worker, service)
        self.starting: list[tuple[float, int]] = []  # (ready_at, worker)
        self.waits: list[float] = []
        self.busy = 0
        self.busy_slot_s = 0.0
        self._seq = 0

    def in_pool(self) -> list[_Worker]:
        """The workers a policy counts: ready or starting, not draining."""
        return [w for w in self.active if not w.draining]

    def prune(self) -> None:
        if any(w.left_at is not None for w in self.active):
            self.active = [w for w in self.active if w.left_at is None]

    def add(self, now: float) -> None:
        worker = _Worker(len(self.workers), now, now + self.startup_s)
        self.workers.append(worker)
        self.active.append(worker)
        heapq.heappush(self.starting, (worker.ready_at, worker.id))

    def remove(self, count: int, now: float) -> None:
        pool = self.in_pool()
        starting = sorted((w for w in pool if w.ready_at > now), key=lambda w: -w.id)
        ready = sorted((w for w in pool if w.ready_at <= now), key=lambda w: (w.busy, -w.id))
        for worker in (starting + ready)[:count]:
            worker.draining = True
            if worker.busy == 0:
                worker.left_at = now
        self.prune()

    def finish(self, now: float) -> list[tuple[float, float]]:
        """Free the slots of the tasks that end at `now`: (finish, service) of each."""
        done = []
        while self.running and self.running[0][0] <= now:
            finish, _, wid, service = heapq.heappop(self.running)
            worker = self.workers[wid]
            worker.busy -= 1
            self.busy -= 1
            if worker.draining and worker.busy == 0:
                worker.left_at = finish
            done.append((finish, service))
        self.prune()
        return done

    def dispatch(self, now: float) -> None:
        while self.starting and self.starting[0][0] <= now:
            heapq.heappop(self.starting)
        while self.queue:
            free = [w for w in self.active if w.ready(now) and w.busy < self.slots]
            if not free:
                return
            worker = min(free, key=lambda w: (w.busy, w.id))
            arrival, service = self.queue.popleft()
            self.waits.append(now - arrival)
            worker.busy += 1
            self.busy += 1
            self.busy_slot_s += service
            self._seq += 1
            heapq.heappush(self.running, (now + service, self._seq, worker.id, service))


class _Window:
    """Arrivals and finished tasks of the last RATE_WINDOW_S, as the pm measures them."""

    def __init__(self, arrivals: Sequence[float]) -> None:
        self.arrivals = arrivals
        self.first = 0  # index of the oldest arrival in the window
        self.finished: deque[tuple[float, float]] = deque()
        self.service_sum = 0.0

    def add_finished(self, done: list[tuple[float, float]]) -> None:
        for finish, service in done:
            self.finished.append((finish, service))
            self.service_sum += service

    def read(self, now: float, arrived: int) -> tuple[float, float]:
        """(arrival rate, mean service time) over (now - window, now]."""
        since = now - RATE_WINDOW_S
        while self.first < arrived and self.arrivals[self.first] <= since:
            self.first += 1
        while self.finished and self.finished[0][0] <= since:
            self.service_sum -= self.finished.popleft()[1]
        service = self.service_sum / len(self.finished) if self.finished else 0.0
        return (arrived - self.first) / RATE_WINDOW_S, max(0.0, service)


def simulate(
    trace: Sequence[tuple[float, float]],
    policy: Policy,
    slots: int,
    minimum: int,
    startup_s: float,
    forecast: ArrivalForecast | None = None,
    tick_s: float = 1.0,
    retrain_s: float = 300.0,
) -> dict[str, Any]:
    """Run the trace through the pool under `policy`; the figures as a dict (see `_figures`)."""
    tasks = sorted(trace, key=lambda task: task[0])
    arrivals = [a for a, _ in tasks]
    pool, window = _Pool(slots, startup_s), _Window(arrivals)
    for _ in range(minimum):
        pool.add(0.0)
        pool.workers[-1].ready_at = 0.0
    now, ticks, arrived, changes, peak = 0.0, 0, 0, 0, minimum
    next_train = retrain_s
    while arrived < len(tasks) or pool.queue or pool.running:
        tick_at = ticks * tick_s
        candidates = [tick_at]
        if arrived < len(tasks):
            candidates.append(tasks[arrived][0])
        if pool.running:
            candidates.append(pool.running[0][0])
        if pool.starting:
            candidates.append(pool.starting[0][0])
        now = max(now, min(candidates))
        window.add_finished(pool.finish(now))
        while arrived < len(tasks) and tasks[arrived][0] <= now:
            pool.queue.append(tasks[arrived])
            arrived += 1
        pool.dispatch(now)
        if arrived == len(tasks) and not pool.queue and not pool.running:
            break
        if tick_at > now:
            continue
        ticks += 1
        if forecast is not None and now >= next_train:
            forecast.train(arrivals[:arrived], now)
            next_train = now + retrain_s
        decision = policy.decide(_load(pool, window, now, arrived, forecast))
        if decision.changed:
            changes += 1
            if decision.target > decision.current:
                for _ in range(decision.target - decision.current):
                    pool.add(now)
            else:
                pool.remove(decision.current - decision.target, now)
            pool.dispatch(now)
            peak = max(peak, len(pool.active))
    return _figures(pool, policy, now, changes, peak, forecast)


def _load(
    pool: _Pool, window: _Window, now: float, arrived: int, forecast: ArrivalForecast | None
) -> Load:
    rate, service = window.read(now, arrived)
    predicted = forecast.rate(window.arrivals, now) if forecast is not None else None
    return Load(
        at=now,
        queued=len(pool.queue),
        busy=pool.busy,
        workers=len(pool.in_pool()),
        slots=pool.slots,
        arrival_rate=rate,
        service_s=service,
        forecast_rate=predicted,
        startup_s=pool.startup_s,
    )


def _figures(
    pool: _Pool,
    policy: Policy,
    end: float,
    changes: int,
    peak: int,
    forecast: ArrivalForecast | None,
) -> dict[str, Any]:
    worker_s = sum(
        max(0.0, min(end, w.left_at if w.left_at is not None else end) - w.asked_at)
        for w in pool.workers
    )
    waits = sorted(pool.waits)
    return {
        "policy": policy.name,
        "tasks": len(waits),
        "p50_wait_s": round(_quantile(waits, 0.50), 3),
        "p95_wait_s": round(_quantile(waits, 0.95), 3),
        "p99_wait_s": round(_quantile(waits, 0.99), 3),
        "max_wait_s": round(waits[-1], 3) if waits else 0.0,
        "mean_wait_s": round(sum(waits) / len(waits), 3) if waits else 0.0,
        "worker_seconds": round(worker_s, 1),
        "scale_events": changes,
        "workers_started": len(pool.workers),
        "mean_workers": round(worker_s / end, 3) if end > 0 else 0.0,
        "peak_workers": peak,
        "utilisation": round(pool.busy_slot_s / (worker_s * pool.slots), 3) if worker_s else 0.0,
        "duration_s": round(end, 1),
        "forecast": forecast.quality.describe() if forecast is not None else "",
    }


def _quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated between the closest ranks."""
    if not values:
        return 0.0
    position = q * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)
