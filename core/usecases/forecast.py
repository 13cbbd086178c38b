"""The arrival forecast: how many tasks a second will arrive over the next minutes.

Arrivals are counted in buckets of `bucket_s` seconds on a fixed grid (bucket k covers
[k*bucket_s, (k+1)*bucket_s)). One row per complete bucket: the features are the rates of the
`lags` buckets before it, their trend, the level of the last half hour and, when the history
spans at least two days (then the clock is taken to be wall time), the time of day as sin/cos;
the target is the mean rate over the `horizon_s` that follows. The rows are in time order and
never shuffled: the model is fitted on the first part, scored on the last `holdout` share
against the naive forecast (the next minutes arrive at the last bucket's rate), then fitted again
on every row. Its forecast is used only while it beats the naive one by `margin`
(mae_model < margin x mae_naive); otherwise `rate()` says None and the policy reacts to what it
measures.

Only complete buckets up to `now` are read: what arrived after `now` is ignored, so the
simulator can hand over the whole trace and the forecast still sees the past only.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.ports import Regressor

_DAY = 86400.0
_LEVEL_S = 1800.0  # the level feature: the mean rate of the last half hour


@dataclass(frozen=True)
class ForecastQuality:
    trained: bool
    samples: int  # training rows
    mae_model: float  # mean absolute error (tasks/s) of the model on held-out recent buckets
    mae_naive: float  # same for the naive forecast (next = last bucket's rate)
    trusted: bool  # trained and mae_model < margin x mae_naive

    def describe(self) -> str:
        if not self.trained:
            return f"forecast untrained ({self.samples} rows): not used"
        verdict = "used" if self.trusted else "not better than naive: not used"
        return (
            f"model MAE {self.mae_model:.2f}/s vs naive {self.mae_naive:.2f}/s"
            f" on held-out buckets ({self.samples} rows): {verdict}"
        )


UNTRAINED = ForecastQuality(False, 0, math.nan, math.nan, False)


class ArrivalForecast:
    """Trained from arrival timestamps (any clock, the same as `now`'s), sorted ascending."""

    def __init__(
        self,
        regressor_factory: Callable[[], Regressor],
        bucket_s: float = 30.0,
        horizon_s: float = 120.0,
        lags: int = 10,
        holdout: float = 0.25,
        min_rows: int = 40,
        margin: float = 0.95,
    ) -> None:
        if bucket_s <= 0 or horizon_s < bucket_s or lags < 2:
            raise ValueError("need bucket_s > 0, horizon_s >= bucket_s and lags >= 2")
        self._factory = regressor_factory
        self.bucket_s, self.lags = bucket_s, lags
        self.ahead = max(1, round(horizon_s / bucket_s))  # buckets in the horizon
        self.horizon_s = self.ahead * bucket_s
        self.holdout, self.min_rows, self.margin = holdout, min_rows, margin
        self._level = max(lags, math.ceil(_LEVEL_S / bucket_s))  # buckets in the level feature
        self.lookback_s = (self._level + 1) * bucket_s
        self.quality = UNTRAINED
        self._model: Regressor | None = None
        self._daily = False
        self._cache: tuple[tuple[float, ...], float] | None = None

    def train(self, arrivals: Sequence[float], now: float) -> ForecastQuality:
        """Fit on every complete bucket up to `now`; score on the most recent `holdout` share."""
        end = math.floor(now / self.bucket_s)
        past = sorted(a for a in arrivals if a < end * self.bucket_s)
        if not past:
            return self._untrained(0)
        start = math.floor(past[0] / self.bucket_s)
        counts = _counts(past, start, end, self.bucket_s)
        self._daily = (end - start) * self.bucket_s >= 2 * _DAY
        rows = [
            (self._features(counts, i, (start + i) * self.bucket_s), self._target(counts, i))
            for i in range(self.lags, len(counts) - self.ahead + 1)
        ]
        if len(rows) < self.min_rows:
            return self._untrained(len(rows))
        test = max(1, round(len(rows) * self.holdout))
        fit_rows = rows[: len(rows) - test - self.ahead + 1]  # no target overlaps a test row
        held = rows[len(rows) - test :]
        model = self._fit(fit_rows)
        predicted = model.predict([x for x, _ in held])
        mae_model = _mean([abs(p - y) for p, (_, y) in zip(predicted, held, strict=True)])
        mae_naive = _mean([abs(x[0] - y) for x, y in held])  # x[0]: the last bucket's rate
        trusted = mae_model < self.margin * mae_naive
        self._model = self._fit(rows)
        self._cache = None
        self.quality = ForecastQuality(True, len(rows), mae_model, mae_naive, trusted)
        return self.quality

    def rate(self, arrivals: Sequence[float], now: float) -> float | None:
        """Predicted arrivals/s over the next horizon; None while untrained or not trusted."""
        if self._model is None or not self.quality.trusted:
            return None
        end = math.floor(now / self.bucket_s)
        start = end - self._level
        counts = _counts(arrivals, start, end, self.bucket_s)
        x = tuple(self._features(counts, len(counts), end * self.bucket_s))
        if self._cache is None or self._cache[0] != x:
            self._cache = (x, max(0.0, float(self._model.predict([list(x)])[0])))
        return self._cache[1]

    def _untrained(self, rows: int) -> ForecastQuality:
        self._model, self._cache = None, None
        self.quality = ForecastQuality(False, rows, math.nan, math.nan, False)
        return self.quality

    def _fit(self, rows: list[tuple[list[float], float]]) -> Regressor:
        model = self._factory()
        model.fit([x for x, _ in rows], [y for _, y in rows])
        return model

    def _features(self, counts: Sequence[int], i: int, at: float) -> list[float]:
        """The row of the bucket starting at index i (time `at`), from the buckets before it."""
        rates = [counts[i - k] / self.bucket_s for k in range(1, self.lags + 1)]
        half = self.lags // 2
        trend = _mean(rates[:half]) - _mean(rates[half:])
        window = counts[max(0, i - self._level) : i]
        level = sum(window) / (len(window) * self.bucket_s)
        features = [*rates, trend, level]
        if self._daily:
            phase = 2 * math.pi * (at % _DAY) / _DAY
            features += [math.sin(phase), math.cos(phase)]
        return features

    def _target(self, counts: Sequence[int], i: int) -> float:
        return sum(counts[i : i + self.ahead]) / (self.ahead * self.bucket_s)


def _counts(arrivals: Sequence[float], start: int, end: int, bucket_s: float) -> list[int]:
    """Arrivals in each grid bucket start..end-1 (arrivals sorted ascending)."""
    edges = [bisect.bisect_left(arrivals, k * bucket_s) for k in range(start, end + 1)]
    return [b - a for a, b in itertools.pairwise(edges)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
