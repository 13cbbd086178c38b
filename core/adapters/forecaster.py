"""The scikit-learn model behind the arrival forecast (core/usecases/forecast.py).

A ridge regression on standardised features: it fits a few thousand rows in milliseconds, has
no randomness (the same history gives the same model), and with a linear model of the recent
buckets' rates, their trend and the half-hour level it learns how much to smooth the noise of
one bucket and how far to follow a rise. Only this module imports scikit-learn.
"""

from __future__ import annotations

from sklearn.linear_model import Ridge  # type: ignore[import-untyped]
from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

from core.ports import Regressor


def regressor() -> Regressor:
    """A fresh, unfitted model for ArrivalForecast's `regressor_factory`."""
    model: Regressor = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    return model
