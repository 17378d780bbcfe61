"""The register step with Azure AutoML's kind of model: an MLflow model folder, loaded through pyfunc.

The folder here is an MLflow scikit-learn model (MLmodel, conda.yaml, model.pkl), the layout Azure
AutoML's best run keeps under outputs/mlflow-model; a real AutoML model also needs AutoML's runtime,
which only Azure's curated AutoML environment has (not tested here).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "steps"))

import register  # noqa: E402  (the step script, imported as Azure runs it: from its own folder)


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": 3 * x[:, 0] - x[:, 1] + 0.1 * rng.normal(size=n)})


@pytest.fixture
def mlflow_model(tmp_path: Path) -> tuple[Path, Any]:
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    train = frame(60, 0)
    model = LinearRegression().fit(train[["a", "b"]], train["y"])
    folder = tmp_path / "outputs" / "mlflow-model"
    mlflow.sklearn.save_model(model, str(folder))
    return folder, model


def test_an_mlflow_model_folder_is_loaded_through_pyfunc(mlflow_model):
    folder, model = mlflow_model
    test = frame(10, 1)
    for path in (folder, folder.parent):  # the folder itself, or a folder holding mlflow-model/
        loaded = register.load_automl_model(path)
        assert type(loaded).__name__ == "PyFuncModel"
        assert np.allclose(loaded.predict(test[["a", "b"]]), model.predict(test[["a", "b"]]))


def test_register_step_registers_the_mlflow_model_as_it_is(mlflow_model, tmp_path, monkeypatch):
    import mlflow

    folder, model = mlflow_model
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.chdir(tmp_path)
    test_dir = tmp_path / "test_data"
    test_dir.mkdir()
    test = frame(30, 2)
    test.to_csv(test_dir / "data.csv", index=False)
    (test_dir / "prep_report.json").write_text(json.dumps({"label_min": -5.0, "label_max": 5.0}))
    result_dir = tmp_path / "result"
    argv = ["--model_data", str(folder), "--test_data", str(test_dir), "--model_name", "azure-automl",
            "--label", "y", "--result", str(result_dir)]  # fmt: skip
    try:
        assert register.main(argv) == 0
    finally:
        mlflow.end_run()
    result = json.loads((result_dir / "registration.json").read_text())
    assert result["registered"] is True and result["version"] == 1
    assert result["test_metrics"]["test_r2"] > 0.95

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    registered = mlflow.artifacts.download_artifacts("models:/azure-automl/1", dst_path=str(tmp_path / "dl"))
    # the model's own files and environment travel with it (what score.py and batch scoring load)
    assert (Path(registered) / "conda.yaml").read_text() == (folder / "conda.yaml").read_text()
    assert (Path(registered) / "MLmodel").read_text() == (folder / "MLmodel").read_text()
    loaded = mlflow.pyfunc.load_model("models:/azure-automl/1")
    assert np.allclose(loaded.predict(test[["a", "b"]]), model.predict(test[["a", "b"]]))
    tags = mlflow.MlflowClient().get_model_version("azure-automl", "1").tags
    assert tags["label"] == "y" and float(tags["test_r2"]) == result["test_metrics"]["test_r2"]


def test_on_azure_the_best_automl_runs_mlflow_model_is_fetched(mlflow_model, tmp_path, monkeypatch):
    """The Run API calls the step makes on Azure (the runs are stand-ins; the SDK calls are not run)."""
    import shutil

    import azureml.train.automl.run as automl_run

    folder, _ = mlflow_model
    asked: list[Any] = []

    class Best:
        id = "AutoML_1_3"

        def download_files(self, prefix: str, output_directory: str) -> None:
            asked.append(("download", prefix))
            shutil.copytree(folder, Path(output_directory) / prefix)

    class FakeAutoMLRun:
        def __init__(self, experiment: Any, run_id: str) -> None:
            asked.append(("automl run", experiment, run_id))

        def get_best_child(self) -> Best:
            return Best()

    class StepRun:
        id, experiment = "AutoML_1", "bike-demand-train"

    class PipelineRun:
        id = "pipeline-run-1"

        def find_step_run(self, name: str) -> list[StepRun]:
            asked.append(("find", name))
            return [StepRun()]

    class StepContext:
        parent = PipelineRun()

    monkeypatch.setattr(automl_run, "AutoMLRun", FakeAutoMLRun)
    found = register.azure_automl_mlflow_model(StepContext(), tmp_path / "fetched")
    assert found == tmp_path / "fetched" / "outputs" / "mlflow-model"
    assert asked == [("find", "automl"), ("automl run", "bike-demand-train", "AutoML_1"),
                     ("download", "outputs/mlflow-model")]  # fmt: skip
    assert register.azure_automl_mlflow_model(object(), tmp_path / "x") is None  # no pipeline run: local
