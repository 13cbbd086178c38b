"""A circuit breaker that never holds its lock while the protected call runs.

A breaker stops calling a dependency that keeps failing, waits, then lets a few probe calls
through to see whether it is back. Semantics follow Resilience4j's count-based sliding window:

- CLOSED: every call is allowed; the outcomes of the last `window` calls are kept. Once at least
  `minimum_calls` are in the window and the share of failures is >= `failure_rate`, it OPENs.
- OPEN: no call is allowed. After the open duration it is HALF_OPEN (checked lazily on every read;
  there is no timer thread). Each re-open from HALF_OPEN doubles the duration, up to
  `max_open_for`; closing resets it to `open_for`.
- HALF_OPEN: `half_open_calls` probe permits are handed out. When all their outcomes are in, the
  breaker CLOSEs (window cleared) or, if the share of failures is >= `failure_rate`, OPENs again.

Why our own and not pybreaker: pybreaker wraps the call and holds its lock while the call runs,
so every call through one breaker is serialised (4 threads making 1 s calls took 4 s). Here the
caller asks for a permit (`try_acquire` / `acquire`), makes the call itself, then reports how it
went (`record_success` / `record_failure`, or `release` when the outcome says nothing about the
dependency). The lock only guards bookkeeping, and `on_change` listeners run outside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_MAX_WAIT = 0.5  # longest single wait in acquire(), so that a set `cancel` is noticed soon

Listener = Callable[["BreakerState", "BreakerState"], None]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def _validate(
    window: int,
    minimum_calls: int,
    failure_rate: float,
    open_for: float,
    max_open_for: float,
    half_open_calls: int,
) -> None:
    checks = [
        (window >= 1, f"window must be >= 1, got {window}"),
        (minimum_calls >= 1, f"minimum_calls must be >= 1, got {minimum_calls}"),
        (0 < failure_rate <= 1, f"failure_rate must be in (0, 1], got {failure_rate}"),
        (open_for > 0, f"open_for must be > 0 seconds, got {open_for}"),
        (max_open_for >= open_for, f"max_open_for ({max_open_for}) must be >= open_for"),
        (half_open_calls >= 1, f"half_open_calls must be >= 1, got {half_open_calls}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


class CircuitBreaker:
    """A thread-safe circuit breaker: ask for a permit, make the call, report the outcome."""

    def __init__(
        self,
        name: str,
        *,
        window: int = 20,
        minimum_calls: int = 5,
        failure_rate: float = 0.5,
        open_for: float = 5.0,
        max_open_for: float = 60.0,
        half_open_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: Listener | None = None,
    ) -> None:
        _validate(window, minimum_calls, failure_rate, open_for, max_open_for, half_open_calls)
        self.name = name
        self._minimum_calls = min(minimum_calls, window)  # more could never be in the window
        self._failure_rate = failure_rate
        self._open_for = open_for
        self._max_open_for = max_open_for
        self._half_open_calls = half_open_calls
        self._clock = clock
        self._on_change = on_change
        self._cond = threading.Condition(threading.Lock())
        self._init_bookkeeping(window)

    def _init_bookkeeping(self, window: int) -> None:
        self._state = BreakerState.CLOSED
        self._window: deque[bool] = deque(maxlen=window)  # True = failure
        self._open_duration = self._open_for
        self._opened_at = 0.0
        self._probes_given = 0
        self._probe_outcomes: list[bool] = []  # True = failure
        self._changes: list[tuple[BreakerState, BreakerState]] = []

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state.value})"

    # --- public API -------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose time is up reads (and becomes) HALF_OPEN."""
        return self._locked(self._current_state)

    def try_acquire(self) -> bool:
        """A permit for one call now: always in CLOSED, never in OPEN, per probe in HALF_OPEN."""
        return self._locked(self._grant)

    def acquire(self, timeout: float | None = None, cancel: threading.Event | None = None) -> bool:
        """Block until a permit is granted (True), `timeout` passes or `cancel` is set (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                granted = self._grant()
                pause = None if granted else self._pause(deadline, cancel)
                if pause is not None:
                    self._cond.wait(pause)
                changes = self._drain()
            self._emit(changes)
            if granted or pause is None:
                return granted

    def record_success(self) -> None:
        """The permitted call worked."""
        self._locked(lambda: self._record(failed=False))

    def record_failure(self) -> None:
        """The permitted call failed in a way that blames the dependency (a transient error)."""
        self._locked(lambda: self._record(failed=True))

    def release(self) -> None:
        """The permitted call says nothing about the dependency: give a probe permit back."""
        self._locked(self._give_back)

    def retry_in(self) -> float:
        """Seconds until OPEN turns HALF_OPEN; 0.0 when not OPEN."""
        return self._locked(self._refreshed_retry_in)

    def snapshot(self) -> dict[str, Any]:
        """Name, state, failure share and number of calls in the window, and retry_in."""
        return self._locked(self._snapshot)

    # --- locking and listeners --------------------------------------------------------------

    def _locked(self, action: Callable[[], _T]) -> _T:
        """Run `action` under the lock, then tell listeners about transitions it caused."""
        with self._cond:
            result = action()
            changes = self._drain()
        self._emit(changes)
        return result

    def _drain(self) -> list[tuple[BreakerState, BreakerState]]:
        changes, self._changes = self._changes, []
        return changes

    def _emit(self, changes: list[tuple[BreakerState, BreakerState]]) -> None:
        """Call on_change outside the lock; a failing listener must not break the call path."""
        if self._on_change is None:
            return
        for old, new in changes:
            try:
                self._on_change(old, new)
            except Exception:
                log.exception("breaker %s: on_change(%s, %s) failed", self.name, old, new)

    def _pause(self, deadline: float | None, cancel: threading.Event | None) -> float | None:
        """How long acquire() may wait before looking again; None means give up."""
        if cancel is not None and cancel.is_set():
            return None
        pause = _MAX_WAIT
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            pause = min(pause, left)
        if self._state is BreakerState.OPEN:
            pause = min(pause, self._retry_in())
        return pause

    # --- bookkeeping (lock held) ------------------------------------------------------------

    def _current_state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._retry_in() <= 0:
            self._move_to(BreakerState.HALF_OPEN)
        return self._state

    def _refreshed_retry_in(self) -> float:
        self._current_state()
        return self._retry_in()

    def _retry_in(self) -> float:
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._open_duration - self._clock())

    def _grant(self) -> bool:
        state = self._current_state()
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes_given < self._half_open_calls:
            self._probes_given += 1
            return True
        return False

    def _record(self, *, failed: bool) -> None:
        state = self._current_state()
        if state is BreakerState.CLOSED:
            self._record_closed(failed)
        elif state is BreakerState.HALF_OPEN:
            self._record_probe(failed)
        # OPEN: a late answer from a call started before the breaker opened; ignored.
        self._cond.notify_all()

    def _record_closed(self, failed: bool) -> None:
        self._window.append(failed)
        calls = len(self._window)
        if calls >= self._minimum_calls and self._failure_share() >= self._failure_rate:
            self._move_to(BreakerState.OPEN)

    def _record_probe(self, failed: bool) -> None:
        if len(self._probe_outcomes) >= self._probes_given:
            return  # no probe is out: a late answer from before the breaker opened
        self._probe_outcomes.append(failed)
        if len(self._probe_outcomes) < self._half_open_calls:
            return
        share = sum(self._probe_outcomes) / len(self._probe_outcomes)
        self._move_to(BreakerState.OPEN if share >= self._failure_rate else BreakerState.CLOSED)

    def _give_back(self) -> None:
        if self._current_state() is not BreakerState.HALF_OPEN:
            return
        if self._probes_given > len(self._probe_outcomes):
            self._probes_given -= 1
            self._cond.notify_all()

    def _failure_share(self) -> float:
        return sum(self._window) / len(self._window) if self._window else 0.0

    def _snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self._current_state().value,
            "failure_rate": self._failure_share(),
            "calls": len(self._window),
            "retry_in": self._retry_in(),  # state was refreshed just above
        }

    # --- transitions (lock held) ------------------------------------------------------------

    def _move_to(self, new: BreakerState) -> None:
        old = self._state
        if new is BreakerState.OPEN:
            self._open(reopening=old is BreakerState.HALF_OPEN)
        elif new is BreakerState.HALF_OPEN:
            self._probes_given = 0
            self._probe_outcomes.clear()
        else:
            self._window.clear()
            self._open_duration = self._open_for
        self._state = new
        self._changes.append((old, new))
        self._cond.notify_all()

    def _open(self, *, reopening: bool) -> None:
        if reopening:
            self._open_duration = min(self._open_duration * 2, self._max_open_for)
        self._opened_at = self._clock()
