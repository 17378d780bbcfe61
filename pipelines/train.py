"""The training pipeline: prep -> AutoML -> register, built from Azure ML SDK v1 classes.

python -m pipelines.train run [--set NAME=VALUE]... [--data NAME|PATH|URL] [--json]
python -m pipelines.train show [--json]
python -m pipelines.train publish [--target local|azure] [--json]
python -m pipelines.train models [--json]
"""

from __future__ import annotations

import math
from typing import Any

from pipelines.cli import PipelineDefinition, exit_now, pipeline_cli
from pipelines.definitions import STEPS_DIR, dataset_input, recurrence, run_config
from pipelines.settings import Settings

NAME = "amlops-train"

# AutoML model names (as AutoMLConfig's allowed_models/blocked_models take them)
AUTOML_ALLOWED_NAMES = {
    "regression": ("LightGBM", "XGBoostRegressor", "RandomForest", "ExtremeRandomTrees", "ElasticNet"),
    "classification": (
        "LightGBM",
        "XGBoostClassifier",
        "RandomForest",
        "ExtremeRandomTrees",
        "LogisticRegression",
    ),
    "forecasting": ("LightGBM", "XGBoostRegressor", "RandomForest", "ExtremeRandomTrees", "Prophet", "Arima"),
}


def build(settings: Settings, data: str | None = None) -> PipelineDefinition:
    """The training pipeline's SDK objects: three steps, their parameters, the default schedule."""
    from azureml.automl.core.forecasting_parameters import ForecastingParameters
    from azureml.data import OutputFileDatasetConfig
    from azureml.pipeline.core import PipelineData, PipelineParameter, TrainingOutput
    from azureml.pipeline.steps import AutoMLStep, PythonScriptStep
    from azureml.train.automl import AutoMLConfig

    params = {
        "label": PipelineParameter("label", default_value=settings.label),
        "time_column": PipelineParameter("time_column", default_value=settings.time_column),
        "cutoff_date": PipelineParameter("cutoff_date", default_value=settings.cutoff_date),
        "model_name": PipelineParameter("model_name", default_value=settings.model_name),
    }
    raw_data = dataset_input("raw_data", data or settings.dataset, "training_dataset")
    train_data = OutputFileDatasetConfig(name="train_data")
    test_data = OutputFileDatasetConfig(name="test_data")
    model_data = PipelineData(
        "model_data", pipeline_output_name="best_model", training_output=TrainingOutput(type="Model")
    )
    metrics_data = PipelineData(
        "metrics_data", pipeline_output_name="automl_metrics", training_output=TrainingOutput(type="Metrics")
    )
    registration = OutputFileDatasetConfig(name="registration")

    prep = PythonScriptStep(
        name="prep",
        script_name="prep.py",
        source_directory=str(STEPS_DIR),
        arguments=[
            "--raw_data", raw_data,
            "--label", params["label"],
            "--time_column", params["time_column"],
            "--cutoff_date", params["cutoff_date"],
            "--task", settings.task,
            "--train_data", train_data,
            "--test_data", test_data,
        ],
        compute_target=settings.compute_name,
        runconfig=run_config("train"),
        allow_reuse=True,
    )  # fmt: skip

    automl_kwargs: dict[str, Any] = {}
    if settings.task == "forecasting":
        automl_kwargs["forecasting_parameters"] = ForecastingParameters(
            time_column_name=settings.time_column, forecast_horizon=settings.forecast_horizon, freq="D"
        )
    if settings.allowed_models:
        automl_kwargs["allowed_models"] = _model_list(settings.allowed_models)
    if settings.blocked_models:
        automl_kwargs["blocked_models"] = _model_list(settings.blocked_models)
    if settings.iterations > 0:
        automl_kwargs["iterations"] = settings.iterations
    automl_config = AutoMLConfig(
        task=settings.task,
        primary_metric=settings.metric,
        training_data=train_data.read_delimited_files(),
        label_column_name=settings.label,
        experiment_timeout_minutes=max(1, math.ceil(settings.timeout_minutes)),
        n_cross_validations=settings.n_cross_validations,
        compute_target=settings.compute_name,
        enable_early_stopping=True,
        featurization="auto",
        **automl_kwargs,
    )
    automl = AutoMLStep(
        name="automl", automl_config=automl_config, outputs=[model_data, metrics_data], allow_reuse=False
    )

    register = PythonScriptStep(
        name="register",
        script_name="register.py",
        source_directory=str(STEPS_DIR),
        arguments=[
            "--model_data", model_data,
            "--metrics_data", metrics_data,
            "--test_data", test_data.as_input("test_data"),
            "--model_name", params["model_name"],
            "--label", params["label"],
            "--task", settings.task,
            "--primary_metric", settings.metric,
            "--result", registration,
        ],
        inputs=[model_data, metrics_data],
        compute_target=settings.compute_name,
        runconfig=run_config("train"),
        allow_reuse=False,
    )  # fmt: skip
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
    )


def _model_list(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def main(argv: list[str] | None = None) -> int:
    return pipeline_cli(
        prog="python -m pipelines.train",
        doc=__doc__,
        build=build,
        argv=argv,
    )


if __name__ == "__main__":
    exit_now(main())
