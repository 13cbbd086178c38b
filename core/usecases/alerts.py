"""The alert channel: what aico says about itself, recorded first, posted by one process.

Any process may raise an alert (the elected pm's health checks, a pm whose worker died, the
result worker when a task is dead-lettered, a recovery action): `say()` records it as an event of
the operations log (`ops:alerts`). The elected pm's `flush()` posts what is recorded and not yet
posted, oldest first, and records each post: Slack being away delays an alert, never loses it.
A recovery updates, in place, the alert it resolves ("resolved after 2 min"). Each alert is
posted with its key in the message's metadata, so a post whose answer was lost is found, not
repeated. Without an alert channel, alerts go to the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.domain.pool import Record
from core.domain.text import SECTION_LIMIT, preview
from core.errors import AicoError
from core.ports import EventStore, Notifier
from core.slack.blocks import section

log = logging.getLogger(__name__)

OUTBOX = "ops:alerts"
RAISED, POSTING, POSTED = "alert_raised", "alert_posting", "alert_posted"
METADATA_TYPE = "aico_alert"
LOOK_BACK = 400  # events of the outbox a flush reads: far more than are ever pending


@dataclass
class AlertDesk:
    store: EventStore
    notifier: Notifier | None
    channel: str  # AICO_ALERT_CHANNEL; "" -> the log
    clock: Callable[[], float] = time.time

    def say(
        self,
        key: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        resolves: str = "",
        resolution: str = "",
    ) -> None:
        """Record an alert to be posted. `key` names the happening (the same key twice is one
        alert); `resolves`: the key of an earlier alert whose message now says `resolution`."""
        data: dict[str, Any] = {"key": key, "text": text, "blocks": blocks or []}
        if resolves:
            data |= {"resolves": resolves, "resolution": resolution}
        if any(r.type == RAISED and r.data["key"] == key for r in self._recent()):
            return
        self.store.record(OUTBOX, RAISED, data)

    def flush(self) -> int:
        """Post what is recorded and not posted yet, oldest first; returns how many were posted.
        A Slack that fails stops the flush: the rest waits for the next one."""
        recent = self._recent()
        posted = {r.data["key"]: r.data.get("ts", "") for r in recent if r.type == POSTED}
        tried = {r.data["key"] for r in recent if r.type == POSTING}
        raised = {r.data["key"]: r for r in recent if r.type == RAISED}
        count = 0
        for key, alert in raised.items():
            if key in posted:
                continue
            try:
                ts = self._post(alert, found_first=key in tried)
            except (AicoError, OSError, TimeoutError) as exc:
                log.warning(
                    "alert %s not posted yet (%s); it is posted when Slack is back", key, exc
                )
                break
            self.store.record(OUTBOX, POSTED, {"key": key, "ts": ts})
            posted[key] = ts
            count += 1
            self._resolve(alert, raised, posted)
        return count

    def _post(self, alert: Record, found_first: bool) -> str:
        key, text = alert.data["key"], alert.data["text"]
        if not self.channel or self.notifier is None:
            log.warning("ALERT %s", text)
            return ""
        if found_first:  # an earlier flush may have posted it and lost the answer
            ts = self.notifier.find_message(self.channel, METADATA_TYPE, key)
            if ts:
                return ts
        self.store.record(OUTBOX, POSTING, {"key": key})
        metadata = {"event_type": METADATA_TYPE, "event_payload": {"task_id": key}}
        body = alert.data["blocks"] or [section(preview(text, SECTION_LIMIT))]
        return self.notifier.post(self.channel, text, body, metadata=metadata)

    def _resolve(self, alert: Record, raised: dict[str, Record], posted: dict[str, str]) -> None:
        """Update the message of the alert this one resolves, if both are in the channel."""
        original = raised.get(alert.data.get("resolves", ""))
        ts = posted.get(original.data["key"], "") if original else ""
        if not (original and ts and self.channel and self.notifier):
            return
        text = f"{original.data['text']}\n_{alert.data.get('resolution', 'resolved')}_"
        try:
            body = [section(preview(text, SECTION_LIMIT))]
            self.notifier.update(self.channel, ts, text, body)
        except (AicoError, OSError, TimeoutError) as exc:  # the recovery notice is posted
            log.warning("alert %s not marked resolved: %s", original.data["key"], exc)

    def _recent(self) -> list[Record]:
        return self.store.tail(OUTBOX, LOOK_BACK)
