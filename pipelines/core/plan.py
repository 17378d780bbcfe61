"""The plain, engine-neutral plan the readers make of a pipeline (no SDK imports here).

``v1_reader`` reads it out of SDK v1 step objects, ``v2_reader`` out of SDK v2 pipeline job YAML. The
engine, and any process that only runs a plan, imports this module, not a reader, so it does not pay
for importing an Azure ML SDK.
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
    asset_type: str = ""  # an SDK v2 input's type: uri_file, uri_folder, mltable, mlflow_model, custom_model


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
class CommandStepPlan:
    """An SDK v2 command node: a command line template run in the node's code folder.

    ``command`` is the template cut at its references: text, ParamRef and DataRef, joined without
    separators into one command line (as Azure substitutes ``${{inputs.x}}``/``${{outputs.y}}``).
    """

    name: str
    source_directory: Path
    command: list[Arg]
    inputs: list[str]
    outputs: list[str]
    allow_reuse: bool
    compute_target: str | None
    environment: str | None
    variables: dict[str, Arg] = field(default_factory=dict)
    kind: str = "command"


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
    metrics_output: str | None  # None: an SDK v2 AutoML node, which has no metrics output
    inputs: list[str]
    outputs: list[str]
    allow_reuse: bool
    compute_target: str | None
    kind: str = "automl"
    model_format: str = "pickle"  # "pickle" (v1 TrainingOutput Model) or "mlflow" (v2 best_model)
    validation_data: str | None = None


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


StepPlan = ScriptStepPlan | CommandStepPlan | AutoMLStepPlan | ParallelRunStepPlan


@dataclass
class Plan:
    """Steps in execution order, the pipeline parameters with defaults, and the dataset inputs.

    ``outputs`` names the pipeline's own outputs (SDK v2 ``${{parent.outputs.x}}``): output name -> the
    step output it is.
    """

    steps: list[StepPlan]
    parameters: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, DatasetSource] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


class PlanError(ValueError):
    """The steps cannot be turned into a runnable plan (e.g. a cycle or a missing producer)."""


def order_steps(plan: Plan, after: dict[int, set[int]] | None = None) -> list[StepPlan]:
    """The steps in an order that runs each after the steps producing its inputs and those in ``after``
    (indexes into ``plan.steps``); among the steps that may run next, the first listed runs first."""
    producer_of: dict[str, int] = {}
    for i, step in enumerate(plan.steps):
        for out in step.outputs:
            if out in producer_of:
                first = plan.steps[producer_of[out]].name
                raise PlanError(
                    f"steps {first!r} and {step.name!r} both write the output {out!r}; to read it in {step.name!r},"
                    f" pass it as {out}.as_input()"
                )
            producer_of[out] = i
    needs = {
        i: {producer_of[name] for name in step.inputs if name in producer_of} | (after or {}).get(i, set())
        for i, step in enumerate(plan.steps)
    }
    remaining = list(range(len(plan.steps)))
    done: set[int] = set()
    picked: list[int] = []
    while remaining:
        ready = next((i for i in remaining if needs[i] <= done), None)
        if ready is None:
            raise PlanError(
                "the steps' dependencies (data and run_after) form a cycle: "
                + ", ".join(plan.steps[i].name for i in remaining)
            )
        done.add(ready)
        picked.append(ready)
        remaining.remove(ready)
    ordered = [plan.steps[i] for i in picked]
    missing = [i for s in ordered for i in s.inputs if i not in producer_of and i not in plan.datasets]
    if missing:
        raise PlanError("no step produces " + ", ".join(sorted(set(missing))))
    return ordered
