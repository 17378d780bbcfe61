"""The local AutoMLStep: AutoMLConfig settings mapped onto FLAML, raw-columns models out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.local.runtime import automl

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")


def _settings(**overrides) -> dict:
    base = {"task": "regression", "primary_metric": "normalized_root_mean_squared_error", "label_column_name": "y",
            "experiment_timeout_minutes": 1, "iterations": 3, "n_cross_validations": 3, "allowed_models": ["LightGBM"],
            "blocked_models": [], "enable_early_stopping": True}  # fmt: skip
    return base | overrides


def test_model_names_map_to_flaml_estimators() -> None:
    assert automl.estimator_list("regression", [], []) == "auto"
    assert automl.estimator_list("regression", ["LightGBM", "RandomForest"], ["RandomForest"]) == ["lgbm"]
    assert automl.estimator_list("classification", [], ["KNN", "LogisticRegression"])[:1] == ["lgbm"]
    with pytest.raises(automl.AutoMLSettingsError, match="not available on the local engine"):
        automl.estimator_list("regression", ["TabNet"], [])
    with pytest.raises(automl.AutoMLSettingsError, match="leave no model"):
        automl.estimator_list("regression", ["LightGBM"], ["LightGBM"])


def test_metric_must_fit_the_task() -> None:
    assert automl.flaml_metric("normalized_root_mean_squared_error", "regression") == "rmse"
    assert automl.flaml_metric("AUC_weighted", "classification") == "roc_auc_weighted"
    with pytest.raises(automl.AutoMLSettingsError, match="does not fit task regression"):
        automl.flaml_metric("accuracy", "regression")


def test_regression_model_takes_raw_columns_with_dates() -> None:
    rng = np.random.default_rng(0)
    dates = pd.date_range("2020-01-01", periods=300, freq="D")
    x = rng.normal(size=300)
    frame = pd.DataFrame({"day": dates.strftime("%m/%d/%Y"), "x": x, "kind": rng.choice(["a", "b"], 300)})
    frame["y"] = 10 * x + (frame["kind"] == "a") * 5 + dates.dayofweek
    model, report = automl.train(frame, _settings())
    assert model.featurizer.date_columns == ["day"] and "kind" in model.featurizer.category_levels
    predictions = model.predict(frame.drop(columns=["y"]).head(50))
    assert predictions.shape == (50,)
    assert np.corrcoef(predictions, frame["y"].head(50))[0, 1] > 0.8
    assert report["best_estimator"] == "lgbm" and 0 < report["best_score"] < 0.5
    # FLAML fits with n_jobs=-1; under a thread budget the trained model predicts alike with one thread
    assert automl.raw_model.limit_threads(model.estimator, 1) >= 1
    assert model.estimator.model.model.n_jobs == 1  # FLAML's AutoML -> its LGBM estimator -> LGBMRegressor
    np.testing.assert_array_equal(model.predict(frame.drop(columns=["y"]).head(50)), predictions)
    with pytest.raises(ValueError, match="missing input column"):
        model.predict(frame[["x"]])


def test_classification_gives_classes_and_probabilities() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    frame["y"] = np.where(frame["a"] + frame["b"] > 0, "yes", "no")
    model, report = automl.train(frame, _settings(task="classification", primary_metric="accuracy"))
    assert set(model.predict(frame.drop(columns=["y"]))) <= {"yes", "no"}
    assert model.predict_proba(frame.drop(columns=["y"])).shape == (200, 2)
    assert report["best_score"] > 0.8


def test_missing_label_is_a_settings_error() -> None:
    with pytest.raises(automl.AutoMLSettingsError, match="label_column_name 'y'"):
        automl.train(pd.DataFrame({"a": [1, 2, 3]}), _settings())


def test_forecasting_maps_time_column_and_horizon(bike_csv) -> None:
    frame = pd.read_csv(bike_csv).drop(columns=["casual", "registered"])
    train, future = frame.iloc[:400], frame.iloc[400:414]
    settings = _settings(task="forecasting", label_column_name="cnt", time_column_name="date", forecast_horizon=14,
                         iterations=2)  # fmt: skip
    model, report = automl.train(train, settings)
    assert model.task == "forecasting" and model.time_column == "date"
    predictions = model.predict(future.drop(columns=["cnt"]))
    assert predictions.shape == (14,) and np.isfinite(predictions).all()
    assert report["ensemble"] is False  # FLAML's ensemble does not apply to ts_forecast
