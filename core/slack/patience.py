"""Waiting out Slack trouble: retry a call with capped backoff while Slack's errors say "not now".

Only what is safe to repeat may be retried this way: callers look for an earlier post before
posting again (see `SlackNotifier.find_message`), and updates are idempotent.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from core.errors import SlackError

log = logging.getLogger(__name__)
T = TypeVar("T")

SLACK_PATIENCE = 20 * 60.0  # seconds; below RabbitMQ's consumer_timeout (30 min)
MAX_WAIT = 30.0


def with_patience(
    attempt: Callable[[], T],
    what: str,
    patience: float = SLACK_PATIENCE,
    stopping: threading.Event | None = None,
) -> T:
    """`attempt()`, again after 1, 2, 4 … 30 s while it raises a transient SlackError, for up to
    `patience` seconds or until `stopping` is set; then the last error goes up."""
    deadline = time.monotonic() + patience
    stopping = stopping or threading.Event()
    for tries in itertools.count():
        try:
            return attempt()
        except SlackError as exc:
            wait = min(MAX_WAIT, 2.0**tries)
            if not exc.transient or time.monotonic() + wait > deadline or stopping.is_set():
                raise
            log.warning("%s: Slack failed (%s); trying again in %.0f s", what, exc, wait)
            if stopping.wait(wait):
                raise
    raise AssertionError("unreachable")
