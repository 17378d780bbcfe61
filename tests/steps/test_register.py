"""The register step's decision: the first model registers, later ones only when better, always with a reason."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "steps"))
import register  # noqa: E402  (the step script, imported as Azure runs it: from its own folder)


def test_first_model_always_registers() -> None:
    ok, why = register.decide({"test_nrmse": 0.2}, None, "normalized_root_mean_squared_error")
    assert ok and "no model is registered yet" in why


@pytest.mark.parametrize(
    ("new", "old", "expected"), [(0.10, 0.12, True), (0.12, 0.10, False), (0.10, 0.10, False)]
)
def test_lower_is_better_for_error_metrics(new: float, old: float, expected: bool) -> None:
    ok, why = register.decide(
        {"test_nrmse": new}, {"test_nrmse": str(old)}, "normalized_root_mean_squared_error"
    )
    assert ok is expected
    assert ("is better than" in why) is expected and f"{new:.4f}" in why and f"{old:.4f}" in why


def test_higher_is_better_for_scores() -> None:
    assert register.decide({"test_r2": 0.9}, {"test_r2": "0.8"}, "r2_score")[0] is True
    assert register.decide({"test_accuracy": 0.7}, {"test_accuracy": "0.8"}, "accuracy")[0] is False


def test_registered_version_without_the_metric_is_replaced() -> None:
    ok, why = register.decide({"test_nrmse": 0.3}, {"other": "1"}, "normalized_root_mean_squared_error")
    assert ok and "has no test_nrmse tag" in why


def test_model_requirements_are_pinned_from_the_running_environment() -> None:
    reqs = register.model_requirements()
    assert any(r.startswith("mlflow==") for r in reqs) and all("==" in r for r in reqs)


def test_an_equal_model_is_not_registered_again() -> None:
    """Tags keep the exact value, so a retrain with the same score does not count as better."""
    value = 0.1380868212989208
    tags = register.metric_tags({"test_nrmse": value})
    ok, why = register.decide({"test_nrmse": value}, tags, "normalized_root_mean_squared_error")
    assert ok is False, why
    assert "not better" in why


def test_an_mlflow_model_from_azure_automl_is_loaded_and_registered_as_it_is(tmp_path: Path) -> None:
    """SDK v2 AutoML's best_model is an MLflow model folder (not the local engine's pickle)."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3, "y": np.arange(20.0) * 2 + 1})
    fitted = LinearRegression().fit(frame[["a", "b"]], frame.y)
    folder = tmp_path / "best_model"
    mlflow.sklearn.save_model(fitted, str(folder), signature=infer_signature(frame[["a", "b"]], frame.y),
                              serialization_format="cloudpickle")  # fmt: skip
    model = register.load_automl_model(folder)
    metrics = register.evaluate(model, frame, "y", "regression", label_range=38.0)
    assert metrics["test_rmse"] < 1e-6
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run():
            version = register.register(model, folder, frame, "y", "azure-automl-model", {"test_rmse": "0.0"})
        assert version == "1"
        loaded = mlflow.pyfunc.load_model("models:/azure-automl-model/1")
        np.testing.assert_allclose(loaded.predict(frame[["a", "b"]]), fitted.predict(frame[["a", "b"]]))
        tags = mlflow.MlflowClient().get_model_version("azure-automl-model", "1").tags
        assert tags["test_rmse"] == "0.0"
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
