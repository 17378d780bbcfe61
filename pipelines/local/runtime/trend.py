"""Trend for the local AutoML's regression: whether the label should be learned relative to a line over time.

Tree models cannot follow a trend past the training range: a count that grew through the training
period is predicted at its old levels afterwards. When the data has a date column, the label can be
learned as a ratio to a straight line over time (the search then models the label / line, weighted by
line² so that its loss is the squared error of the label itself), and the model multiplies the line
back in. After the last training day the line goes on with a share (``damping``) of its slope: 1 keeps
the line, 0 holds it level, 0.5 halves its slope.

Whether to use it, and with which damping, is decided on time-ordered validation from several origins
(each trained on the rows before it, scored on the rows just after it, :func:`origins`), with the same
quick LightGBM learner for every candidate; no trend wins unless a trend cuts the mean validation RMSE
by :data:`MIN_GAIN` or more. Without a date column nothing changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ORIGINS = (0.5, 0.6, 0.7, 0.8)  # validation origins, as shares of the rows in time order
YEAR_DAYS = 365.25  # a fold's line is fitted on at least this many days when the data allow (see origins)
VALID_SHARE = 0.2  # each origin is scored on this share of the rows just after it
DAMPINGS = (0.0, 0.5, 1.0)  # the share of the line's slope kept after the last training day
MIN_ROWS = 60  # fewer training rows before the first origin: no trend is tried
MIN_GAIN = 0.03  # a trend must cut the mean validation RMSE by this share to be used
MAX_ROWS = 20_000  # rows the choice looks at (evenly spaced in time, for large data)


@dataclass(frozen=True)
class Choice:
    """The outcome: ``damping`` is None for no trend; ``rmse`` the mean validation RMSE of each candidate."""

    damping: float | None
    rmse: dict[str, float] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "none" if self.damping is None else f"ratio to a line, slope x{self.damping:g} after the end"

    def describe(self) -> str:
        scores = ", ".join(f"{k} {v:.4g}" for k, v in self.rmse.items())
        return f"trend: {self.kind}" + (f" (time-ordered validation RMSE: {scores})" if scores else "")


def time_column(featurizer: Any, named: str | None) -> str | None:
    """The column time runs along: the named one if it holds dates, else the first date column."""
    if named and named in featurizer.date_columns:
        return named
    return featurizer.date_columns[0] if featurizer.date_columns else None


def fit_line(days: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y over days (rows without a day are left out)."""
    ok = ~np.isnan(days)
    slope, intercept = np.polyfit(days[ok], y[ok], 1)
    return float(intercept), float(slope)


def make_line(days: np.ndarray, y: np.ndarray, column: str | None, fmt: str | None, damping: float) -> Any:
    """The least-squares line of y over days, as the model's ``RatioTrend``."""
    import raw_model

    intercept, slope = fit_line(days, y)
    return raw_model.RatioTrend(
        column or "", fmt, intercept, slope, float(np.nanmin(days)), float(np.nanmax(days)), damping
    )


def usable(days: np.ndarray, y: np.ndarray) -> bool:
    """A ratio to a line needs dates on (nearly) every row and a line above 0 over the whole training range."""
    if np.isnan(days).mean() > 0.05 or len(y) < MIN_ROWS:
        return False
    intercept, slope = fit_line(days, y)
    ends = intercept + slope * np.array([np.nanmin(days), np.nanmax(days)])
    return bool(ends.min() > 0.05 * max(abs(float(np.mean(y))), 1e-12))


def _quick_learner() -> Any:
    import lightgbm

    return lightgbm.LGBMRegressor(
        n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=10, verbose=-1, n_jobs=1
    )


def origins(days: np.ndarray) -> tuple[float, ...]:
    """The validation origins for rows in time order: :data:`ORIGINS`, or, when the rows before the first
    one span less than a year but a year fits before the last one, as many origins evenly from the first
    share of rows spanning a year to the last (a line fitted on part of a year takes the season for a trend).
    """
    known = days[~np.isnan(days)]
    if len(known) == 0:
        return ORIGINS
    year_share = float(np.searchsorted(np.sort(known), known.min() + YEAR_DAYS) / len(days))
    if year_share <= ORIGINS[0] or year_share > ORIGINS[-1]:
        return ORIGINS
    return tuple(float(x) for x in np.linspace(year_share, ORIGINS[-1], len(ORIGINS)))


def folds(days: np.ndarray) -> list[tuple[slice, slice]]:
    """Time-ordered validation folds of rows in time order: (rows before an origin, rows just after it)."""
    n = len(days)
    return [
        (slice(0, int(n * share)), slice(int(n * share), min(n, int(n * (share + VALID_SHARE)))))
        for share in origins(days)
    ]


def ratio_predictions(
    learner: Callable[[], Any],
    features: pd.DataFrame,
    target: np.ndarray,
    days: np.ndarray,
    fold: tuple[slice, slice],
    dampings: tuple[float, ...] = DAMPINGS,
) -> dict[float, np.ndarray] | None:
    """One fold's predictions of a model learned relative to a line fitted on the fold's rows, for each
    damping of that line after them; None when the fold's rows allow no line."""
    fit, valid = fold
    fit_days = days[fit]
    if not usable(fit_days, target[fit]):
        return None
    line = make_line(fit_days, target[fit], None, None, 1.0)
    weights = line.line(fit_days)
    model = learner().fit(features.iloc[fit], target[fit] / weights, sample_weight=weights**2)
    ratio = np.asarray(model.predict(features.iloc[valid]), dtype=float)
    return {d: ratio * dataclasses.replace(line, damping=d).line(days[valid]) for d in dampings}


def choose(
    features: pd.DataFrame,
    y: pd.Series,
    days: np.ndarray,
    learner: Callable[[], Any] = _quick_learner,
) -> Choice:
    """No trend, or a ratio to a line with the damping that validates best (rows in time order)."""
    n = len(y)
    if n > MAX_ROWS:
        keep = np.linspace(0, n - 1, MAX_ROWS).round().astype(int)
        features, y, days, n = features.iloc[keep], y.iloc[keep], days[keep], MAX_ROWS
    target = y.to_numpy(dtype=float)
    if int(n * ORIGINS[0]) < MIN_ROWS or not usable(days, target):
        return Choice(None)
    errors: dict[str, list[float]] = {"none": [], **{f"ratio x{d:g}": [] for d in DAMPINGS}}
    for fold in folds(days):
        fit, valid = fold
        truth = target[valid]
        plain = learner().fit(features.iloc[fit], target[fit]).predict(features.iloc[valid])
        errors["none"].append(_rmse(truth, plain))
        found = ratio_predictions(learner, features, target, days, fold)
        for d in DAMPINGS:
            errors[f"ratio x{d:g}"].append(np.inf if found is None else _rmse(truth, found[d]))
    rmse = {k: float(np.mean(v)) for k, v in errors.items()}
    best = min(rmse, key=rmse.get)
    if best == "none" or rmse[best] > (1 - MIN_GAIN) * rmse["none"]:
        return Choice(None, rmse)
    return Choice(float(best.removeprefix("ratio x")), rmse)


def _rmse(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((truth - predicted) ** 2)))
