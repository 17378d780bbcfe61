"""The plain, engine-neutral plan the adapter reads out of SDK step objects (no SDK imports here).

The engine, and any process that only runs a plan, imports this module, not the adapter, so it does
not pay for importing the Azure ML SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ParamRef:
    """A PipelineParameter used in a step's arguments."""

    name: str


@dataclass(frozen=True)
class DataRef:
    """A named piece of data: a pipeline dataset input or a step output folder."""

    name: str


Arg = str | ParamRef | DataRef


@dataclass(frozen=True)
class DatasetSource:
    """Where a pipeline-level dataset input comes from (the SDK Dataset's paths)."""

    name: str
    paths: tuple[str, ...]
    mode: str
    kind: str  # "file" or "tabular"


@dataclass
class ScriptStepPlan:
    name: str
    source_directory: Path
    script_name: str
    arguments: list[Arg]
    inputs: list[str]
    outputs: list[str]
    allow_reuse: bool
    compute_target: str | None
    environment: str | None
    kind: str = "script"
    # environment variables as Azure sets them: the runconfig's, params= as AML_PARAMETER_<name>, and
    # AZUREML_DATAREFERENCE_<name> for PipelineData (values may be ParamRef / DataRef)
    variables: dict[str, Arg] = field(default_factory=dict)
    # outputs the script writes at a path of its own, uploaded from there after it ends (PipelineData's
    # output_path_on_compute in upload mode, OutputFileDatasetConfig's source): output name -> that path
    upload_sources: dict[str, str] = field(default_factory=dict)


@dataclass
class AutoMLSettings:
    task: str
    primary_metric: str
    label_column_name: str
    experiment_timeout_minutes: float | None
    iterations: int | None
    n_cross_validations: int | None
    allowed_models: list[str]
    blocked_models: list[str]
    enable_early_stopping: bool
    enable_ensemble: bool = True  # enable_voting_ensemble or enable_stack_ensemble
    time_column_name: str | None = None
    forecast_horizon: int | None = None
    freq: str | None = None
    target_lags: Any = None
    featurization: str = (
        "auto"  # AutoMLConfig's featurization: auto, off (a FeaturizationConfig reads as custom)
    )


@dataclass
class AutoMLStepPlan:
    name: str
    settings: AutoMLSettings
    training_data: str
    model_output: str
    metrics_output: str
    inputs: list[str]
    outputs: list[str]
    allow_reuse: bool
    compute_target: str | None
    kind: str = "automl"


@dataclass
class ParallelRunStepPlan:
    name: str
    source_directory: Path
    entry_script: str
    arguments: list[Arg]
    inputs: list[str]
    input_kinds: dict[str, str]
    outputs: list[str]
    options: dict[str, Any]
    allow_reuse: bool
    compute_target: str | None
    environment: str | None
    kind: str = "parallel_run"


StepPlan = ScriptStepPlan | AutoMLStepPlan | ParallelRunStepPlan


@dataclass
class Plan:
    """Steps in execution order, the pipeline parameters with defaults, and the dataset inputs."""

    steps: list[StepPlan]
    parameters: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, DatasetSource] = field(default_factory=dict)


class PlanError(ValueError):
    """The steps cannot be turned into a runnable plan (e.g. a cycle or a missing producer)."""
