import logging
import threading
import time

import pytest

from core.domain.breaker import BreakerState, CircuitBreaker

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class FakeClock:
    """A clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _breaker(clock: FakeClock, **kwargs) -> CircuitBreaker:
    settings = {"window": 10, "minimum_calls": 4, "failure_rate": 0.5, "open_for": 5.0}
    return CircuitBreaker("test", clock=clock, **(settings | kwargs))


def _record(breaker: CircuitBreaker, outcomes: str) -> None:
    """Record outcomes given as a string: F = failure, S = success."""
    for outcome in outcomes:
        assert breaker.try_acquire()
        breaker.record_failure() if outcome == "F" else breaker.record_success()


def _trip(breaker: CircuitBreaker) -> None:
    _record(breaker, "FFFF")
    assert breaker.state is OPEN


def _to_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    clock.advance(breaker.retry_in())
    assert breaker.state is HALF_OPEN


# --- closed ---------------------------------------------------------------------------------


def test_stays_closed_below_minimum_calls_even_when_every_call_fails():
    # Given a breaker that needs 4 calls before judging
    breaker = _breaker(FakeClock())
    # When 3 calls all fail
    _record(breaker, "FFF")
    # Then it stays closed and keeps granting permits
    assert breaker.state is CLOSED
    assert breaker.try_acquire()
    assert breaker.snapshot()["failure_rate"] == 1.0


def test_opens_when_the_failure_share_reaches_the_threshold():
    # Given a breaker with a 50 % threshold and 2 successes and 1 failure
    breaker = _breaker(FakeClock())
    _record(breaker, "SSF")
    assert breaker.state is CLOSED
    # When a second failure makes it 2 of 4
    _record(breaker, "F")
    # Then it opens
    assert breaker.state is OPEN


def test_stays_closed_just_below_the_threshold():
    # Given 5 calls with 2 failures (40 % < 50 %)
    breaker = _breaker(FakeClock())
    # When they are recorded
    _record(breaker, "SSSFF")
    # Then the breaker is still closed
    assert breaker.state is CLOSED


def test_the_window_slides_and_old_failures_fall_out():
    # Given a window of 4 with a 75 % threshold that has seen 2 failures, then 4 successes
    breaker = _breaker(FakeClock(), window=4, failure_rate=0.75)
    _record(breaker, "FFSSSS")
    # Then only the last 4 calls count
    assert breaker.snapshot() == {
        "name": "test",
        "state": "closed",
        "failure_rate": 0.0,
        "calls": 4,
        "retry_in": 0.0,
    }
    # When 2 failures come in, it is 2 of 4: still closed
    _record(breaker, "FF")
    assert breaker.state is CLOSED
    # When a third one comes in, it is 3 of 4 (not 5 of 9): open
    _record(breaker, "F")
    assert breaker.state is OPEN
    assert breaker.snapshot()["failure_rate"] == 0.75


def test_release_while_closed_records_nothing():
    # Given a closed breaker with a permitted call
    breaker = _breaker(FakeClock())
    assert breaker.try_acquire()
    # When the call is released
    breaker.release()
    # Then nothing is counted
    assert breaker.snapshot()["calls"] == 0
    assert breaker.retry_in() == 0.0


# --- open and half-open ---------------------------------------------------------------------


def test_an_open_breaker_refuses_permits_until_its_time_is_up():
    # Given an open breaker
    clock = FakeClock()
    breaker = _breaker(clock)
    _trip(breaker)
    # Then it refuses permits and says when to retry
    assert not breaker.try_acquire()
    assert breaker.retry_in() == 5.0
    # When almost all the open time has passed
    clock.advance(4.9)
    # Then it still refuses
    assert not breaker.try_acquire()
    assert breaker.retry_in() == pytest.approx(0.1)
    assert breaker.snapshot()["state"] == "open"


def test_after_open_for_it_is_half_open_with_exactly_half_open_calls_permits():
    # Given an open breaker that allows 3 probes
    clock = FakeClock()
    breaker = _breaker(clock, half_open_calls=3)
    _trip(breaker)
    # When the open time has passed
    clock.advance(5.0)
    # Then it is half-open with exactly 3 permits
    assert breaker.state is HALF_OPEN
    assert breaker.retry_in() == 0.0
    assert [breaker.try_acquire() for _ in range(4)] == [True, True, True, False]


def test_a_successful_probe_closes_the_breaker_and_clears_the_window():
    # Given a half-open breaker
    clock = FakeClock()
    breaker = _breaker(clock)
    _trip(breaker)
    _to_half_open(breaker, clock)
    # When the probe succeeds
    _record(breaker, "S")
    # Then it is closed with an empty window
    assert breaker.state is CLOSED
    assert breaker.snapshot()["calls"] == 0
    assert breaker.snapshot()["failure_rate"] == 0.0


def test_a_failed_probe_reopens_with_a_doubled_open_time_capped_at_max_open_for():
    # Given a breaker that opens for 5 s, at most 15 s
    clock = FakeClock()
    breaker = _breaker(clock, max_open_for=15.0)
    _trip(breaker)
    assert breaker.retry_in() == 5.0
    # When probes keep failing, Then the open time doubles up to the cap
    for expected in (10.0, 15.0, 15.0):
        _to_half_open(breaker, clock)
        _record(breaker, "F")
        assert breaker.state is OPEN
        assert breaker.retry_in() == expected


def test_closing_resets_the_backoff():
    # Given a breaker whose open time has been doubled
    clock = FakeClock()
    breaker = _breaker(clock)
    _trip(breaker)
    _to_half_open(breaker, clock)
    _record(breaker, "F")
    assert breaker.retry_in() == 10.0
    # When a probe succeeds and the breaker later trips again
    _to_half_open(breaker, clock)
    _record(breaker, "S")
    _trip(breaker)
    # Then it is open for open_for again
    assert breaker.retry_in() == 5.0


def test_several_probes_decide_by_the_failure_share():
    # Given a half-open breaker with 3 probes and a 50 % threshold
    clock = FakeClock()
    breaker = _breaker(clock, half_open_calls=3)
    _trip(breaker)
    _to_half_open(breaker, clock)
    # When 1 of 3 probes fails, Then it stays half-open until all are in, then closes
    _record(breaker, "SF")
    assert breaker.state is HALF_OPEN
    _record(breaker, "S")
    assert breaker.state is CLOSED
    # When it trips again and 2 of 3 probes fail, Then it reopens
    _trip(breaker)
    _to_half_open(breaker, clock)
    _record(breaker, "FSF")
    assert breaker.state is OPEN


def test_release_gives_a_probe_permit_back():
    # Given a half-open breaker whose only probe permit is taken
    clock = FakeClock()
    breaker = _breaker(clock)
    _trip(breaker)
    _to_half_open(breaker, clock)
    assert breaker.try_acquire()
    assert not breaker.try_acquire()
    # When the probe is released without an outcome
    breaker.release()
    # Then the permit can be taken again and nothing was recorded
    assert breaker.state is HALF_OPEN
    assert breaker.try_acquire()
    # And a second release does not hand out more permits than there are
    breaker.release()
    breaker.release()
    assert [breaker.try_acquire(), breaker.try_acquire()] == [True, False]


def test_outcomes_recorded_while_open_are_ignored():
    # Given an open breaker
    clock = FakeClock()
    breaker = _breaker(clock, half_open_calls=2)
    _trip(breaker)
    before = breaker.snapshot()
    # When late answers of calls started before it opened come in
    for _ in range(5):
        breaker.record_success()
        breaker.record_failure()
    # Then nothing changes
    assert breaker.snapshot() == before
    # And once half-open, the late answers have not used up any probes
    _to_half_open(breaker, clock)
    assert [breaker.try_acquire() for _ in range(3)] == [True, True, False]


def test_outcomes_without_a_probe_out_are_ignored_while_half_open():
    # Given a half-open breaker with no probe handed out yet
    clock = FakeClock()
    breaker = _breaker(clock)
    _trip(breaker)
    _to_half_open(breaker, clock)
    # When a late answer comes in
    breaker.record_success()
    # Then it does not close the breaker
    assert breaker.state is HALF_OPEN


# --- on_change ------------------------------------------------------------------------------


def test_on_change_sees_every_transition_in_order():
    # Given a breaker with a listener
    clock = FakeClock()
    seen: list[tuple[BreakerState, BreakerState]] = []
    breaker = _breaker(clock, on_change=lambda old, new: seen.append((old, new)))
    # When it opens, turns half-open lazily, and closes
    _trip(breaker)
    clock.advance(5.0)
    assert breaker.try_acquire()
    breaker.record_success()
    # Then the listener saw each transition once, in order
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_on_change_is_called_without_the_lock_held():
    # Given a listener that reads the breaker back
    clock = FakeClock()
    seen: list[tuple[str, dict]] = []

    def listener(old: BreakerState, new: BreakerState) -> None:
        seen.append((breaker.state.value, breaker.snapshot()))

    breaker = _breaker(clock, on_change=listener)

    def scenario() -> None:
        _trip(breaker)
        clock.advance(5.0)
        breaker.retry_in()

    # When transitions happen (in a thread, so a deadlock fails instead of hanging)
    worker = threading.Thread(target=scenario, daemon=True)
    worker.start()
    worker.join(timeout=5)
    # Then the listener could read the breaker each time
    assert not worker.is_alive(), "on_change deadlocked: it was called with the lock held"
    assert [state for state, _ in seen] == ["open", "half_open"]
    assert seen[0][1]["retry_in"] == 5.0


def test_a_failing_listener_does_not_break_the_caller(caplog):
    # Given a listener that raises
    def boom(old, new):
        raise RuntimeError("listener bug")

    breaker = _breaker(FakeClock(), on_change=boom)
    # When a transition happens (the caller is unaffected: it opened)
    _trip(breaker)
    # Then the listener's error is logged for the operator, with its traceback
    [logged] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info is not None and isinstance(logged.exc_info[1], RuntimeError)


# --- acquire (real clock) -------------------------------------------------------------------


def _open_real(open_for: float) -> CircuitBreaker:
    breaker = CircuitBreaker(
        "real", window=4, minimum_calls=1, open_for=open_for, max_open_for=60.0
    )
    assert breaker.try_acquire()
    breaker.record_failure()
    assert breaker.state is OPEN
    return breaker


def test_acquire_blocks_until_half_open_then_grants_a_permit():
    # Given a breaker open for 0.2 s
    breaker = _open_real(0.2)
    wait = breaker.retry_in()
    started = time.monotonic()
    # When a caller acquires
    granted = breaker.acquire(timeout=5)
    # Then it got the probe permit after the open time, not before
    assert granted
    assert time.monotonic() - started >= wait - 0.01
    assert breaker.state is HALF_OPEN
    assert not breaker.try_acquire()


def test_acquire_returns_false_when_the_timeout_passes():
    # Given a breaker open for a minute
    breaker = _open_real(60.0)
    # When a caller waits 0.1 s
    # Then it gets no permit
    assert breaker.acquire(timeout=0.1) is False
    assert breaker.acquire(timeout=0) is False


def test_acquire_returns_false_when_cancel_is_set():
    # Given a breaker open for a minute and a caller waiting without a timeout
    breaker = _open_real(60.0)
    cancel = threading.Event()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(breaker.acquire(cancel=cancel)))
    waiter.start()
    # When the wait is cancelled
    cancel.set()
    waiter.join(timeout=5)
    # Then acquire returned False
    assert not waiter.is_alive()
    assert result == [False]


def test_acquire_wakes_up_when_a_probe_permit_is_released():
    # Given a half-open breaker whose probe permit is taken and a caller waiting for one
    clock = FakeClock()
    breaker = _breaker(clock)
    _trip(breaker)
    _to_half_open(breaker, clock)
    assert breaker.try_acquire()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(breaker.acquire(timeout=5)))
    waiter.start()
    # When the probe is released
    breaker.release()
    waiter.join(timeout=5)
    # Then the waiter got the permit
    assert result == [True]


# --- concurrency ----------------------------------------------------------------------------


def test_calls_through_one_breaker_run_concurrently():
    # Given a closed breaker and 8 callers making 0.2 s calls
    breaker = CircuitBreaker("concurrent")
    lock = threading.Lock()
    running = peak = 0
    granted: list[bool] = []

    def call() -> None:
        nonlocal running, peak
        ok = breaker.try_acquire()
        with lock:
            granted.append(ok)
            running += 1
            peak = max(peak, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        breaker.record_success()

    # When they all call at once
    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    # Then every call was permitted and the calls overlapped (the breaker did not serialise them)
    assert granted == [True] * 8
    assert peak > 1
    assert breaker.snapshot()["calls"] == 8


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "window must be >= 1"),
        ({"minimum_calls": 0}, "minimum_calls must be >= 1"),
        ({"failure_rate": 0.0}, r"failure_rate must be in \(0, 1\]"),
        ({"failure_rate": 1.5}, r"failure_rate must be in \(0, 1\]"),
        ({"open_for": 0.0}, "open_for must be > 0"),
        ({"open_for": 10.0, "max_open_for": 5.0}, "max_open_for"),
        ({"half_open_calls": 0}, "half_open_calls must be >= 1"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CircuitBreaker("bad", **kwargs)
