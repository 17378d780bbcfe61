"""The training pipeline: prep -> AutoML -> register, built from Azure ML SDK v1 classes.

python -m pipelines.train run [--set NAME=VALUE]... [--data NAME|PATH|URL] [--json]
python -m pipelines.train show [--json]
python -m pipelines.train publish [--target local|azure] [--json]
python -m pipelines.train models [--json]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pipelines.cli import exit_now, pipeline_cli
from pipelines.core.definition import PipelineDefinition, RunCheck
from pipelines.definitions import (
    AZURE_AUTOML_ENVIRONMENT,
    STEPS_DIR,
    dataset_input,
    recurrence,
    run_config,
    workspace_run_config,
)
from pipelines.errors import UserError
from pipelines.settings import Settings

NAME = "amlops-train"


@dataclass(frozen=True)
class _Data:
    """The pipeline's data between steps: its input, prep's outputs, AutoML's outputs, the registration."""

    raw: Any
    train: Any
    test: Any
    model: Any
    metrics: Any
    registration: Any


def build(
    settings: Settings, data: str | None = None, compute_targets: dict[str, Any] | None = None
) -> PipelineDefinition:
    """The training pipeline's SDK objects: three steps, their parameters, the default schedule.

    ``compute_targets`` maps compute names to the workspace's ``ComputeTarget`` objects (the Azure
    backend passes them: Azure's AutoMLStep needs the object, not its name); without it the steps name
    their compute target, which is all the local engine reads.
    """
    compute = (compute_targets or {}).get(settings.compute_name, settings.compute_name)
    params = _parameters(settings)
    flow = _data(settings, data)
    prep = _prep_step(settings, params, flow, compute)
    automl = _automl_step(settings, flow, compute)
    register = _register_step(settings, params, flow, compute)
    return PipelineDefinition(
        name=NAME,
        description=f"Train {settings.model_name}: prep -> AutoML ({settings.task}, {settings.metric}) -> register",
        steps=[prep, automl, register],
        parameters=params,
        experiment_name=settings.experiment_name,
        schedule=recurrence(settings),
        settings=settings,
        module="pipelines.train",
        dataset_param="training_dataset",
        with_compute_targets=lambda targets: build(settings, data, targets),
    )


def _parameters(settings: Settings) -> dict[str, Any]:
    """The pipeline parameters a run may override, defaulting to the settings."""
    from azureml.pipeline.core import PipelineParameter

    return {
        "label": PipelineParameter("label", default_value=settings.label),
        "time_column": PipelineParameter("time_column", default_value=settings.time_column),
        "cutoff_date": PipelineParameter("cutoff_date", default_value=settings.cutoff_date),
        "model_name": PipelineParameter("model_name", default_value=settings.model_name),
    }


def _data(settings: Settings, data: str | None) -> _Data:
    from azureml.data import OutputFileDatasetConfig
    from azureml.pipeline.core import PipelineData, TrainingOutput

    raw = dataset_input("raw_data", data or settings.dataset, "training_dataset")
    train = OutputFileDatasetConfig(name="train_data")
    test = OutputFileDatasetConfig(name="test_data")
    model = PipelineData(
        "model_data", pipeline_output_name="best_model", training_output=TrainingOutput(type="Model")
    )
    metrics = PipelineData(
        "metrics_data", pipeline_output_name="automl_metrics", training_output=TrainingOutput(type="Metrics")
    )
    registration = OutputFileDatasetConfig(name="registration")
    return _Data(raw, train, test, model, metrics, registration)


def _prep_step(settings: Settings, params: dict[str, Any], flow: _Data, compute: Any) -> Any:
    from azureml.pipeline.steps import PythonScriptStep

    return PythonScriptStep(
        name="prep",
        script_name="prep.py",
        source_directory=str(STEPS_DIR),
        arguments=[
            "--raw_data", flow.raw,
            "--label", params["label"],
            "--time_column", params["time_column"],
            "--cutoff_date", params["cutoff_date"],
            "--task", settings.task,
            "--train_data", flow.train,
            "--test_data", flow.test,
        ],
        compute_target=compute,
        runconfig=run_config("train"),
        allow_reuse=True,
    )  # fmt: skip


def _automl_settings(settings: Settings, flow: _Data, compute: Any) -> dict[str, Any]:
    """AutoMLConfig's arguments but the time budget, path and forecasting parameters."""
    automl_kwargs: dict[str, Any] = {
        "task": settings.task,
        "primary_metric": settings.metric,
        "training_data": flow.train.read_delimited_files(),
        "label_column_name": settings.label,
        "n_cross_validations": settings.n_cross_validations,
        "compute_target": compute,
        "enable_early_stopping": True,
        "featurization": "auto",
        # AutoML's released curated environment on Azure: the installed client's own check for a released
        # SDK fails on its package index URL, and it would otherwise ask for a non-production environment
        "force_curated_environment": True,
    }
    if settings.allowed_models:
        automl_kwargs["allowed_models"] = _model_list(settings.allowed_models)
    if settings.blocked_models:
        automl_kwargs["blocked_models"] = _model_list(settings.blocked_models)
    if settings.iterations != 0:  # 0: no cap; a negative value is for the SDK to refuse
        automl_kwargs["iterations"] = settings.iterations
    return automl_kwargs


def _checked_automl_settings(settings: Settings, flow: _Data, compute: Any) -> dict[str, Any]:
    """``_automl_settings`` with the forecasting parameters, checked by the SDK; UserError naming the
    setting it refuses."""
    from azureml.automl.core.forecasting_parameters import ForecastingParameters
    from azureml.automl.core.shared.exceptions import ConfigException
    from azureml.train.automl import AutoMLConfig

    automl_kwargs = _automl_settings(settings, flow, compute)
    try:
        if settings.task == "forecasting":
            automl_kwargs["forecasting_parameters"] = ForecastingParameters(
                time_column_name=settings.time_column, forecast_horizon=settings.forecast_horizon, freq="D"
            )
        # the SDK's own checks of ranges, metric and model names, which it otherwise makes only when a
        # pipeline is submitted to Azure; without the time budget: the local engine takes budgets under
        # Azure's 15-minute minimum (timeout_minutes is checked with the settings)
        # (its debug log would otherwise be an automl.log file left in the caller's folder)
        AutoMLConfig(**automl_kwargs, debug_log=os.devnull).as_serializable_dict()
    except ConfigException as exc:
        target = getattr(exc, "target", None) or ""
        message = " ".join(str(getattr(exc, "message", None) or exc).split())
        value = f"={getattr(settings, target)!r}" if hasattr(settings, target) else ""
        raise UserError(
            f"AutoML setting {target}{value}: {message}" if target else f"AutoML settings: {message}",
            hint=_AUTOML_HINTS.get(target, "see --help for the settings"),
        ) from None
    return automl_kwargs


def _automl_step(settings: Settings, flow: _Data, compute: Any) -> Any:
    from azureml.pipeline.steps import AutoMLStep
    from azureml.train.automl import AutoMLConfig

    automl_kwargs = _checked_automl_settings(settings, flow, compute)
    # path: the folder Azure snapshots for the AutoML step (without it, the current directory)
    automl_config = AutoMLConfig(
        experiment_timeout_minutes=max(1, math.ceil(settings.timeout_minutes)),
        path=str(STEPS_DIR),
        **automl_kwargs,
    )
    return AutoMLStep(
        name="automl", automl_config=automl_config, outputs=[flow.model, flow.metrics], allow_reuse=False
    )


def _register_step(settings: Settings, params: dict[str, Any], flow: _Data, compute: Any) -> Any:
    from azureml.pipeline.steps import PythonScriptStep

    return PythonScriptStep(
        name="register",
        script_name="register.py",
        source_directory=str(STEPS_DIR),
        arguments=[
            "--model_data", flow.model,
            "--metrics_data", flow.metrics,
            "--test_data", flow.test.as_input("test_data"),
            "--model_name", params["model_name"],
            "--label", params["label"],
            "--task", settings.task,
            "--primary_metric", settings.metric,
            "--result", flow.registration,
        ],
        inputs=[flow.model, flow.metrics],
        compute_target=compute,
        # on Azure it loads Azure AutoML's model, which needs AutoML's runtime: AutoML's own environment
        runconfig=run_config("train")
        if isinstance(compute, str)
        else workspace_run_config(compute.workspace, AZURE_AUTOML_ENVIRONMENT),
        allow_reuse=False,
    )  # fmt: skip


_AUTOML_HINTS = {
    "iterations": "0 means no cap, the time budget decides; e.g. --set iterations=10",
    "forecast_horizon": "the number of periods to forecast, at least 1, e.g. --set forecast_horizon=14",
    "time_column_name": "forecasting needs a time column: --set time_column=COLUMN",
    "primary_metric": "use one of the names listed, or leave primary_metric empty for the task's default",
    "allowed_models": "comma-separated AutoML model names, e.g. --set allowed_models=LightGBM,RandomForest",
    "blocked_models": "comma-separated AutoML model names, e.g. --set blocked_models=KNN",
}


def _model_list(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def check_run(check: RunCheck) -> None:
    """Before a local run starts: the time column is in the data, and the local AutoML can do what is asked.

    The default time column may be absent (any tabular CSV trains: prep then splits at random); one set
    explicitly, or the one forecasting needs, must be there. An empty time_column asks for a random split.
    """
    import pandas as pd

    from pipelines.local.runtime import automl

    settings = check.settings
    column = settings.time_column
    forecasting = settings.task == "forecasting"
    if forecasting and not column:
        raise UserError("forecasting needs a time column", hint="name it with --set time_column=COLUMN")
    if column and column not in check.columns and (forecasting or "time_column" in check.given):
        raise UserError(
            f"time_column {column!r} is not in {check.data_file.name} (columns: {', '.join(check.columns)})",
            hint="name the time column with --set time_column=COLUMN"
            + ("" if forecasting else ", or --set time_column= for a random 80/20 split"),
        )
    label = check.head[settings.label]
    if settings.task != "classification" and not pd.api.types.is_numeric_dtype(label):
        # text in its first rows: the whole column reads as text, which prep would refuse in the run
        example = f" (e.g. {label.dropna().iloc[0]!r})" if label.notna().any() else ""
        raise UserError(
            f"label column {settings.label!r} is not numeric{example}; "
            f"task {settings.task} needs a numeric label",
            hint="name a numeric label with --set label=COLUMN, or use --set task=classification",
        )
    try:
        automl.check_settings(
            settings.task,
            settings.metric,
            _model_list(settings.allowed_models),
            _model_list(settings.blocked_models),
        )
    except automl.AutoMLSettingsError as exc:
        raise UserError(str(exc)) from None  # it names the values to use


def main(argv: list[str] | None = None) -> int:
    return pipeline_cli(
        prog="python -m pipelines.train",
        doc=__doc__,
        build=build,
        argv=argv,
        check_run=check_run,
        setting_groups=("data", "automl", "model", "azure", "schedule"),
    )


if __name__ == "__main__":
    exit_now(main())
