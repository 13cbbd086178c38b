"""The arrival forecast, with the real scikit-learn model (it fits in milliseconds)."""

from __future__ import annotations

import math
import random

import pytest

from core.adapters.forecaster import regressor
from core.usecases.forecast import ArrivalForecast


def periodic_arrivals(hours: float, seed: int = 1) -> list[float]:
    """A Poisson process whose rate swings between 0.2/s and 3.2/s every 20 minutes."""
    rng = random.Random(seed)
    arrivals, t, peak = [], 0.0, 3.2
    while t < hours * 3600:
        t += rng.expovariate(peak)
        if rng.random() * peak < 0.2 + 3.0 * math.sin(math.pi * t / 1200) ** 2:
            arrivals.append(t)
    return arrivals


def steady_arrivals(hours: float, rate: float, seed: int = 2) -> list[float]:
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    while t < hours * 3600:
        t += rng.expovariate(rate)
        arrivals.append(t)
    return arrivals


class Constant:
    """A model that learns nothing and always says 50 tasks a second."""

    def fit(self, X, y):
        return self

    def predict(self, X):
        return [50.0 for _ in X]


def test_an_untrained_forecast_says_nothing():
    forecast = ArrivalForecast(regressor)

    assert forecast.rate(steady_arrivals(1, 1.0), 3600.0) is None
    assert not forecast.quality.trained
    assert not forecast.quality.trusted


def test_too_short_a_history_leaves_it_untrained():
    forecast = ArrivalForecast(regressor)
    arrivals = steady_arrivals(0.1, 1.0)  # 6 minutes

    quality = forecast.train(arrivals, 360.0)

    assert not quality.trained
    assert forecast.rate(arrivals, 360.0) is None


def test_a_model_worse_than_the_naive_forecast_is_not_used():
    forecast = ArrivalForecast(Constant)
    arrivals = steady_arrivals(2, 1.0)

    quality = forecast.train(arrivals, 7200.0)

    assert quality.trained
    assert quality.mae_model > quality.mae_naive
    assert not quality.trusted
    assert forecast.rate(arrivals, 7200.0) is None


def test_a_learnable_pattern_is_learnt_and_beats_the_naive_forecast():
    # Given three hours of a load that rises and falls every 20 minutes
    arrivals = periodic_arrivals(3)
    forecast = ArrivalForecast(regressor)

    quality = forecast.train(arrivals, 3 * 3600.0)

    # Then the model's error on the held-out last part is below the naive forecast's
    assert quality.trained and quality.trusted
    assert quality.mae_model < quality.mae_naive
    assert quality.samples > 100
    assert quality.describe()


def test_the_forecast_follows_a_rising_load_ahead_of_the_last_bucket():
    arrivals = periodic_arrivals(3)
    forecast = ArrivalForecast(regressor)
    forecast.train(arrivals, 3 * 3600.0)

    # When asked on the way up (4 minutes into a 20-minute cycle, rate rising)
    now = 3 * 3600.0 + 4 * 60
    later = periodic_arrivals(3.2)  # the same process, run on for 12 more minutes
    rate = forecast.rate(later, now)

    # Then it says more than the last bucket saw, as the true rate of the next minutes is
    last_bucket = sum(now - forecast.bucket_s <= a < now for a in later) / forecast.bucket_s
    assert rate is not None
    assert rate > last_bucket


def test_a_steady_load_is_forecast_near_its_rate():
    arrivals = steady_arrivals(2, 1.5)
    forecast = ArrivalForecast(regressor)

    quality = forecast.train(arrivals, 7200.0)

    assert quality.trusted  # it averages the noise of one bucket away
    assert forecast.rate(arrivals, 7200.0) == pytest.approx(1.5, rel=0.15)


def test_arrivals_after_now_are_ignored():
    arrivals = steady_arrivals(2, 1.0)
    forecast = ArrivalForecast(regressor)
    forecast.train(arrivals, 3600.0)
    burst_later = sorted([*arrivals, *(3700.0 + i / 100 for i in range(500))])

    assert forecast.rate(burst_later, 3600.0) == forecast.rate(arrivals, 3600.0)
    assert forecast.train(burst_later, 3600.0) == forecast.train(arrivals, 3600.0)


def test_lookback_covers_the_features():
    forecast = ArrivalForecast(regressor, bucket_s=30.0)

    assert forecast.lookback_s >= forecast.lags * forecast.bucket_s
