"""The local AutoML's trend: a line over time is used only when time-ordered validation says it helps."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes

from pipelines.local.runtime import automl, trend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "steps"))
import raw_model  # noqa: E402


def _dated(y: np.ndarray, x: np.ndarray) -> pd.DataFrame:
    days = pd.date_range("2020-01-01", periods=len(y), freq="D")
    return pd.DataFrame({"day": days.strftime("%m/%d/%Y"), "x": x, "y": y})


def _choice(frame: pd.DataFrame) -> trend.Choice:
    x_raw = frame.drop(columns=["y"])
    featurizer = raw_model.RawFeaturizer().fit(x_raw)
    days = raw_model.LinearTrend.days_of(x_raw["day"], featurizer.date_formats.get("day"))
    return trend.choose(featurizer.transform(x_raw), frame["y"], days)


def test_a_growing_series_gets_a_line_and_extrapolates_it() -> None:
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=n)
    y = 5.0 * np.arange(n) + 50 * x + rng.normal(scale=5, size=n)
    frame = _dated(y, x)
    assert _choice(frame).kind in ("linear", "level")
    settings = {"task": "regression", "primary_metric": "normalized_root_mean_squared_error",
                "label_column_name": "y", "experiment_timeout_minutes": 1, "iterations": 3,
                "allowed_models": ["LightGBM"], "blocked_models": [], "enable_ensemble": False}  # fmt: skip
    model, report = automl.train(frame.iloc[:300], settings)
    assert report["trend"]["column"] == "day" and report["trend"]["slope"] > 4
    future = frame.iloc[300:]
    error = np.sqrt(np.mean((model.predict(future.drop(columns=["y"])) - future["y"]) ** 2))
    assert error < 100  # trees alone stay at the last level seen: an error of hundreds


def test_no_line_for_data_without_a_trend_scikit_learns_diabetes() -> None:
    data = load_diabetes()
    frame = _dated(data.target, data.data[:, 2])  # rows in their own order: no trend over time
    assert _choice(frame).kind == "none"


def test_without_a_time_column_nothing_changes() -> None:
    data = load_diabetes(as_frame=True)
    frame = data.frame.rename(columns={"target": "y"})
    settings = {"task": "regression", "primary_metric": "normalized_root_mean_squared_error",
                "label_column_name": "y", "experiment_timeout_minutes": 1, "iterations": 2,
                "allowed_models": ["LightGBM"], "blocked_models": [], "enable_ensemble": False}  # fmt: skip
    said: list[str] = []
    model, report = automl.train(frame, settings, say=said.append)
    assert report["trend"] is None and model.trend is None
    assert not any(s.startswith("trend:") for s in said)


def test_a_model_pickled_before_trends_predicts_as_before() -> None:
    frame = _dated(np.arange(50.0), np.arange(50.0))
    x_raw = frame.drop(columns=["y"])

    class Mean:
        def predict(self, features: pd.DataFrame) -> np.ndarray:
            return np.full(len(features), 7.0)

    model = raw_model.RawColumnsModel(raw_model.RawFeaturizer().fit(x_raw), Mean(), "regression", "y")
    del model.__dict__["trend"]  # as unpickled from an older version
    assert (model.predict(x_raw) == 7.0).all()
    model.trend = raw_model.LinearTrend("day", "%m/%d/%Y", 18262.0, 1.0, 2.0, until=10.0)
    got = model.predict(x_raw)
    assert got[0] == 8.0 and got[5] == 18.0 and got[40] == 7.0 + 1.0 + 2.0 * 10.0  # level after day 10
