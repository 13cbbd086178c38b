"""Waiting on the event store, which tells nobody when it changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

WAIT = 10.0  # the longest a test waits (never reached when green)


def until(predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
    """`predicate()` once it is truthy, looked at again every few milliseconds up to `timeout`."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{predicate!r} still {value!r} after {timeout}s"
        pause.wait(0.01)
    return value
