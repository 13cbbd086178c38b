"""The scaling policies with a fake clock: every time they read is `Load.at`."""

from __future__ import annotations

import pytest

from core.domain.scaling import (
    POLICIES,
    AicoPolicy,
    Load,
    QueueRatioPolicy,
    ThresholdPolicy,
    make_policy,
)


def load(
    at: float,
    queued: int = 0,
    busy: int = 0,
    workers: int = 1,
    rate: float = 0.0,
    service: float = 10.0,
    forecast: float | None = None,
    saturated: str = "",
    startup: float | None = None,
) -> Load:
    return Load(at, queued, busy, workers, 8, rate, service, forecast, saturated, startup)


def aico(**kw) -> AicoPolicy:
    """The policy with round constants, so that the tests can do its arithmetic."""
    settings = {
        "drain_s": 10.0,
        "wait_s": 0.0,
        "flow_tolerance": 0.0,
        "keep_alive_s": 30.0,
        "headroom": 0.25,
        "noise_z": 0.0,
        "floor_z": 0.0,
        "drain_per_start": 0.0,
        **kw,
    }
    return AicoPolicy(1, 10, 8, **settings)


# aico: up


def test_aico_scales_up_at_once_to_the_arrivals_and_the_backlog():
    # Given 1 worker, 2 tasks/s of 12 s each arriving and 20 tasks queued
    decision = aico().decide(load(0.0, queued=20, busy=8, rate=2.0, service=12.0))

    # Then it asks at once for 2 x 12 = 24 slots of flow + 20 of backlog = 44 slots: 6 workers
    assert (decision.current, decision.target) == (1, 6)
    assert decision.changed and not decision.held
    assert decision.policy == "aico"


def test_aico_drains_a_backlog_within_the_drain_time():
    # Given 12 s tasks and a 30 s drain target: each queued task needs 12/30 of a slot
    decision = aico(drain_s=30.0).decide(load(0.0, queued=40, busy=8, rate=0.0, service=12.0))

    assert decision.target == 2  # 40 x 0.4 = 16 slots


def test_aico_drains_a_backlog_longer_when_workers_take_longer_to_start():
    # Given 12 s tasks, a 10 s drain target plus half the start-up time, 40 tasks queued
    policy = aico(drain_per_start=0.5)
    seen = {"queued": 40, "busy": 8, "rate": 0.0, "service": 12.0}

    # With instant workers each queued task needs a slot (12 s > 10 s): 5 workers
    assert policy.decide(load(0.0, startup=0.0, **seen)).target == 5
    # With a 30 s start-up the backlog drains within 25 s: 40 x 12/25 = 19.2 slots, 3 workers
    assert aico(drain_per_start=0.5).decide(load(0.0, startup=30.0, **seen)).target == 3
    # A load that does not say uses the policy's own start-up time (30 s here)
    assert aico(drain_per_start=0.5, startup_s=30.0).decide(load(0.0, **seen)).target == 3


def test_make_policy_gives_aico_the_start_up_time():
    policy = make_policy("aico", 1, 10, 8, startup_s=30.0)

    assert isinstance(policy, AicoPolicy) and policy.startup_s == 30.0
    assert make_policy("aico", 1, 10, 8).startup_s == 10.0  # type: ignore[attr-defined]


def test_aico_lets_completions_absorb_a_short_queue():
    # Given 8 busy slots freeing one every 1.25 s, and 3 queued: all start within 4 s
    policy = aico(wait_s=4.0)

    assert not policy.decide(load(0.0, queued=3, busy=8, rate=0.5, service=10.0)).changed
    assert policy.decide(load(1.0, queued=12, busy=8, rate=0.5, service=10.0)).target == 2


def test_aico_does_not_grow_for_a_flow_within_its_tolerance():
    policy = aico(flow_tolerance=0.5)  # half a worker: 4 slots

    # 9.5 slots of flow on 8 slots, one task queued: within tolerance
    assert not policy.decide(load(0.0, queued=1, busy=8, rate=0.95, service=10.0)).changed
    # 13 slots of flow: beyond it
    assert policy.decide(load(1.0, queued=1, busy=8, rate=1.3, service=10.0)).target == 2


def test_aico_does_not_grow_for_a_flow_within_the_noise_of_its_measured_rate():
    # A minute of 0.9/s arrivals of 10 s tasks: 9 slots of flow, give or take
    # 10 x sqrt(0.9/60) = 1.2 slots; 2 standard deviations: 2.4 slots
    noisy, exact = aico(noise_z=2.0), aico(noise_z=0.0)
    seen = load(0.0, queued=1, busy=8, rate=0.9, service=10.0)

    # 9 - 2.4 slots of flow + 1 queued fit in the one worker of 8 slots; 9 + 1 do not
    assert not noisy.decide(seen).changed
    assert exact.decide(seen).target == 2
    # 2/s is beyond the noise: 20 - 3.7 + 1 slots
    assert noisy.decide(load(1.0, queued=1, busy=8, rate=2.0, service=10.0)).target == 3


def test_aico_absorbs_at_most_wait_cap_queued_tasks():
    # 8 busy slots of 10 s tasks take up 24 queued tasks within 30 s
    lax, capped = aico(wait_s=30.0, wait_cap=1000.0), aico(wait_s=30.0, wait_cap=5.0)
    seen = load(0.0, queued=20, busy=8, rate=0.0, service=10.0)

    assert not lax.decide(seen).changed
    # capped at 5: the 15 beyond them want 15 slots, 2 workers
    assert capped.decide(seen).target == 2


def test_aico_without_a_service_time_gives_every_task_a_slot():
    decision = aico().decide(load(0.0, queued=12, busy=8, service=0.0))

    assert decision.target == 3  # 20 tasks in the system, 8 slots a worker


def test_aico_counts_starting_workers_as_capacity():
    policy = aico()
    wanted = load(0.0, queued=20, busy=8, rate=2.0, service=12.0)

    first = policy.decide(wanted)
    # the workers it asked for are starting: the same load asks for no more
    again = policy.decide(load(1.0, queued=20, busy=8, workers=first.target, rate=2.0, service=12))

    assert not again.changed


# aico: down


def test_aico_scales_down_only_after_the_keep_alive():
    policy = aico(keep_alive_s=30.0)
    quiet = {"queued": 0, "busy": 3, "workers": 4, "rate": 0.3}

    # The lower target (1 worker) is wanted from t=100 on
    for at in (100.0, 110.0, 129.0):
        decision = policy.decide(load(at, **quiet))
        assert not decision.changed
        assert "keep-alive" in decision.held
    # After 30 s of wanting it, the pool goes down
    assert policy.decide(load(130.0, **quiet)).target == 1


def test_aico_keep_alive_starts_again_when_the_load_returns():
    policy = aico(keep_alive_s=30.0)
    quiet = {"queued": 0, "busy": 3, "workers": 4, "rate": 0.3}

    policy.decide(load(100.0, **quiet))
    policy.decide(load(115.0, queued=0, busy=30, workers=4))  # all four needed again
    # The quiet is wanted again from t=131: 30 s more
    assert not policy.decide(load(131.0, **quiet)).changed
    assert not policy.decide(load(160.0, **quiet)).changed
    assert policy.decide(load(161.0, **quiet)).target == 1


def test_aico_goes_down_to_the_highest_target_of_the_keep_alive():
    policy = aico(keep_alive_s=30.0)

    policy.decide(load(0.0, busy=3, workers=4))  # 1 worker would do
    policy.decide(load(10.0, busy=12, workers=4))  # 2 would (15 slots with headroom)
    decision = policy.decide(load(30.0, busy=3, workers=4))

    assert decision.target == 2


def test_aico_needs_headroom_to_scale_down():
    policy = aico(keep_alive_s=0.0, headroom=0.25)

    # 14 busy slots fit in 2 workers, but not with 25% headroom (17.5 slots): it stays at 3
    assert not policy.decide(load(0.0, busy=14, workers=3)).changed
    # 12 busy do (15 slots)
    assert policy.decide(load(1.0, busy=12, workers=3)).target == 2


def test_aico_does_not_scale_down_below_the_flow_that_keeps_arriving():
    # Given 4 workers, 2 busy slots now, but 2/s of 10 s tasks arriving: 20 slots of flow
    policy = aico(keep_alive_s=0.0, headroom=0.0)

    # Then it keeps the 3 workers that flow needs, not the 1 that the busy slots fit in
    assert policy.decide(load(0.0, busy=2, workers=4, rate=2.0, service=10.0)).target == 3
    # and with no arrivals it goes down to 1
    assert policy.decide(load(1.0, busy=2, workers=3, rate=0.0, service=10.0)).target == 1


def test_aico_sheds_below_the_flow_only_by_less_noise_than_it_grows_on():
    # A minute of 1/s arrivals of 10 s tasks: 10 slots of flow, give or take
    # 10 x sqrt(1/60) = 1.3 slots; the up rule discounts 2.5 of them, the floor 1
    policy = aico(keep_alive_s=0.0, headroom=0.0, noise_z=2.5, floor_z=1.0)

    # 2 workers, 4 slots busy, nothing queued: the floor keeps 10 - 1.3 = 8.7 slots, 2 workers
    assert not policy.decide(load(0.0, busy=4, workers=2, rate=1.0, service=10.0)).changed
    # and one task queued on 8 busy slots does not grow it: 10 - 3.2 + 1 = 7.8 slots want 1
    held = policy.decide(load(1.0, queued=1, busy=8, workers=2, rate=1.0, service=10.0))
    assert not held.changed
    # with the floor discounting as much as the up rule (7 slots), it sheds to 1 worker
    lax = aico(keep_alive_s=0.0, headroom=0.0, noise_z=2.5, floor_z=2.5)
    assert lax.decide(load(0.0, busy=4, workers=2, rate=1.0, service=10.0)).target == 1


def test_aico_holds_between_its_up_and_down_rules():
    # Given 2 workers whose slots are all busy and nothing queued: the flow wants no more, and
    # the tasks in the system do not fit in fewer: the pool stays, without flapping
    policy = aico(keep_alive_s=0.0, headroom=0.0)

    for at in range(10):
        assert not policy.decide(load(float(at), busy=16, workers=2, rate=1.6)).changed


# aico: the resource guard, the bounds


def test_aico_holds_a_scale_up_while_the_host_is_saturated():
    decision = aico().decide(load(0.0, queued=40, busy=8, rate=2.0, saturated="cpu 97%"))

    assert not decision.changed
    assert "cpu 97%" in decision.held


def test_aico_scales_down_while_the_host_is_saturated():
    policy = aico(keep_alive_s=0.0)

    decision = policy.decide(load(0.0, busy=2, workers=3, saturated="memory 95%"))

    assert decision.target == 1


def test_aico_targets_are_clamped():
    policy = AicoPolicy(2, 4, 8, keep_alive_s=0.0)

    assert policy.decide(load(0.0, queued=500, busy=8, rate=10.0)).target == 4
    assert policy.decide(load(1.0, workers=3)).target == 2
    assert policy.decide(load(2.0, workers=1)).target == 2  # below the minimum: up to it
    assert policy.decide(load(3.0, workers=7, busy=50)).target == 4  # above the maximum


# aico: the forecast


def rising_to(policy: AicoPolicy, at: float, rate: float) -> None:
    """A minute of loads whose arrival rate climbs from 0.5/s to `rate`."""
    for step in range(7):
        now = at - 60.0 + step * 10.0
        policy.decide(load(now, busy=6, rate=0.5 + (rate - 0.5) * step / 6))


def test_a_trusted_forecast_of_a_rise_grows_the_pool_ahead_of_the_queue():
    # Given arrivals rising to 1/s of 10 s tasks, nothing queued yet, 1 worker of 8 slots
    ahead, reactive = aico(), aico()
    rising_to(ahead, 100.0, 1.0)
    rising_to(reactive, 100.0, 1.0)

    # When the forecast says 3/s for the next minutes
    grown = ahead.decide(load(101.0, busy=7, rate=1.0, forecast=3.0))
    unforecast = reactive.decide(load(101.0, busy=7, rate=1.0))

    # Then the pool grows before anything waits (3/s x 10 s = 30 slots), and without it not
    assert grown.target == 4
    assert not unforecast.changed


def test_a_forecast_above_a_falling_rate_is_not_followed():
    # Given the rate falling after a burst, and a forecast still high (it lags the drop)
    policy = aico()
    for step in range(7):
        policy.decide(load(step * 10.0, busy=6, rate=3.0 - step * 0.4))

    decision = policy.decide(load(61.0, busy=6, rate=0.6, forecast=3.0))

    assert not decision.changed


def test_an_untrusted_forecast_is_none_and_changes_nothing():
    policy = aico()
    rising_to(policy, 100.0, 1.0)

    assert not policy.decide(load(101.0, busy=7, rate=1.0, forecast=None)).changed


# the baselines


def test_threshold_adds_one_worker_when_more_than_five_are_queued():
    policy = ThresholdPolicy(1, 5)

    assert not policy.decide(load(0.0, queued=5, busy=8)).changed
    assert policy.decide(load(1.0, queued=6, busy=8)).target == 2


def test_threshold_removes_one_when_the_queue_is_empty_even_if_busy():
    policy = ThresholdPolicy(1, 5)

    assert policy.decide(load(0.0, queued=0, busy=24, workers=3)).target == 2


def test_threshold_changes_at_most_once_every_30_seconds():
    policy = ThresholdPolicy(1, 5)

    assert policy.decide(load(0.0, queued=50, workers=1)).target == 2
    held = policy.decide(load(29.0, queued=50, workers=2))
    assert not held.changed and held.held
    assert policy.decide(load(30.0, queued=50, workers=2)).target == 3


def test_threshold_is_clamped():
    policy = ThresholdPolicy(1, 2)

    assert not policy.decide(load(0.0, queued=50, workers=2)).changed
    assert not policy.decide(load(100.0, queued=0, workers=1)).changed


def test_queue_ratio_wants_the_ready_messages_over_the_slots_of_a_worker():
    # KEDA's default, over AMQP: the messages ready; the unacked (busy) ones are not counted
    policy = QueueRatioPolicy(1, 10, 8)

    assert policy.decide(load(0.0, queued=16, busy=8, workers=1)).target == 2


def test_queue_ratio_over_the_management_api_counts_the_unacked_too():
    # protocol: http: ready + unacked = queued + busy
    policy = QueueRatioPolicy(1, 10, 8, count_unacked=True)

    assert policy.decide(load(0.0, queued=16, busy=8, workers=1)).target == 3


def test_queue_ratio_evaluates_every_15_seconds():
    policy = QueueRatioPolicy(1, 10, 8)
    policy.decide(load(0.0, queued=0, busy=4, workers=1))

    assert not policy.decide(load(14.0, queued=40, busy=8, workers=1)).changed
    assert policy.decide(load(15.0, queued=40, busy=8, workers=1)).target == 5  # 1 + 4 pods


def test_queue_ratio_scales_up_by_at_most_4_pods_or_100_percent_per_period():
    policy = QueueRatioPolicy(1, 20, 8, count_unacked=True)

    assert policy.decide(load(0.0, queued=150, busy=8, workers=1)).target == 5
    assert policy.decide(load(15.0, queued=150, busy=40, workers=5)).target == 10
    assert policy.decide(load(30.0, queued=150, busy=80, workers=10)).target == 20


def test_queue_ratio_ignores_changes_within_the_10_percent_tolerance():
    policy = QueueRatioPolicy(1, 10, 8, count_unacked=True)

    assert not policy.decide(load(0.0, queued=1, busy=16, workers=2)).changed  # 17 / 16


def test_queue_ratio_scales_down_to_the_highest_recommendation_of_300_seconds():
    policy = QueueRatioPolicy(1, 10, 8, count_unacked=True)
    policy.decide(load(0.0, queued=0, busy=32, workers=4))  # recommends 4

    for at in (15.0, 150.0, 285.0):
        decision = policy.decide(load(at, queued=0, busy=4, workers=4))
        assert not decision.changed and decision.held
    assert policy.decide(load(300.0, queued=0, busy=4, workers=4)).target == 1


def test_queue_ratio_is_clamped():
    policy = QueueRatioPolicy(2, 3, 8)

    assert policy.decide(load(0.0, queued=100, busy=16, workers=2)).target == 3
    assert not policy.decide(load(200.0, queued=0, busy=0, workers=3)).changed  # the window
    assert policy.decide(load(400.0, queued=0, busy=0, workers=3)).target == 2


# the names


def test_make_policy_knows_the_three_names():
    for name in POLICIES:
        assert make_policy(name, 1, 5, 8).name == name


def test_make_policy_refuses_an_unknown_name_listing_the_known_ones():
    with pytest.raises(ValueError) as refused:
        make_policy("kubernetes", 1, 5, 8)

    assert all(name in str(refused.value) for name in POLICIES)


def test_make_policy_refuses_bounds_upside_down():
    with pytest.raises(ValueError):
        make_policy("aico", 5, 1, 8)
