"""A stop signal that comes before a process can drain is never lost.

Until a process installs the handlers by which it stops cleanly, `stop_at_once` ends it with
SystemExit. Python runs a handler between two bytecodes of the main thread, and SystemExit
raised where Python only reports exceptions (a weakref callback, `__del__`, an import lock's
cleanup) is printed and dropped: a pm that got SIGTERM while it imported its modules went on,
installed its own handler, and ran until it was killed. So the handler also notes the signal,
and the handler installed later asks `requested()` and stops at once if it was."""

from __future__ import annotations

import signal
import sys
from types import FrameType

_requested: list[int] = []  # list.append is atomic: safe in a signal handler


def stop_at_once(signum: int, _frame: FrameType | None) -> None:
    _requested.append(signum)
    sys.exit(0)


def install() -> None:
    """SIGTERM ends the process now, until it installs handlers of its own."""
    signal.signal(signal.SIGTERM, stop_at_once)


def requested() -> bool:
    """Whether a stop signal came before the process's own handlers were installed."""
    return bool(_requested)
