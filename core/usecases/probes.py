"""The probes of the health checks: each looks at one part of the system, through its port, and
says ok, degraded or down with a detail a person can act on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.domain import pool
from core.domain.health import Level, Probe
from core.domain.messages import TASKS
from core.ports import Broker, EventStore
from core.usecases.status import BOT, HEARTBEAT_EVERY, LIVE_WITHIN, is_task_worker


def broker(link: Broker, depth: Callable[[str], tuple[int, int]]) -> Callable[[], Probe]:
    def probe() -> Probe:
        if not link.connected.is_set():
            return Probe("broker", Level.DOWN, "RabbitMQ is not reachable; aico reconnects")
        depth(TASKS)  # raises when the broker does not answer
        return Probe("broker", Level.OK, "RabbitMQ answers")

    return probe


def queues(link: Broker, depth: Callable[[str], tuple[int, int]]) -> Callable[[], Probe | None]:
    def probe() -> Probe | None:
        if not link.connected.is_set():
            return None  # the broker check says so, once
        ready, consumers = depth(TASKS)
        if ready and not consumers:
            return Probe("queues", Level.DOWN, f"{ready} task(s) wait and no task worker consumes")
        return Probe("queues", Level.OK, f"{ready} task(s) waiting, {consumers} consumer(s)")

    return probe


@dataclass
class Beats:
    """The heartbeats of the last LIVE_WITHIN seconds, read once per round of checks."""

    store: EventStore
    clock: Callable[[], float] = time.time

    def read(self) -> list[dict]:
        return self.store.workers(seen_since=self.clock() - LIVE_WITHIN)


WORKERS_GRACE = 60.0  # seconds a pool may stay short (workers starting, being replaced)


def workers(store: EventStore, beats: Beats, clock=time.monotonic) -> Callable[[], Probe]:
    """Down when no task worker is heard from while the pool wants some, degraded when fewer
    than it wants; either only once it has lasted WORKERS_GRACE (a worker that just started, or
    one that died and is being replaced — that has its own alert — is no outage)."""
    short_since: list[float] = []

    def probe() -> Probe:
        live = [b for b in beats.read() if is_task_worker(b)]
        decision = store.latest(pool.DECISION)
        wanted = int(decision.data["target"]) if decision else 0
        if len(live) >= wanted:
            short_since.clear()
            return Probe("workers", Level.OK, f"{len(live)} task worker(s) live")
        short_since[:] = short_since or [clock()]
        if clock() - short_since[0] < WORKERS_GRACE:
            return Probe("workers", Level.OK, f"{len(live)} task worker(s) live, more starting")
        if not live:
            return Probe("workers", Level.DOWN, f"no task worker is live; {wanted} wanted")
        return Probe("workers", Level.DEGRADED, f"{len(live)} task worker(s) live of {wanted}")

    return probe


def store_writable(last_write: Callable[[], float], clock=time.monotonic) -> Callable[[], Probe]:
    """`last_write`: when this pm's heartbeat was last written (monotonic seconds)."""

    def probe() -> Probe:
        silent = clock() - last_write()
        if silent > 3 * HEARTBEAT_EVERY:
            return Probe("store", Level.DOWN, f"the event store took no write for {silent:.0f} s")
        return Probe("store", Level.OK, "the event store takes writes")

    return probe


def breakers(beats: Beats) -> Callable[[], Probe]:
    def probe() -> Probe:
        live = [b for b in beats.read() if "breaker" in b]
        opened = [b for b in live if b["breaker"].get("state") != "closed"]
        if live and len(opened) == len(live):
            return Probe(
                "breakers",
                Level.DOWN,
                f"Claude's circuit breaker is open on all {len(live)} workers",
            )
        if opened:
            return Probe(
                "breakers",
                Level.DEGRADED,
                f"Claude's circuit breaker is open on {len(opened)} of {len(live)} workers",
            )
        return Probe("breakers", Level.OK, "Claude's circuit breakers are closed")

    return probe


def slack(check: Callable[[], None]) -> Callable[[], Probe]:
    def probe() -> Probe:
        try:
            check()
        except Exception as exc:
            return Probe("slack", Level.DOWN, f"Slack refused or did not answer auth.test: {exc}")
        return Probe("slack", Level.OK, "the bot token is valid")

    return probe


def bot(beats: Beats) -> Callable[[], Probe]:
    def probe() -> Probe:
        bots = [b for b in beats.read() if b.get("kind") == BOT]
        if not bots:
            return Probe(
                "bot", Level.DOWN, f"the bot has not been heard from in {LIVE_WITHIN:.0f} s"
            )
        cut = [b for b in bots if b.get("mode") == "socket" and not b.get("connected", True)]
        if cut and len(cut) == len(bots):
            return Probe("bot", Level.DOWN, "the bot's Socket Mode connection is down")
        return Probe("bot", Level.OK, f"{len(bots)} bot(s) live")

    return probe


def usage(name: str, percent: Callable[[], float], what: str) -> Callable[[], Probe]:
    """Disk or memory: degraded at 90% used, down at 97%."""

    def probe() -> Probe:
        used = percent()
        level = Level.DOWN if used >= 97 else Level.DEGRADED if used >= 90 else Level.OK
        return Probe(name, level, f"{what} {used:.0f}% used")

    return probe
