"""The Socket Mode canary: a socket that answers every ping and delivers no event is found.

A Socket Mode connection can stay open and keep answering pings while Slack routes no event to
it any more: no library notices (a dead socket, one with no pongs, slack_sdk replaces by itself).
Slack sends the app its own posts back as `message` events, so every `every` seconds the bot
posts a small message in the alert channel and deletes it once it came back over the socket.
One that is not back within `wait` seconds means the socket is mute: the bot opens a new
connection and raises one alert. The first canary back after that is one recovery notice, and
the alert says "resolved after …". Alerts are only recorded here (AlertDesk): the elected pm
posts them.

Policy apart from mechanism: `tick()` decides, with the clock it is given; posting, deleting,
reconnecting and alerting are the parts it is handed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from core.domain.health import span

log = logging.getLogger(__name__)

TEXT = "aico canary (ignore me)"
METADATA_TYPE = "aico_canary"
EVERY = 120.0  # seconds between two canaries: AICO_CANARY_EVERY
WAIT = 60.0  # seconds a canary has to come back: AICO_CANARY_WAIT
TICK = 0.5  # how often the canary's thread looks at the clock
HEARD = 64  # own messages of the canary's channel remembered (one may come before its post's ts)


class Alerts(Protocol):
    """What the canary raises alerts with: `core.usecases.alerts.AlertDesk`."""

    def say(
        self,
        key: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        resolves: str = "",
        resolution: str = "",
    ) -> None: ...


@dataclass(frozen=True)
class CanaryPlan:
    """What aico/processes.py hands the bot's Socket Mode loop to run a canary with."""

    channel: str  # AICO_ALERT_CHANNEL: where the canary is posted (the bot is in it)
    post: Callable[[str, str, dict[str, Any]], str]  # (channel, text, metadata) -> ts
    delete: Callable[[str, str], object]  # (channel, ts); what it returns is not looked at
    alerts: Alerts
    me: str  # host:pid, in the alert's key and text
    every: float = EVERY
    wait: float = WAIT


@dataclass(frozen=True)
class _Sent:
    ts: str
    at: float


class Canary:
    """Posts a canary every `plan.every` seconds and watches it come back over the socket.

    `heard(event)` is told every event the socket delivers (any thread); `tick()` does the rest.
    `reconnect()` opens a new Socket Mode connection in place of the current one.
    """

    def __init__(
        self,
        plan: CanaryPlan,
        reconnect: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.plan, self.reconnect, self.clock = plan, reconnect, clock
        self._lock = threading.Lock()
        self._heard: deque[str] = deque(maxlen=HEARD)
        self._sent: _Sent | None = None
        self._next_at = clock()  # the first canary at once: the socket works from the start
        self._seen_at: float | None = None
        self._mute_key = ""  # the open alert, while the socket is taken for mute
        self._mute_at = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ what the socket says

    def heard(self, event: dict[str, Any]) -> None:
        """An event delivered on the socket: remember a bot's new message in our channel."""
        if (
            event.get("type") == "message"
            and event.get("channel") == self.plan.channel
            and event.get("bot_id")
            and not event.get("subtype")
        ):
            with self._lock:
                self._heard.append(str(event.get("ts")))

    def state(self) -> dict[str, Any]:
        """For the bot's heartbeat: when a canary last came back, and whether the socket is
        taken for mute now."""
        with self._lock:
            return {"canary_seen_at": self._seen_at, "mute": bool(self._mute_key)}

    # ------------------------------------------------------------------ the decision

    def tick(self) -> None:
        """One look at the clock: a canary back, one overdue, or one to post."""
        now = self.clock()
        with self._lock:
            sent = self._sent
            back = sent is not None and sent.ts in self._heard
        if sent is not None and back:
            self._came_back(sent, now)
        elif sent is not None and now - sent.at >= self.plan.wait:
            self._overdue(sent, now)
        elif sent is None and now >= self._next_at:
            self._post(now)

    def _post(self, now: float) -> None:
        self._next_at = now + self.plan.every
        metadata = {"event_type": METADATA_TYPE, "event_payload": {"host": self.plan.me}}
        try:
            ts = self.plan.post(self.plan.channel, TEXT, metadata)
        except Exception as exc:  # Slack's Web API is away: not the socket's fault, try later
            log.warning("canary not posted: %s", exc)
            return
        with self._lock:
            self._sent = _Sent(ts, now)

    def _came_back(self, sent: _Sent, now: float) -> None:
        with self._lock:
            self._sent, self._seen_at = None, now
            resolves, self._mute_key = self._mute_key, ""
        self._delete(sent)
        if resolves:
            log.info("the Socket Mode connection hears events again")
            self._say(
                f"{resolves}:back",
                f":white_check_mark: The bot's Socket Mode connection on {self.plan.me} "
                "delivers events again: its canary came back after the reconnect.",
                resolves=resolves,
                resolution=f"resolved after {span(now - self._mute_at)}",
            )

    def _overdue(self, sent: _Sent, now: float) -> None:
        with self._lock:
            self._sent = None
            first = not self._mute_key
            if first:
                self._mute_key, self._mute_at = f"socket-mute:{self.plan.me}:{now * 1000:.0f}", now
            key = self._mute_key
        self._next_at = now  # the next canary right after the new connection
        self._delete(sent)
        log.warning("canary not back in %.0f s: the Socket Mode connection is mute", now - sent.at)
        if first:
            self._say(
                key,
                f":mute: The bot's Socket Mode connection on {self.plan.me} went silent: Slack "
                f"answers its pings but delivered no event for {self.plan.wait:.0f} s (its canary "
                "message did not come back). The bot is opening a new connection.",
            )
        try:
            self.reconnect()
        except Exception as exc:  # the next canary tells whether a later reconnect worked
            log.warning("Socket Mode reconnect failed: %s", exc)

    def _delete(self, sent: _Sent) -> None:
        try:
            self.plan.delete(self.plan.channel, sent.ts)
        except Exception as exc:  # a canary left in the alert channel is untidy, nothing more
            log.info("canary %s not deleted: %s", sent.ts, exc)

    def _say(self, key: str, text: str, resolves: str = "", resolution: str = "") -> None:
        try:
            self.plan.alerts.say(key, text, resolves=resolves, resolution=resolution)
        except Exception as exc:  # the store is away: the log keeps what it would have said
            log.warning("alert %s not recorded (%s): %s", key, exc, text)

    # ------------------------------------------------------------------ the thread

    def start(self) -> Canary:
        self._thread = threading.Thread(target=self._run, name="canary", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick()
            except Exception:  # the canary must outlive anything one round meets
                log.exception("canary round failed")
