"""Per-channel pacing of Slack posts, on a clock advanced by hand."""

from __future__ import annotations

from core.adapters.slack import ChannelPacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_burst_goes_at_once_then_posts_follow_at_the_rate():
    clock = Clock()
    pacer = ChannelPacer(rate=1.0, burst=3, clock=clock, sleep=clock.sleep)

    waits = [pacer.wait("C1") for _ in range(5)]

    assert waits == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert clock.now == 2.0


def test_channels_are_paced_apart():
    clock = Clock()
    pacer = ChannelPacer(rate=1.0, burst=1, clock=clock, sleep=clock.sleep)

    assert [pacer.wait("C1"), pacer.wait("C2"), pacer.wait("C3")] == [0.0, 0.0, 0.0]
    assert pacer.wait("C1") == 1.0


def test_a_quiet_channel_earns_its_burst_back():
    clock = Clock()
    pacer = ChannelPacer(rate=2.0, burst=2, clock=clock, sleep=clock.sleep)
    pacer.wait("C1")
    pacer.wait("C1")

    clock.now += 10
    assert [pacer.wait("C1"), pacer.wait("C1"), pacer.wait("C1")] == [0.0, 0.0, 0.5]


def test_rate_zero_turns_pacing_off():
    clock = Clock()
    pacer = ChannelPacer(rate=0, burst=1, clock=clock, sleep=clock.sleep)
    assert sum(pacer.wait("C1") for _ in range(100)) == 0.0
