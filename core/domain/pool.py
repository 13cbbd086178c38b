"""The task-worker pool as the event store records it: who leads the control plane, what the
policy decided, whether an admin pinned the pool, how good the arrival forecast is. Each is its
own aggregate in the store (`pool:<what>`), one event per change, and the latest event of each is
the current state. Also how a cluster-wide target is shared out among the hosts' pm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

AGGREGATE = "pool:"  # every pool aggregate's id starts so (the task projection skips them)
# The aggregates of the system rather than of a task: the pool's, each health check's
# (core.domain.health), the operations log's (alerts to post, recovery actions), each
# repository's (clones and fetches), the code changes to settle on each host, each channel's
# settings. Each is a plain sequence of events, read back by its latest or its last few; none
# makes a task.
SYSTEM = (AGGREGATE, "alert:", "ops:", "repo:", "changes:", "config:")
LEADER = "pool:leader"  # leader_elected {leader, previous, reason}
DECISION = "pool:decision"  # scaled {target, current, shares, reason, held, policy, inputs}
PIN = "pool:pin"  # pinned {workers, by} | unpinned {by}
FORECAST = "pool:forecast"  # forecast_trained {trained, samples, mae_model, mae_naive, trusted}

LEADER_ELECTED, SCALED, PINNED, UNPINNED, FORECAST_TRAINED = (
    "leader_elected",
    "scaled",
    "pinned",
    "unpinned",
    "forecast_trained",
)
MAX_PIN = 1000  # more workers than anyone means: a typo


@dataclass(frozen=True)
class Record:
    """One event of a pool aggregate, as the store returns it."""

    aggregate_id: str
    type: str
    data: dict[str, Any]
    at: float
    version: int


@dataclass(frozen=True)
class Host:
    """One `aico pm` as its heartbeat describes it: the bounds of its pool and what runs."""

    id: str  # host:pid of the pm
    minimum: int
    maximum: int
    workers: int = 0  # task workers it runs now (draining ones not counted)
    draining: int = 0
    target: int = 0
    leader: bool = False
    external: bool = False  # a platform scaler (KEDA, HPA) runs the workers, not this pm
    saturated: str = ""  # why its host cannot take another worker ("" if it can)
    host_load: str = ""  # CPU, memory and load, as read
    seen_at: float = 0.0

    @classmethod
    def from_heartbeat(cls, beat: Mapping[str, Any]) -> Host:
        return cls(
            id=str(beat.get("pm") or beat["id"]),
            minimum=int(beat.get("min", 0)),
            maximum=int(beat.get("max", 0)),
            workers=int(beat.get("workers", 0)),
            draining=int(beat.get("draining", 0)),
            target=int(beat.get("target", 0)),
            leader=bool(beat.get("leader", False)),
            external=bool(beat.get("external", False)),
            saturated=str(beat.get("saturated", "")),
            host_load=str(beat.get("host_load", "")),
            seen_at=float(beat.get("seen_at", 0.0)),
        )


@dataclass(frozen=True)
class Pin:
    """An admin's `/aico scale <n>`: the pool's size until `/aico scale auto`."""

    workers: int
    by: str
    at: float


@dataclass(frozen=True)
class PoolState:
    """The pool's current state, from the latest event of each pool aggregate."""

    leader: Record | None = None
    decision: Record | None = None
    pin: Pin | None = None
    forecast: Record | None = None
    hosts: list[Host] = field(default_factory=list)

    @property
    def desired(self) -> int | None:
        """The cluster-wide worker count the policy (or the pin) wants; None before any."""
        return int(self.decision.data["target"]) if self.decision else None


def pin_of(record: Record | None) -> Pin | None:
    if record is None or record.type != PINNED:
        return None
    return Pin(int(record.data["workers"]), str(record.data.get("by", "")), record.at)


def bounds(hosts: list[Host]) -> tuple[int, int]:
    """The cluster's bounds: the sums of its hosts' (for external pools, the leader's own)."""
    return sum(h.minimum for h in hosts), sum(h.maximum for h in hosts)


def shares(total: int, hosts: list[Host]) -> dict[str, int]:
    """`total` workers shared out among `hosts` as evenly as their bounds allow: each gets its
    minimum, then one at a time goes to the host with the fewest that still has room (ties by
    id, so every pm computes the same split)."""
    given = {h.id: h.minimum for h in hosts}
    room = {h.id: h.maximum for h in hosts}
    left = total - sum(given.values())
    while left > 0:
        open_ = [h for h in sorted(given) if given[h] < room[h]]
        if not open_:
            break
        fewest = min(open_, key=lambda h: (given[h], h))
        given[fewest] += 1
        left -= 1
    return given


def describe(
    state: PoolState,
    now: float,
    text: Callable[[str], str] = str,
    mention: Callable[[str], str] = str,
) -> list[str]:
    """The pool in a few lines, for `/aico status` (`text` escapes for Slack, `mention` makes a
    user id a mention) and `aico status` (as they are)."""
    lines = [text(_hosts_line(state.hosts))]
    if state.decision is not None:
        d = state.decision.data
        line = (
            f"Target {d['target']} task worker(s) ({d.get('policy', '?')}), decided "
            f"{_ago(now - state.decision.at)}: {d.get('current', '?')} → {d['target']}, "
            f"{d.get('reason', '')}"
        )
        lines.append(text(line + (f"; held back: {d['held']}" if d.get("held") else "")))
    else:
        lines.append("Target: no decision yet (the pm decides within seconds of its start)")
    if state.pin is not None:
        lines.append(
            f"Pinned to {state.pin.workers} by {mention(state.pin.by)} {_ago(now - state.pin.at)}"
            " (`/aico scale auto` hands it back to the policy)"
        )
    if state.leader is not None:
        data = state.leader.data
        took = f", after {data['previous']}" if data.get("previous") else ""
        lines.append(text(f"Leader: {data['leader']}, elected {_ago(now - state.leader.at)}{took}"))
    if state.forecast is not None:
        lines.append(text(f"Forecast: {state.forecast.data.get('summary', '')}"))
    else:
        lines.append("Forecast: not trained yet (arrivals are forecast once there is history)")
    return lines


def _hosts_line(hosts: list[Host]) -> str:
    if not hosts:
        return "Pool: no `aico pm` has reported in the last 15 s"
    parts = []
    for h in hosts:
        runs = "a platform scaler runs its workers" if h.external else f"runs {h.workers}"
        extra = f", {h.draining} draining" if h.draining else ""
        lead = " (leader)" if h.leader else ""
        load = f"; {h.host_load}" if h.host_load else ""
        guard = f"; saturated: {h.saturated}" if h.saturated else ""
        bounds = f"{h.minimum}-{h.maximum}"
        parts.append(
            f"{h.id}{lead} {runs} (target {h.target}{extra}, bounds {bounds}{load}{guard})"
        )
    return "Pool: " + " · ".join(parts)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
