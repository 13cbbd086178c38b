"""Health checks and the alerts they raise: one alert when a check changes state, never one per
failed probe.

A probe says how one check looks now (ok, degraded or down, with a detail). A check's state
changes only when `CONFIRM` probes in a row agree on a new level (one blip is no alert), and each
change is one alert: "down", "degraded", or "recovered" — a recovery also updates the alert it
ends, in place ("resolved after 2 min"). A check that changes state `FLAP_CHANGES` times within
`FLAP_WINDOW` seconds is flapping: one alert says so, and the changes after it are not announced
one by one, until the check has held one level for `FLAP_WINDOW` seconds; one alert then says
where it settled. Pure: the caller keeps the states (in the event store) and says the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

CONFIRM = 2  # probes in a row that must agree before a check changes state
FLAP_CHANGES = 4
FLAP_WINDOW = 600.0  # seconds
AGGREGATE = "alert:"  # the event store's aggregate of one check: alert:<check>
CHANGED = "check_changed"  # {level, detail, previous, flapping, raised_at, since}
# The checks the elected pm runs, by name (an event of alert:<name> records each change).
CHECKS = (
    "broker",
    "queues",
    "workers",
    "store",
    "disk",
    "memory",
    "breakers",
    "slack",
    "bot",
    "repos",
)


class Level(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True)
class Probe:
    check: str  # "broker", "store", "workers", "disk", "slack", "bot", …
    level: Level
    detail: str = ""


@dataclass(frozen=True)
class CheckState:
    """A check as its alerts have it: its level, since when, its recent changes."""

    check: str
    level: Level = Level.OK
    detail: str = ""
    since: float = 0.0
    raised_at: float = 0.0  # when the alert that is open now was raised (0: none open)
    changes: tuple[float, ...] = ()  # times of recent changes, for flapping
    flapping: bool = False
    pending: Level | None = None  # a new level seen, not yet confirmed
    pending_count: int = 0


@dataclass(frozen=True)
class Alert:
    """What to say in the alert channel about one change of one check."""

    check: str
    kind: str  # "down" | "degraded" | "recovered" | "flapping" | "settled"
    level: Level
    detail: str
    at: float
    open_for: float = 0.0  # a recovery: how long the alert it ends was open
    raised_at: float = 0.0  # a recovery: when that alert was raised (to find its message)

    def text(self) -> str:
        name = self.check.replace("_", " ")
        match self.kind:
            case "recovered":
                return f":white_check_mark: {name} recovered after {span(self.open_for)}."
            case "flapping":
                return (
                    f":warning: {name} is flapping (changing state often); now {self.level}: "
                    f"{self.detail}. Further changes are summarised once it settles."
                )
            case "settled":
                return f":information_source: {name} settled: {self.level}. {self.detail}".strip()
            case "down":
                return f":rotating_light: {name} is down: {self.detail}"
        return f":warning: {name} is degraded: {self.detail}"


@dataclass
class Verdict:
    state: CheckState
    alerts: list[Alert] = field(default_factory=list)


def judge(state: CheckState | None, probe: Probe, now: float) -> Verdict:
    """The check's state after `probe`, and the alerts it calls for (none, usually)."""
    state = state or CheckState(probe.check, since=now)
    if probe.level == state.level:
        settled = state.flapping and now - state.since >= FLAP_WINDOW
        state = replace(state, detail=probe.detail, pending=None, pending_count=0)
        if settled:
            return _settle(state, now)
        return Verdict(state)
    count = state.pending_count + 1 if probe.level == state.pending else 1
    if count < CONFIRM:
        return Verdict(replace(state, pending=probe.level, pending_count=count))
    return _change(state, probe, now)


def _change(state: CheckState, probe: Probe, now: float) -> Verdict:
    changes = (*(t for t in state.changes if now - t < FLAP_WINDOW), now)
    was_open = state.raised_at
    new = replace(
        state,
        level=probe.level,
        detail=probe.detail,
        since=now,
        changes=changes,
        pending=None,
        pending_count=0,
        raised_at=0.0 if probe.level is Level.OK else (was_open or now),
    )
    if state.flapping:
        return Verdict(new)  # summarised when it settles
    if len(changes) >= FLAP_CHANGES:
        new = replace(new, flapping=True)
        return Verdict(new, [Alert(probe.check, "flapping", probe.level, probe.detail, now)])
    if probe.level is Level.OK:
        alert = Alert(
            probe.check, "recovered", Level.OK, probe.detail, now, now - was_open, was_open
        )
        return Verdict(new, [alert])
    return Verdict(new, [Alert(probe.check, probe.level.value, probe.level, probe.detail, now)])


def _settle(state: CheckState, now: float) -> Verdict:
    state = replace(state, flapping=False, changes=())
    alert = Alert(state.check, "settled", state.level, state.detail, now)
    return Verdict(state, [alert])


def span(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
