"""One `aico pm`'s second: claim or keep the lead; if it leads, decide the cluster's pool; run
this host's share of it; tell the store how this pm stands. Each step fails alone: a store or a
broker that is away for a while stops the decisions, never the supervision of the workers."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from core.domain.health import span
from core.ports import EventStore
from core.usecases.alerts import AlertDesk
from core.usecases.leadership import Leadership
from core.usecases.scaling import PoolScaler
from core.usecases.status import HEARTBEAT_EVERY, LIVE_WITHIN, PM, is_task_worker
from workers.pm.supervisor import Supervisor

log = logging.getLogger(__name__)

ME = f"{socket.gethostname()}:{os.getpid()}"
DECIDE_EVERY = 2.0  # seconds between the leader's decisions


@dataclass
class ControlPlane:
    store: EventStore
    leadership: Leadership
    scaler: PoolScaler
    supervisor: Supervisor | None  # None: a platform scaler runs the workers (AICO_POOL=external)
    host_load: Callable[[], Any]  # -> a reading with .saturated() and .describe()
    drain_timeout: float = 60.0  # how long the workers may drain when the pm stops
    alerts: AlertDesk | None = None  # where a worker's death is told
    last_write: float = field(default_factory=time.monotonic)  # this pm's last heartbeat written
    _crash: tuple[str, float, int] | None = None  # the open alert of a dead worker: key, when, pid
    _next_decision: float = 0.0
    _next_beat: float = 0.0
    _failing: set[str] = field(default_factory=set)  # steps failing now: an outage logs once

    def tick(self, now: float) -> None:
        leader = self._step("lead", self.leadership.tick) or False
        if now >= self._next_decision:
            self._next_decision = now + DECIDE_EVERY
            self._refresh_me()
            if leader:
                self._step("decide", self.scaler.decide)
        if (sup := self.supervisor) is not None:
            share = self._step("share", lambda: self.scaler.share(sup.target))
            sup.target = sup.target if share is None else share
            sup.tick(now, self._busy() if len(sup.workers) > sup.target else None)
            if self._crash is not None:
                self._step("replaced", self._replaced)
        if now >= self._next_beat:
            self._next_beat = now + HEARTBEAT_EVERY
            self._step("heartbeat", self._beat)

    def crashed(self, pid: int, code: int) -> None:
        """The supervisor's word that a worker died unasked: one alert, however many die before
        a replacement is live (a crash loop is one alert, not a flood)."""
        if self._crash is not None or self.alerts is None:
            return
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        key = f"worker:{ME}:{pid}"
        text = (
            f":rotating_light: task worker {pid} on {ME.split(':')[0]} died ({how}); "
            "the pm starts another"
        )
        self._crash = (key, time.time(), pid)
        self._step("alert", lambda: self.alerts.say(key, text) if self.alerts else None)

    def _replaced(self) -> None:
        """Once a worker started after the crash is heard from, the recovery notice."""
        if self._crash is None or self.alerts is None or self.supervisor is None:
            return
        key, at, pid = self._crash
        started = {w.pid for w in self.supervisor.workers}
        beats = self.store.workers(seen_since=at)
        new = [b for b in beats if is_task_worker(b) and b.get("pid") in started]
        if not new:
            return
        after = time.time() - at
        text = (
            f":white_check_mark: task worker {pid} on {ME.split(':')[0]} was replaced by "
            f"worker {new[0]['pid']} after {span(after)}"
        )
        self.alerts.say(
            f"{key}:replaced", text, resolves=key, resolution=f"resolved after {span(after)}"
        )
        self._crash = None

    def _refresh_me(self) -> None:
        reading = self.host_load()
        sup = self.supervisor
        self.scaler.me = replace(
            self.scaler.me,
            workers=len(sup.workers) if sup else 0,
            draining=len(sup.draining) if sup else 0,
            target=sup.target if sup else 0,
            leader=self.leadership.leader,
            # with AICO_POOL=external the workers run elsewhere: this host's load guards nothing
            saturated=reading.saturated() if sup else "",
            host_load=reading.describe(),
        )

    def _busy(self) -> dict[int, int]:
        """Busy slots of this host's task workers, by pid, from their heartbeats."""
        try:
            beats = self.store.workers(seen_since=self.scaler.clock() - LIVE_WITHIN)
        except Exception:  # the store is away: drain the newest first
            return {}
        host = socket.gethostname()
        return {
            int(b["pid"]): int(b.get("busy", 0))
            for b in beats
            if is_task_worker(b) and b.get("host") == host and "pid" in b
        }

    def _beat(self) -> None:
        me = self.scaler.me
        state = {
            "kind": PM,
            "pm": me.id,
            "min": me.minimum,
            "max": me.maximum,
            "workers": me.workers,
            "draining": me.draining,
            "target": me.target,
            "leader": self.leadership.leader,
            "external": me.external,
            "saturated": me.saturated,
            "host_load": me.host_load,
        }
        self.store.heartbeat(f"pm:{me.id}", state)
        self.last_write = time.monotonic()

    def _step(self, name: str, run: Callable[[], Any]) -> Any:
        try:
            result = run()
        except Exception as exc:  # one step failing must not stop the others
            if name not in self._failing:
                log.warning("pm: %s failed (%s); trying again", name, exc)
            self._failing.add(name)
            return None
        if name in self._failing:
            log.info("pm: %s works again", name)
            self._failing.discard(name)
        return result
