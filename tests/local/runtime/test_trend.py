"""The local AutoML's trend: the label is learned relative to a line over time only when time-ordered
validation says it helps; the model multiplies the line back in and round-trips like any other."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from pipelines.local.runtime import automl, trend
from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "steps"))
import raw_model  # noqa: E402

pytestmark = pytest.mark.slow  # fits models


def _settings(**overrides) -> dict:
    base = {"task": "regression", "primary_metric": "normalized_root_mean_squared_error", "label_column_name": "y",
            "experiment_timeout_minutes": 1, "iterations": 3, "allowed_models": ["LightGBM"], "blocked_models": []}  # fmt: skip
    return base | overrides


def _dated(y: np.ndarray, x: np.ndarray) -> pd.DataFrame:
    days = pd.date_range("2020-01-01", periods=len(y), freq="D")
    return pd.DataFrame({"day": days.strftime("%m/%d/%Y"), "x": x, "y": y})


def _growing(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A level growing over time times a weekly pattern and an effect of x: what trees cannot extrapolate."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    level = 100.0 + 2.0 * np.arange(n)
    weekly = 1.0 + 0.3 * np.sin(2 * np.pi * np.arange(n) / 7)
    return _dated(level * weekly * (1 + 0.1 * x) + rng.normal(scale=5, size=n), x)


def _choice(frame: pd.DataFrame) -> trend.Choice:
    x_raw = frame.drop(columns=["y"])
    featurizer = raw_model.RawFeaturizer().fit(x_raw)
    days = raw_model.RatioTrend.days_of(x_raw["day"], featurizer.date_formats.get("day"))
    return trend.choose(featurizer.transform(x_raw), frame["y"], days)


def _rmse(model, frame: pd.DataFrame) -> float:
    return float(np.sqrt(np.mean((model.predict(frame.drop(columns=["y"])) - frame["y"]) ** 2)))


def test_a_growing_series_is_learned_relative_to_a_line_that_carries_on() -> None:
    frame = _growing()
    choice = _choice(frame.iloc[:300])
    assert choice.damping is not None and choice.rmse["none"] > 1.5 * min(choice.rmse.values())
    said: list[str] = []
    model, report = automl.train(frame.iloc[:300], _settings(), say=said.append)
    assert report["trend"]["column"] == "day" and 1.5 < report["trend"]["slope"] < 2.5
    assert report["ensemble"] is False and any(s.startswith("trend: ratio") for s in said)
    # the reported score is the label's NRMSE, not the ratio's: of the order of the noise over the range
    assert 0.005 < report["best_score"] < 0.2
    future = frame.iloc[300:]
    level_held = np.sqrt(np.mean((future["y"] - frame["y"].iloc[270:300].mean()) ** 2))
    assert _rmse(model, future) < 0.6 * level_held  # trees alone stay near the last level seen


def test_no_trend_for_data_without_one_scikit_learns_diabetes_in_row_order() -> None:
    data = load_diabetes()
    frame = _dated(data.target, data.data[:, 2])  # rows in their own order: nothing grows over time
    choice = _choice(frame)
    assert choice.damping is None and set(choice.rmse) == {"none", "ratio x0", "ratio x0.5", "ratio x1"}
    model, report = automl.train(frame, _settings())
    assert model.trend is None and report["trend"] is None


def test_without_a_date_column_or_with_another_metric_nothing_changes() -> None:
    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "y"})
    said: list[str] = []
    model, report = automl.train(frame, _settings(iterations=2), say=said.append)
    assert report["trend"] is None and model.trend is None and report["ensemble"] is True
    assert not any(s.startswith("trend:") for s in said)
    model, report = automl.train(_growing(), _settings(primary_metric="r2_score", iterations=2))
    assert report["trend"] is None and model.trend is None


def test_too_few_rows_or_a_line_through_zero_get_no_trend() -> None:
    assert _choice(_growing(n=100)).damping is None and _choice(_growing(n=100)).rmse == {}
    falling = _growing()
    falling["y"] = falling["y"].to_numpy()[::-1] - 500  # the line crosses 0 inside the training range
    assert _choice(falling).damping is None


def test_the_line_is_level_before_the_start_damped_after_the_end_and_never_negative() -> None:
    line = raw_model.RatioTrend("day", None, intercept=10.0, slope=1.0, start=0.0, end=10.0, damping=0.5)
    got = line.line(np.array([-5.0, 0.0, 4.0, 10.0, 20.0, np.nan]))
    np.testing.assert_allclose(got, [10.0, 10.0, 14.0, 20.0, 25.0, 20.0])
    falling = raw_model.RatioTrend("day", None, intercept=10.0, slope=-1.0, start=0.0, end=5.0, damping=1.0)
    assert falling.line(np.array([30.0]))[0] == 0.0


def test_the_model_round_trips_through_pickle_and_mlflow_and_predicts_from_raw_columns(tmp_path) -> None:
    import mlflow

    frame = _growing()
    model, _ = automl.train(frame.iloc[:300], _settings())
    assert model.trend is not None
    raw = frame.drop(columns=["y"]).iloc[290:]
    expected = model.predict(raw)
    assert np.allclose(model.estimator.predict(model.features(raw)) * model.trend.at(raw), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(raw), expected)
    folder = tmp_path / "mlflow-model"
    folder.mkdir()
    automl.save_mlflow_model(model, frame.drop(columns=["y"]).head(5), folder)
    np.testing.assert_allclose(mlflow.pyfunc.load_model(str(folder)).predict(raw), expected)


def test_a_model_pickled_before_trends_predicts_as_before() -> None:
    frame = _dated(np.arange(50.0), np.arange(50.0))
    x_raw = frame.drop(columns=["y"])

    class Seven:
        def predict(self, features: pd.DataFrame) -> np.ndarray:
            return np.full(len(features), 7.0)

    model = raw_model.RawColumnsModel(raw_model.RawFeaturizer().fit(x_raw), Seven(), "regression", "y")
    state = model.__getstate__()
    del state["trend"]  # as pickled by a version without trends
    old = raw_model.RawColumnsModel.__new__(raw_model.RawColumnsModel)
    old.__dict__.update(state)
    assert (old.predict(x_raw) == 7.0).all()
    first = float(raw_model.RatioTrend.days_of(x_raw["day"], "%m/%d/%Y")[0])
    model.trend = raw_model.RatioTrend("day", "%m/%d/%Y", 1.0 - first, 1.0, first, first + 10.0, damping=0.0)
    got = model.predict(x_raw)
    assert got[0] == 7.0 and got[5] == 42.0 and got[40] == 77.0  # 7 x (1 + days), level after day 10


def test_with_validation_data_the_holdout_is_scored_relative_to_the_line_too() -> None:
    frame = _growing()
    model, report = automl.train(frame.iloc[:240], _settings(), validation=frame.iloc[240:300])
    assert model.trend is not None and report["validation_rows"] == 60
    assert 0.005 < report["best_score"] < 0.2  # the label's NRMSE on the holdout, not the ratio's
    assert _rmse(model, frame.iloc[300:]) < 150


def test_large_data_is_judged_on_rows_evenly_spaced_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _growing(n=400).sample(frac=1.0, random_state=0)  # rows out of time order
    seen: list[np.ndarray] = []
    real = trend.choose
    monkeypatch.setattr(trend, "MAX_ROWS", 200)
    monkeypatch.setattr(
        trend, "choose", lambda features, y, days: seen.append(days) or real(features, y, days)
    )
    x_raw = frame.drop(columns=["y"])
    trended = automl._trend(x_raw, frame["y"], raw_model.RawFeaturizer().fit(x_raw), _settings(), None)
    assert trended is not None and len(seen[0]) == 200
    np.testing.assert_array_equal(
        trended.timeline[2], seen[0]
    )  # the VotingEnsemble is judged on the same rows
    np.testing.assert_array_equal(trended.line.at(x_raw), trended.line.line(trended.days))
    steps = np.diff(seen[0])
    assert (steps > 0).all() and steps.max() <= 3  # in time order, spread over the whole range
    assert seen[0][-1] - seen[0][0] == 399


def test_validation_origins_leave_a_year_before_each_when_the_data_allow() -> None:
    def days(n: int) -> np.ndarray:
        return np.arange(n, dtype=float) + 15_000.0

    assert trend.origins(days(300)) == trend.ORIGINS  # under a year before the last origin: as they are
    assert trend.origins(days(1000)) == trend.ORIGINS  # a year fits before the first origin already
    got = trend.origins(days(609))  # the bike data's training days: a year is 60% of them
    assert (
        got[0] == pytest.approx(366 / 609) and got[-1] == trend.ORIGINS[-1] and len(got) == len(trend.ORIGINS)
    )
    assert all(a < b for a, b in zip(got, got[1:], strict=False))
    fit, valid = trend.folds(days(609))[0]
    assert fit.stop - fit.start >= 365 and valid.start == fit.stop
