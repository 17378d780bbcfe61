"""Register step: score the best AutoML model on held-out test data and register it if it is better.

The first model always registers; a later one only when its test score on the primary metric beats
the latest registered version's. The log says why it did or did not. Tags carry the test metrics,
the data checksum and the run id. Runs unchanged on Azure (azureml-mlflow sends MLflow calls to the
workspace registry) and locally (MLflow on SQLite).

The model is what the AutoML step trained: locally, the FLAML model's pickle (registered wrapped in a
pyfunc that takes the raw columns); on Azure, AutoML's best model as an MLflow model (the step's
``TrainingOutput`` holds only its pickle, so the MLflow model is fetched from the AutoML step's best
child run), loaded with MLflow's pyfunc flavor and registered as it is, with its own conda environment
(AutoML's runtime). On Azure this step runs in AutoML's curated environment, which has that runtime.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import metrics as metric_defs
import model_names
import numpy as np
import pandas as pd

MODEL_FILE_NAMES = ("model.pkl", "model.joblib")
AUTOML_STEP_NAME = "automl"  # the training pipeline's AutoMLStep
MLFLOW_MODEL_PREFIX = "outputs/mlflow-model"  # where Azure AutoML's runs keep their MLflow model


def mlflow_model_folder(path: Path) -> Path | None:
    """``path`` (or its ``mlflow-model`` folder) if it holds an MLflow model (an ``MLmodel`` file)."""
    for folder in (path, path / "mlflow-model"):
        if folder.is_dir() and (folder / "MLmodel").is_file():
            return folder
    return None


def azure_automl_mlflow_model(run: Any, target: Path) -> Path | None:
    """On Azure: download the MLflow model of the AutoML step's best child run into ``target``.

    None where there is no pipeline run to ask (the local engine's offline run has no parent)."""
    parent = getattr(run, "parent", None)
    if parent is None or not hasattr(parent, "find_step_run"):
        return None
    step_runs = parent.find_step_run(AUTOML_STEP_NAME)
    if not step_runs:
        raise RuntimeError(f"no step run named {AUTOML_STEP_NAME!r} in pipeline run {parent.id}")
    from azureml.train.automl.run import AutoMLRun

    best = AutoMLRun(step_runs[0].experiment, step_runs[0].id).get_best_child()
    best.download_files(prefix=MLFLOW_MODEL_PREFIX, output_directory=str(target))
    folder = mlflow_model_folder(target / MLFLOW_MODEL_PREFIX)
    if folder is None:
        raise RuntimeError(f"AutoML's best run {best.id} has no MLflow model under {MLFLOW_MODEL_PREFIX}")
    return folder


def load_automl_model(path: Path) -> Any:
    """The AutoML step's model: an MLflow model folder (Azure AutoML's, or the SDK v2 ``best_model``, loaded
    with its pyfunc flavor), else a pickle file or a folder holding one (the local engine's FLAML model)."""
    folder = mlflow_model_folder(path)
    if folder is not None:
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(str(folder))
    import cloudpickle

    if path.is_dir():
        found = [path / n for n in MODEL_FILE_NAMES if (path / n).is_file()] or sorted(path.glob("*.pkl"))
        if not found:
            raise FileNotFoundError(f"no model pickle in {path}")
        path = found[0]
    with open(path, "rb") as fh:
        return cloudpickle.load(fh)


def evaluate(model: Any, test: pd.DataFrame, label: str, task: str, label_range: float) -> dict[str, float]:
    """Test metrics, named ``test_<metric>``."""
    features = test.drop(columns=[label])
    y_true = test[label].to_numpy()
    if task == "classification":
        y_pred = model.predict(features)
        proba = model.predict_proba(features) if hasattr(model, "predict_proba") else None
        classes = list(getattr(model, "classes", None) or sorted(pd.unique(y_true)))
        values = metric_defs.classification_metrics(y_true, y_pred, proba, classes)
    else:
        values = metric_defs.regression_metrics(y_true, model.predict(features), label_range)
    return {f"test_{k}": v for k, v in values.items()}


def decide(new: dict[str, float], current: dict[str, str] | None, primary_metric: str) -> tuple[bool, str]:
    """Whether to register the new model, and why, comparing the primary metric's test value."""
    key, lower_is_better = metric_defs.COMPARED_TEST_METRIC[primary_metric]
    value = new.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False, f"the new model has no {key} to compare"
    if current is None:
        return True, f"no model is registered yet (new {key}={value:.4f})"
    old_raw = current.get(key)
    try:
        old = float(old_raw) if old_raw is not None else None
    except ValueError:
        old = None
    if old is None or math.isnan(old):
        return True, f"the registered version has no {key} tag (new {key}={value:.4f})"
    better = value < old if lower_is_better else value > old
    relation = "better than" if better else "not better than"
    verb = "registering" if better else "keeping the registered version"
    return better, f"new {key}={value:.4f} is {relation} registered {old:.4f}; {verb}"


def latest_version_tags(client: Any, name: str) -> tuple[str, dict[str, str]] | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = model_names.versions_of(client, name)
    except MlflowException:
        return None
    if not versions:
        return None
    latest = max(versions, key=lambda v: int(v.version))
    return latest.version, dict(latest.tags)


MODEL_PACKAGES = (
    "mlflow",
    "cloudpickle",
    "pandas",
    "numpy",
    "scikit-learn",
    "scipy",
    "flaml",
    "lightgbm",
    "xgboost-cpu",
)


def model_requirements() -> list[str]:
    """Pinned requirements of the logged model, from what this step runs with (skips MLflow's slow inference)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in MODEL_PACKAGES:
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return out


def register_mlflow_folder(model_path: Path, name: str, tags: dict[str, str]) -> str:
    """Log an MLflow model folder unchanged in the current run and register it under ``name``; the version."""
    import mlflow

    run = mlflow.active_run() or mlflow.start_run()
    mlflow.log_artifacts(str(model_path), artifact_path="model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name, tags=tags)
    return str(version.version)


def metric_tags(test_metrics: dict[str, float]) -> dict[str, str]:
    """Test metrics as model tags, at full precision: a later run compares its exact value with them."""
    return {k: str(float(v)) for k, v in test_metrics.items()}


def register(
    model: Any, model_path: Path, test: pd.DataFrame, label: str, name: str, tags: dict[str, str]
) -> str:
    """Log the model as an MLflow pyfunc taking raw columns, register it under ``name``; the version.

    An MLflow model (Azure AutoML's) is logged and registered as it is, its own environment included."""
    import mlflow

    folder = mlflow_model_folder(model_path)
    if folder is not None:
        return register_mlflow_folder(folder, name, tags)
    import raw_model
    from mlflow.models import infer_signature

    sample = test.drop(columns=[label]).head(5)
    pickle_path = model_path
    if model_path.is_dir():
        pickle_path = next(model_path / n for n in MODEL_FILE_NAMES if (model_path / n).is_file())
    signature = infer_signature(sample, np.asarray(model.predict(sample)))
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=raw_model.RawModelPyfunc(),
        artifacts={"model": str(pickle_path)},
        code_paths=raw_model.code_paths(),
        signature=signature,
        input_example=sample.head(2),
        metadata=model.input_metadata() if hasattr(model, "input_metadata") else None,
        registered_model_name=name,
        tags=tags,
        pip_requirements=model_requirements(),
    )
    from mlflow import MlflowClient

    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return version


def log_figures(model: Any, test: pd.DataFrame, label: str, task: str, time_column: str | None) -> list[str]:
    """Log the test figures (see figures.py) to the active run as ``figures/<name>``; their artifact paths.

    A figure that cannot be drawn is reported on the log and skipped: pictures never fail a registration.
    """
    import figures
    import matplotlib.pyplot as plt
    import mlflow

    try:
        drawn = figures.test_figures(model, test, label, task, time_column)
    except Exception as exc:  # noqa: BLE001 - a picture is never worth a failed training run
        print(f"register: no figures: {type(exc).__name__}: {exc}")
        return []
    paths = []
    for name, fig in drawn.items():
        mlflow.log_figure(fig, f"figures/{name}")
        plt.close(fig)
        paths.append(f"figures/{name}")
    print("register: figures " + ", ".join(paths))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model_data", required=True, type=Path)
    parser.add_argument("--metrics_data", type=Path)
    parser.add_argument("--test_data", required=True, type=Path)
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--task", default="regression")
    parser.add_argument("--primary_metric", default="normalized_root_mean_squared_error")
    parser.add_argument("--result", type=Path, help="folder for registration.json")
    args, _ = parser.parse_known_args(argv)
    trouble = model_names.problem(args.model_name)
    if trouble is not None:  # before scoring anything: the name is checked again where MLflow would refuse it
        print(f"register: {trouble} ({model_names.RULE})", file=sys.stderr)
        return 2

    import mlflow
    from mlflow import MlflowClient

    test = pd.read_csv(args.test_data / "data.csv")
    report = json.loads((args.test_data / "prep_report.json").read_text())
    label_range = (report.get("label_max") or 0) - (report.get("label_min") or 0)
    model_path = args.model_data
    if mlflow_model_folder(model_path) is None and os.environ.get("AZUREML_RUN_ID"):  # on Azure
        from azureml.core import Run

        model_path = azure_automl_mlflow_model(Run.get_context(), Path(tempfile.mkdtemp())) or model_path
    model = load_automl_model(model_path)
    test_metrics = evaluate(model, test, args.label, args.task, label_range)
    mlflow.log_metrics({k: v for k, v in test_metrics.items() if not math.isnan(v)})
    print("register: test metrics " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(test_metrics.items())))
    figure_paths = log_figures(model, test, args.label, args.task, report.get("time_column"))

    current = latest_version_tags(MlflowClient(), args.model_name)
    should, why = decide(test_metrics, current[1] if current else None, args.primary_metric)
    run_id = os.environ.get("AZUREML_RUN_ID") or os.environ.get("AMLOPS_RUN_ID") or ""
    result: dict[str, Any] = {"model_name": args.model_name, "registered": should, "reason": why}
    result["test_metrics"] = test_metrics
    result["figures"] = figure_paths
    if should:
        tags = metric_tags(test_metrics)
        tags.update(
            {
                "data_sha256": report.get("data_sha256", ""),
                "run_id": run_id,
                "primary_metric": args.primary_metric,
                "task": args.task,
                "label": args.label,
            }
        )
        if figure_paths:  # where the figures are: artifacts of this step's run
            tags["figures_run_id"] = mlflow.active_run().info.run_id
            tags["figures"] = ",".join(figure_paths)
        result["version"] = int(register(model, model_path, test, args.label, args.model_name, tags))
        print(f"register: registered {args.model_name} version {result['version']}: {why}")
    else:
        result["version"] = int(current[0]) if current else None
        print(f"register: not registered: {why}")
    if args.result:
        args.result.mkdir(parents=True, exist_ok=True)
        (args.result / "registration.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
