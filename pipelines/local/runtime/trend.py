"""Trend for the local AutoML's regression: whether a straight line over time should carry the model.

Tree models cannot follow a trend past the training range. When the data has a time column, three ways
of modelling the label are compared on time-ordered validation (trained on the earlier 80% of the rows,
scored on the later 20%), each with the same quick LightGBM learner: no trend; a straight line with the
learner on what the line leaves; and that line held level after the last training day. The search then
runs on the winner, and without a time column nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

VALID_SHARE = 0.2  # the later share of the rows that validates
MIN_ROWS = 60  # fewer training rows: no trend is tried
MIN_GAIN = 0.03  # a trend must cut the validation RMSE by this share to be used


@dataclass(frozen=True)
class Choice:
    kind: str  # "none", "linear" or "level"
    rmse: dict[str, float]

    def describe(self) -> str:
        scores = ", ".join(f"{k} {v:.4g}" for k, v in self.rmse.items())
        return f"trend: {self.kind} (time-ordered validation RMSE: {scores})"


def time_column(featurizer: Any, named: str | None) -> str | None:
    """The column time runs along: the named one if it holds dates, else the first date column."""
    if named and named in featurizer.date_columns:
        return named
    return featurizer.date_columns[0] if featurizer.date_columns else None


def _quick_learner() -> Any:
    import lightgbm

    return lightgbm.LGBMRegressor(
        n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=10, verbose=-1, n_jobs=1
    )


def fit_line(days: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y over days."""
    ok = ~np.isnan(days)
    slope, intercept = np.polyfit(days[ok], y[ok], 1)
    return float(intercept), float(slope)


def choose(
    features: pd.DataFrame,
    y: pd.Series,
    days: np.ndarray,
    learner: Callable[[], Any] = _quick_learner,
) -> Choice:
    """Compare no trend, a line, and a line held level, on the later rows by time (rows in time order)."""
    n = len(y)
    n_valid = int(n * VALID_SHARE)
    if n - n_valid < MIN_ROWS or n_valid < 10 or np.isnan(days).mean() > 0.05:
        return Choice("none", {})
    train, valid = slice(0, n - n_valid), slice(n - n_valid, n)
    target = y.to_numpy(dtype=float)
    intercept, slope = fit_line(days[train], target[train])
    end = float(np.nanmax(days[train]))
    lines = {
        "none": np.zeros(n),
        "linear": intercept + slope * np.nan_to_num(days, nan=end),
        "level": intercept + slope * np.minimum(np.nan_to_num(days, nan=end), end),
    }
    rmse = {}
    for kind, line in lines.items():
        fitted_line = lines["linear"] if kind == "level" else line  # the learner sees what the line leaves
        model = learner().fit(features.iloc[train], target[train] - fitted_line[train])
        predicted = model.predict(features.iloc[valid]) + line[valid]
        rmse[kind] = float(np.sqrt(np.mean((target[valid] - predicted) ** 2)))
    best = min(rmse, key=rmse.get)
    if best != "none" and rmse[best] > (1 - MIN_GAIN) * rmse["none"]:
        best = "none"
    return Choice(best, rmse)
