"""A process's SIGTERM handler never waits for a lock its own main thread may hold."""

from __future__ import annotations

import signal
import threading

from aico.processes import _on_signals


def test_sigterm_stops_a_process_whose_main_thread_holds_the_stop_events_lock():
    # Given a process whose stop is an Event, and the signal arriving just as its main thread,
    # woken in Event.wait, holds that Event's lock again (the handler runs in that thread)
    stopping = threading.Event()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    _on_signals(stopping.set)
    handler = signal.getsignal(signal.SIGTERM)
    returned = threading.Event()

    def main_thread_at_the_wrong_moment() -> None:
        with stopping._cond:  # type: ignore[attr-defined]  # where Event.wait holds it
            handler(signal.SIGTERM, None)  # type: ignore[operator]
            returned.set()

    try:
        # When SIGTERM's handler runs there
        threading.Thread(target=main_thread_at_the_wrong_moment, daemon=True).start()

        # Then it returns at once, and the process is told to stop once the lock is let go
        assert returned.wait(5), "the handler waited for a lock its own thread holds"
        assert stopping.wait(5)
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)
