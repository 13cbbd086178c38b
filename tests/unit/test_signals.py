"""A process's SIGTERM handler never waits for a lock its own main thread may hold."""

from __future__ import annotations

import signal
import subprocess
import sys
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


# A SIGTERM that comes while the process starts, and whose SystemExit Python drops (raised in a
# weakref callback or an import lock's cleanup, Python only prints it), must still stop the
# process once it installs its own handlers. Each case runs in a process of its own.
_STARTING = """
import os, signal, sys, threading, time
from core import shutdown

shutdown.install()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler runs here, in this thread, at the latest
except SystemExit:
    pass  # where Python drops it
print("still running", flush=True)
"""


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _STARTING + script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_that_was_signalled_while_it_started_stops_once_it_can_drain():
    # Given a process that got SIGTERM while it started, and lost the SystemExit
    # When it installs the handlers by which it drains
    done = _run(
        "from aico.processes import _on_signals\n"
        "stopped = threading.Event()\n"
        "_on_signals(stopped.set)\n"
        "sys.exit(0 if stopped.wait(10) else 3)\n"
    )

    # Then it is told to stop at once
    assert "still running" in done.stdout, done.stderr
    assert done.returncode == 0, done.stderr


def test_a_bot_that_was_signalled_while_it_started_stops_once_it_listens():
    done = _run(
        "from bot.serve import _wait_for_signal\n"
        "threading.Timer(10, lambda: os._exit(3)).start()\n"
        "_wait_for_signal(lambda: None, lambda: None)\n"
        "os._exit(0)\n"
    )

    assert "still running" in done.stdout, done.stderr
    assert done.returncode == 0, done.stderr


def test_a_process_that_is_signalled_while_it_starts_ends_there():
    # Where Python does not drop the SystemExit, SIGTERM ends a starting process at once
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal\nfrom core import shutdown\nshutdown.install()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\nprint('still running')\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "still running" not in done.stdout
