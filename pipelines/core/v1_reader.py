"""The one adapter from Azure ML SDK v1 step objects to a plain, engine-neutral plan.

This is the only module that reads the SDK objects' private configuration. It is pinned to the SDK
versions in pyproject.toml (azureml-pipeline-core/-steps 1.62.0, azureml-train-automl-client 1.62.0)
and tested against them in tests/core/test_v1_reader.py. Nothing here constructs a ``Workspace`` or a
``Pipeline`` (both call the service). It also points the SDK's own data-access log into the workspace
(``keep_sdk_logs_in_workspace``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from azureml.data.dataset_consumption_config import DatasetConsumptionConfig
from azureml.data.output_dataset_config import (
    OutputDatasetConfig,
    OutputFileDatasetConfig,
    OutputTabularDatasetConfig,
)
from azureml.pipeline.core import PipelineData, PipelineParameter

from pipelines.core.plan import (  # noqa: F401 - the plan types are part of this module's interface
    Arg,
    AutoMLSettings,
    AutoMLStepPlan,
    DataRef,
    DatasetSource,
    ParallelRunStepPlan,
    ParamRef,
    Plan,
    PlanError,
    ScriptStepPlan,
    StepPlan,
)
from pipelines.core.plan import order_steps as _order

ADAPTED_SDK_VERSION = "1.62.0"


def read_steps(steps: Any) -> Plan:
    """Turn SDK step objects into a Plan, ordered by their data dependencies and ``run_after``.

    ``steps`` is what ``Pipeline(workspace, steps)`` takes: a list of steps (nested lists run in parallel)
    or a ``StepSequence`` (each element after the one before it). Steps without any dependency keep the
    order they are listed in.
    """
    from azureml.pipeline.steps import AutoMLStep, ParallelRunStep, PythonScriptStep

    sdk_steps, after_pairs = _flatten(steps)
    plan = Plan(steps=[])
    for step in sdk_steps:
        if isinstance(step, ParallelRunStep):
            plan.steps.append(_read_parallel_run_step(step, plan))
        elif isinstance(step, AutoMLStep):
            plan.steps.append(_read_automl_step(step, plan))
        elif isinstance(step, PythonScriptStep):
            plan.steps.append(_read_script_step(step, plan))
        else:
            raise PlanError(
                f"step {getattr(step, 'name', step)!r}: {type(step).__name__} is not supported locally"
            )
    index = {id(step): i for i, step in enumerate(sdk_steps)}
    after: dict[int, set[int]] = {}
    for step in sdk_steps:
        for before in getattr(step, "run_after_steps", None) or []:
            after_pairs.append((before, step))
    for before, later in after_pairs:
        if id(before) not in index:
            raise PlanError(
                f"step {later.name!r} runs after {getattr(before, 'name', before)!r}, which is not in the pipeline's"
                " steps"
            )
        after.setdefault(index[id(later)], set()).add(index[id(before)])
    plan.steps = _order(plan, after)
    return plan


def _flatten(steps: Any) -> tuple[list[Any], list[tuple[Any, Any]]]:
    """The steps of a list / StepSequence (nested too), and the (before, after) pairs a StepSequence makes."""
    from azureml.pipeline.core import StepSequence

    pairs: list[tuple[Any, Any]] = []

    def walk(node: Any) -> list[Any]:
        if isinstance(node, StepSequence):
            groups = [walk(element) for element in node._steps]
            for earlier, later in zip(groups, groups[1:], strict=False):
                pairs.extend((a, b) for a in earlier for b in later)
            return [step for group in groups for step in group]
        if isinstance(node, list | tuple):
            return [step for element in node for step in walk(element)]
        return [node]

    found = walk(steps)
    unique = list({id(step): step for step in found}.values())
    return unique, pairs


def _read_script_step(step: Any, plan: Plan) -> ScriptStepPlan:
    if not step._source_directory:
        raise PlanError(
            f"step {step.name!r} has no source_directory; set it to the folder holding {step._script_name}"
        )
    inputs, outputs = _io_names(step, plan)
    return ScriptStepPlan(
        name=step.name,
        source_directory=Path(step._source_directory).resolve(),
        script_name=step._script_name,
        arguments=_arguments(step, plan),
        inputs=inputs,
        outputs=outputs,
        allow_reuse=bool(step._allow_reuse),
        compute_target=_compute_name(step._compute_target),
        environment=_environment_name(step._runconfig),
        variables=_script_variables(step, plan),
        upload_sources=_upload_sources(step),
    )


def _upload_sources(step: Any) -> dict[str, str]:
    """Outputs uploaded from a path the script writes to, rather than the path it is given."""
    sources = {}
    for item in step._outputs:
        data = getattr(item, "bind_object", None) or item
        if isinstance(data, PipelineData) and data._output_mode == "upload" and data._output_path_on_compute:
            sources[data.name] = str(data._output_path_on_compute)
        elif isinstance(data, OutputFileDatasetConfig) and data.source:
            sources[data.name] = str(data.source)
    return sources


def _script_variables(step: Any, plan: Plan) -> dict[str, Arg]:
    """The environment variables Azure gives a PythonScriptStep's process."""
    from azureml.pipeline.core.graph import ParamDef

    variables: dict[str, Arg] = {}
    runconfig = getattr(step, "_runconfig", None)
    for name, value in (getattr(runconfig, "environment_variables", None) or {}).items():
        variables[str(name)] = str(value)
    for name, value in (getattr(step, "_params", None) or {}).items():
        if isinstance(value, PipelineParameter):
            plan.parameters.setdefault(value.name, value.default_value)
            variables[ParamDef._param_name_to_env_variable(name)] = ParamRef(value.name)
        else:
            variables[ParamDef._param_name_to_env_variable(name)] = str(value)
    for item in list(step._inputs) + list(step._outputs):
        data = getattr(item, "bind_object", None) or item
        if isinstance(data, PipelineData):
            variables[data.get_env_variable_name().lstrip("$")] = DataRef(data.name)
    return variables


def _read_automl_step(step: Any, plan: Plan) -> AutoMLStepPlan:
    inputs, outputs = _io_names(step, plan)
    user = step._automl_config.user_settings
    training = user.get("training_data")
    if not isinstance(training, DatasetConsumptionConfig | OutputDatasetConfig):
        raise PlanError(f"step {step.name!r}: training_data must be a dataset or a step output")
    training_name = _data_name(training, plan)
    if training_name not in inputs:
        inputs.append(training_name)
    model_out = metrics_out = None
    for out in step._outputs:
        if isinstance(out, PipelineData) and out._training_output is not None:
            if out._training_output.type == "Model":
                model_out = out.name
            elif out._training_output.type == "Metrics":
                metrics_out = out.name
    if model_out is None or metrics_out is None:
        raise PlanError(f"step {step.name!r}: needs TrainingOutput outputs of type Model and Metrics")
    fc = user.get("forecasting_parameters")
    settings = AutoMLSettings(
        task=user.get("task_type") or "regression",
        primary_metric=user.get("primary_metric") or "",
        label_column_name=user.get("label_column_name") or "",
        experiment_timeout_minutes=user.get("experiment_timeout_minutes"),
        iterations=user.get("iterations"),
        n_cross_validations=user.get("n_cross_validations"),
        allowed_models=list(user.get("allowed_models") or []),
        blocked_models=list(user.get("blocked_models") or []),
        enable_early_stopping=bool(user.get("enable_early_stopping", True)),
        enable_ensemble=bool(user.get("enable_voting_ensemble", True) or user.get("enable_stack_ensemble")),
        time_column_name=getattr(fc, "time_column_name", None) if fc is not None else None,
        forecast_horizon=getattr(fc, "forecast_horizon", None) if fc is not None else None,
        freq=getattr(fc, "freq", None) if fc is not None else None,
        target_lags=getattr(fc, "target_lags", None) if fc is not None else None,
        featurization=_featurization(user.get("featurization")),
    )
    if user.get("is_timeseries") or settings.time_column_name:
        settings.task = "forecasting"
    return AutoMLStepPlan(
        name=step.name,
        settings=settings,
        training_data=training_name,
        model_output=model_out,
        metrics_output=metrics_out,
        inputs=inputs,
        outputs=outputs,
        allow_reuse=bool(step._allow_reuse),
        compute_target=_compute_name(user.get("compute_target")),
    )


def _featurization(value: Any) -> str:
    """AutoMLConfig's featurization as a mode: ``auto``, ``off``, or ``custom`` for a FeaturizationConfig."""
    if value is None or isinstance(value, str):
        return (value or "auto").lower()
    return "custom"


def _read_parallel_run_step(step: Any, plan: Plan) -> ParallelRunStepPlan:
    inputs, outputs = _io_names(step, plan)
    config = step._parallel_run_config
    # side inputs are among the step's inputs (so they are bound and ordered) but are not cut into mini-batches:
    # the entry script reads them whole, from the paths in its arguments
    side = {_data_name(item, plan) for item in step._side_inputs or []}
    kinds = {}
    for item in step._inputs:
        name = _data_name(item, plan)
        if name not in side:
            kinds[name] = _input_kind(item)
    options: dict[str, Any] = {
        "mini_batch_size": config.mini_batch_size,
        "error_threshold": config.error_threshold,
        "allowed_failed_count": config.allowed_failed_count,
        "allowed_failed_percent": config.allowed_failed_percent,
        "output_action": config.output_action,
        "append_row_file_name": config.append_row_file_name,
        "node_count": config.node_count,
        "process_count_per_node": config.process_count_per_node,
        "run_invocation_timeout": config.run_invocation_timeout,
        "run_max_try": config.run_max_try,
        "partition_keys": config.partition_keys,
        "environment_variables": dict(config.environment_variables or {}),
    }
    for key, value in options.items():  # ParallelRunConfig options may be PipelineParameters
        if isinstance(value, PipelineParameter):
            plan.parameters.setdefault(value.name, value.default_value)
            options[key] = ParamRef(value.name)
    return ParallelRunStepPlan(
        name=step.name,
        source_directory=Path(config.source_directory).resolve(),
        entry_script=config.entry_script,
        arguments=_arguments(step, plan, raw=step._arguments),
        inputs=inputs,
        input_kinds=kinds,
        outputs=outputs,
        options=options,
        allow_reuse=bool(step._allow_reuse),
        compute_target=_compute_name(config.compute_target),
        environment=getattr(config.environment, "name", None),
    )


def _io_names(step: Any, plan: Plan) -> tuple[list[str], list[str]]:
    inputs = [_data_name(item, plan) for item in step._inputs]
    outputs = [_data_name(item, plan) for item in step._outputs]
    return list(dict.fromkeys(inputs)), list(dict.fromkeys(outputs))


def _data_name(item: Any, plan: Plan) -> str:
    """The plan's name for a data object: datasets by consumption name, outputs by their own name."""
    if isinstance(item, DatasetConsumptionConfig):
        source = item.dataset
        if isinstance(source, PipelineParameter):
            _add_dataset(plan, item.name, source.default_value, item.mode, param=source.name)
            return item.name
        if isinstance(source, OutputDatasetConfig):
            return _data_name(source, plan)
        _add_dataset(plan, item.name, source, item.mode)
        return item.name
    if isinstance(item, OutputTabularDatasetConfig):
        return item._output_file_dataset_config.name
    if isinstance(item, OutputFileDatasetConfig):
        return item.name
    if isinstance(item, PipelineData):
        return item.name
    # PipelineData.as_input(...) / as_download() give an InputPortBinding-like wrapper
    bound = getattr(item, "bind_object", None) or getattr(item, "_bind_object", None)
    if bound is not None:
        return _data_name(bound, plan)
    raise PlanError(
        f"a step input or output of type {type(item).__name__} is not supported locally (DataPath, DataReference and"
        " PipelineData.as_dataset() are not): use a Dataset input or a PipelineData / OutputFileDatasetConfig"
    )


def _add_dataset(plan: Plan, name: str, dataset: Any, mode: str, param: str | None = None) -> None:
    from azureml.data.file_dataset import FileDataset

    definition = str(getattr(dataset, "_definition", "") or "")
    paths = tuple(re.findall(r'(?:file|pattern|folder):\s*"?([^"\n]+)"?', definition))
    kind = "file" if isinstance(dataset, FileDataset) else "tabular"
    plan.datasets[name] = DatasetSource(name=name, paths=paths, mode=mode or "direct", kind=kind)
    if param is not None:
        plan.parameters[param] = f"dataset:{name}"


def _input_kind(item: Any) -> str:
    from azureml.data.file_dataset import FileDataset

    if isinstance(item, DatasetConsumptionConfig):
        source = item.dataset
        if isinstance(source, PipelineParameter):
            source = source.default_value
        if isinstance(source, OutputTabularDatasetConfig):
            return "tabular"
        return "file" if isinstance(source, FileDataset | OutputFileDatasetConfig) else "tabular"
    return "file"


def _arguments(step: Any, plan: Plan, raw: list[Any] | None = None) -> list[Arg]:
    by_name = {}
    for item in list(step._inputs) + list(step._outputs):
        if isinstance(item, DatasetConsumptionConfig):
            by_name[f"DatasetConsumptionConfig:{item.name}"] = DataRef(_data_name(item, plan))
        elif isinstance(item, OutputFileDatasetConfig):
            by_name[f"DatasetOutputConfig:{item.name}"] = DataRef(item.name)
    out: list[Arg] = []
    for arg in step._arguments if raw is None else raw:
        if isinstance(arg, PipelineParameter):
            plan.parameters.setdefault(arg.name, arg.default_value)
            out.append(ParamRef(arg.name))
        elif isinstance(arg, PipelineData):
            out.append(DataRef(arg.name))
        elif isinstance(arg, DatasetConsumptionConfig | OutputDatasetConfig):
            out.append(DataRef(_data_name(arg, plan)))
        elif isinstance(arg, str) and arg in by_name:
            out.append(by_name[arg])
        elif getattr(arg, "bind_object", None) is not None:  # PipelineData.as_input() / as_download() / ...
            out.append(DataRef(_data_name(arg, plan)))
        else:
            out.append(str(arg))
    return out


def _compute_name(target: Any) -> str | None:
    if target is None:
        return None
    if isinstance(target, str):
        return target
    if isinstance(target, tuple):
        return str(target[0])
    return getattr(target, "name", str(target))


def _environment_name(runconfig: Any) -> str | None:
    env = getattr(runconfig, "environment", None)
    return getattr(env, "name", None)


def keep_sdk_logs_in_workspace(home: Path) -> Path:
    """Have azureml-dataprep write its own log (``rslex.log.*``) in ``home/logs/azureml-dataprep/``; returns it.

    The SDK picks ``<system temp>/azureml-logs/dataprep`` when it is imported and starts appending there when
    the first Dataset of a process is built. Called before that, nothing a run does is logged under the temp
    folder (the import itself still creates that folder, empty)."""
    from azureml.dataprep.api import _loggerfactory, _rslex_executor

    folder = Path(home) / "logs" / "azureml-dataprep"
    folder.mkdir(parents=True, exist_ok=True)
    _loggerfactory.log_directory = _rslex_executor.log_directory = str(folder)
    return folder
