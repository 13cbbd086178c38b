"""What aico does to keep itself well, and `/aico recover`.

The elected pm runs the recovery sweep (tasks whose queue message was lost, queued again) and the
store's upkeep (heartbeats of workers long gone forgotten, SQLite's WAL checkpointed) on its
schedule; each run is an event (`ops:recovery`), and what it did to tasks is announced in the
alert channel. `/aico recover` (admins) asks for all of it now, the health checks included: the
bot records the request (`ops:requests`), the elected pm runs it within seconds and answers the
admin with what it found and did. Nothing here runs a shell or touches a file outside aico's own
store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.domain.health import Level, Probe
from core.ports import EventStore, Notifier
from core.usecases.alerts import AlertDesk

log = logging.getLogger(__name__)

REQUESTS = "ops:requests"
ASKED, ANSWERED = "recover_requested", "recover_answered"
ACTIONS = "ops:recovery"
RAN = "recovery_ran"
HEARTBEATS_KEPT = 86400.0  # seconds: a worker not heard from for a day is forgotten


@dataclass
class RecoverRequests:
    """The bot's side of `/aico recover`."""

    store: EventStore

    def ask(self, by: str, response_url: str) -> str:
        self.store.record(REQUESTS, ASKED, {"by": by, "response_url": response_url})
        return (
            "Running the health checks, the recovery sweep and the store's upkeep now; "
            "the report comes here within seconds."
        )


@dataclass
class Operations:
    store: EventStore
    alerts: AlertDesk
    checks: Callable[[], Sequence[Probe]]
    sweep: Callable[[], Sequence[str]]
    notifier: Notifier | None = None
    clock: Callable[[], float] = time.time
    stats_days: float = 0.0  # AICO_STATS_RETENTION_DAYS: days of statistics kept (0: all)

    def run(self, by: str = "") -> str:
        """The sweep and the upkeep (and, asked by an admin, the checks); a report of it."""
        probes = list(self.checks()) if by else []
        swept = list(self.sweep())
        now = self.clock()
        stats_before = now - self.stats_days * 86400 if self.stats_days else 0.0
        kept = self.store.maintain(now - HEARTBEATS_KEPT, stats_older_than=stats_before)
        data: dict[str, Any] = {"by": by or "schedule", "requeued": swept, **kept}
        data["checks"] = {p.check: p.level.value for p in probes}
        record = self.store.record(ACTIONS, RAN, data)
        if swept:
            self.alerts.say(
                f"recovery:{record.version}",
                f":recycle: The recovery sweep queued again {len(swept)} task(s) whose queue "
                f"message was lost: {', '.join(f'`{t}`' for t in swept[:20])}",
            )
        return _report(probes, swept, kept)

    def sweep_now(self) -> None:
        """The scheduled run: the sweep and the upkeep, no checks (they have their own job)."""
        self.run()

    def answer_requests(self) -> int:
        """Run each `/aico recover` not answered yet, and answer its admin."""
        recent = self.store.tail(REQUESTS, 50)
        answered = {r.data.get("asked") for r in recent if r.type == ANSWERED}
        count = 0
        for request in recent:
            if request.type != ASKED or request.version in answered:
                continue
            self.store.record(REQUESTS, ANSWERED, {"asked": request.version})
            report = self.run(by=str(request.data.get("by", "")))
            url = str(request.data.get("response_url", ""))
            if url and self.notifier is not None:
                self.notifier.respond(url, report)
            log.info("/aico recover by %s: %s", request.data.get("by"), report)
            count += 1
        return count


def _report(probes: list[Probe], swept: list[str], kept: dict[str, int]) -> str:
    lines = ["*Recovery report*"]
    if probes:
        bad = [p for p in probes if p.level is not Level.OK]
        lines.append(
            f"Checks: {len(probes) - len(bad)} of {len(probes)} ok"
            + "".join(f"\n• {p.check}: {p.level.value}, {p.detail}" for p in bad)
        )
    lines.append(
        f"Sweep: {len(swept)} stranded task(s) queued again"
        + (": " + ", ".join(f"`{t}`" for t in swept[:20]) if swept else "")
    )
    upkeep = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in kept.items())
    lines.append(f"Store upkeep: {upkeep or 'nothing to do'}")
    return "\n".join(lines)
