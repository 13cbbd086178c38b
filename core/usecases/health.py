"""The health checks the elected pm runs every AICO_CHECK_EVERY seconds (core.domain.health
decides what a change is; this runs the probes, keeps each check's state, records each change as
an event of `alert:<check>`, and hands the alerts to the alert desk)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from core.domain import health
from core.domain.health import AGGREGATE, CHANGED, CheckState, Level, Probe
from core.ports import EventStore
from core.usecases.alerts import AlertDesk

log = logging.getLogger(__name__)


@dataclass
class Health:
    store: EventStore
    alerts: AlertDesk
    probes: Mapping[str, Callable[[], Probe | None]]
    clock: Callable[[], float] = time.time
    _states: dict[str, CheckState] = field(default_factory=dict)

    def run(self) -> list[Probe]:
        """Every probe once; each change of a check's state recorded and alerted."""
        seen = []
        for name, probe in self.probes.items():
            result = _probe(name, probe)
            if result is None:  # no verdict now (what it looks at is behind a part that is down)
                continue
            seen.append(result)
            self._judge(result)
        return seen

    def states(self) -> dict[str, CheckState]:
        return {name: self._state(name) for name in self.probes}

    def _judge(self, probe: Probe) -> None:
        now = self.clock()
        before = self._state(probe.check)
        verdict = health.judge(before, probe, now)
        self._states[probe.check] = verdict.state
        if verdict.state.level != before.level or verdict.alerts:
            state = verdict.state
            self.store.record(
                AGGREGATE + probe.check,
                CHANGED,
                {
                    "level": state.level.value,
                    "previous": before.level.value,
                    "detail": state.detail,
                    "since": state.since,
                    "raised_at": state.raised_at,
                    "flapping": state.flapping,
                },
            )
        for alert in verdict.alerts:
            log.warning("check %s: %s", probe.check, alert.text())
            if alert.kind == "recovered":
                self.alerts.say(
                    _key(probe.check, alert.at),
                    alert.text(),
                    resolves=_key(probe.check, alert.raised_at),
                    resolution=f"resolved after {health.span(alert.open_for)}",
                )
            else:
                self.alerts.say(_key(probe.check, alert.at), alert.text())

    def _state(self, name: str) -> CheckState:
        """A check's state: this pm's, or the last one recorded (a pm just elected goes on
        from there: an alert open stays open, and its recovery resolves it)."""
        if name not in self._states:
            last = self.store.latest(AGGREGATE + name)
            self._states[name] = _restored(name, last.data) if last else CheckState(name)
        return self._states[name]


def _probe(name: str, probe: Callable[[], Probe | None]) -> Probe | None:
    try:
        return probe()
    except Exception as exc:  # a probe that cannot run says the check is down, and why
        return Probe(name, Level.DOWN, f"the check itself failed: {exc}")


def _restored(name: str, data: dict) -> CheckState:
    return CheckState(
        name,
        level=Level(data.get("level", "ok")),
        detail=str(data.get("detail", "")),
        since=float(data.get("since", 0.0)),
        raised_at=float(data.get("raised_at", 0.0)),
        flapping=bool(data.get("flapping", False)),
    )


def _key(check: str, at: float) -> str:
    return f"check:{check}:{int(at * 1000)}"
