"""The bot stops even when slack_sdk's Socket Mode client does not: its close() can hang joining
the thread that reads the socket, and a bot that never exits cannot be restarted or redeployed."""

from __future__ import annotations

import threading

from bot.serve import close_within


def test_a_close_that_returns_is_reported_closed() -> None:
    closed = threading.Event()

    assert close_within(closed.set, 5.0) is True
    assert closed.is_set()


def test_a_close_that_hangs_gives_the_stop_back_to_the_bot() -> None:
    release = threading.Event()
    started = threading.Event()

    def hangs() -> None:
        started.set()
        release.wait()  # as slack_sdk's close() joining a reader that never ends

    try:
        assert close_within(hangs, 0.2) is False
        assert started.is_set()
    finally:
        release.set()


def test_a_close_that_fails_counts_as_closed() -> None:
    def fails() -> None:
        raise OSError("the socket was already gone")

    assert close_within(fails, 5.0) is True
