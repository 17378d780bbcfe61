"""The SDK v2 AutoML and parallel nodes, read into the plan (used by ``v2_reader``)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from pipelines.core.plan import Arg, AutoMLSettings, AutoMLStepPlan, DataRef, ParallelRunStepPlan, ParamRef
from pipelines.core.v2_terms import AUTOML_TASKS, PRIMARY_METRICS, REFERENCE, V2Error
from pipelines.core.v2_terms import data_names as _data_names
from pipelines.core.v2_terms import environment_name as _environment_name
from pipelines.core.v2_terms import template as _template


def read_automl(reader: Any, name: str, node: Any) -> AutoMLStepPlan:
    """A regression, classification or forecasting AutoML node on the local AutoML; ``best_model`` as MLflow."""
    task = str(getattr(node.task_type, "value", node.task_type) or "").lower()
    if task not in AUTOML_TASKS:
        raise V2Error(name, "field task", f"AutoML task {task} is not supported locally",
                      hint="the local AutoML runs regression, classification and forecasting")  # fmt: skip
    metric_enum = str(getattr(node.primary_metric, "value", node.primary_metric) or "")
    metric = PRIMARY_METRICS.get(metric_enum, metric_enum)
    limits = node.limits
    training = node.training
    forecasting = getattr(node, "forecasting_settings", None)
    settings = AutoMLSettings(
        task=task,
        primary_metric=metric,
        label_column_name=node.target_column_name or "",
        experiment_timeout_minutes=getattr(limits, "timeout_minutes", None),
        iterations=getattr(limits, "max_trials", None),
        n_cross_validations=_int_or_none(node.n_cross_validations),
        allowed_models=_names(getattr(training, "allowed_training_algorithms", None)),
        blocked_models=_names(getattr(training, "blocked_training_algorithms", None)),
        enable_early_stopping=bool(
            True
            if getattr(limits, "enable_early_termination", None) is None
            else limits.enable_early_termination
        ),
        enable_ensemble=_ensemble(training),
        time_column_name=getattr(forecasting, "time_column_name", None),
        forecast_horizon=_int_or_none(getattr(forecasting, "forecast_horizon", None)),
        freq=getattr(forecasting, "frequency", None),
        target_lags=getattr(forecasting, "target_lags", None),
    )
    if not settings.label_column_name:
        raise V2Error(name, "field target_column_name", "an AutoML node needs its label column")
    _check_automl(name, settings)
    training_data = _data_ref(reader, name, "training_data", node.training_data)
    inputs = [training_data.name]
    validation = None
    if getattr(node, "validation_data", None) is not None:
        if task == "forecasting":
            raise V2Error(
                name, "field validation_data", "the local AutoML takes no validation data for forecasting"
            )
        validation = _data_ref(reader, name, "validation_data", node.validation_data).name
        inputs.append(validation)
    if getattr(node, "test_data", None) is not None:
        raise V2Error(name, "field test_data", "the local AutoML does not score a test_data input",
                      hint="score the best_model in a command node after it")  # fmt: skip
    for key, item in node.outputs.items():
        if key != "best_model":
            raise V2Error(name, f"output {key}", "the local AutoML writes only best_model")
        reader._output(name, key, None, item._data)
    return AutoMLStepPlan(
        name=name,
        settings=settings,
        training_data=training_data.name,
        model_output=f"{name}.best_model",
        metrics_output=None,
        inputs=inputs,
        outputs=[f"{name}.best_model"],
        allow_reuse=True,
        compute_target=reader._compute(node),
        model_format="mlflow",
        validation_data=validation,
    )


def _check_automl(name: str, settings: AutoMLSettings) -> None:
    from pipelines.local.runtime import automl

    try:
        automl.flaml_metric(settings.primary_metric, settings.task)
    except automl.AutoMLSettingsError as exc:
        raise V2Error(name, "field primary_metric", str(exc)) from None
    try:
        automl.estimator_list(settings.task, settings.allowed_models, settings.blocked_models)
    except automl.AutoMLSettingsError as exc:
        raise V2Error(name, "field training", str(exc)) from None
    if settings.task == "forecasting" and not settings.time_column_name:
        raise V2Error(name, "field forecasting.time_column_name", "forecasting needs the time column")


def _data_ref(reader: Any, name: str, key: str, value: Any) -> DataRef:
    if isinstance(value, str):
        ref = reader._binding(name, key, "mltable", value)
        if not isinstance(ref, DataRef):
            raise V2Error(name, f"field {key}", "expects data, got a value")
        return ref
    if value is None or getattr(value, "path", None) is None:
        raise V2Error(name, f"field {key}", "needs a path or a binding")
    return reader._data_source(name, f"field {key}", f"{name}.{key}", value)


def _names(values: Any) -> list[str]:
    return [str(getattr(v, "value", v)) for v in values or []]


def _ensemble(training: Any) -> bool:
    vote = getattr(training, "enable_vote_ensemble", None)
    stack = getattr(training, "enable_stack_ensemble", None)
    return vote is not False or stack is True  # AutoML's default: voting ensemble on


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):  # "auto"
        return None


def read_parallel(reader: Any, name: str, node: Any) -> ParallelRunStepPlan:
    """A parallel node (``type: parallel`` / ``parallel_run_function``) on the local ParallelRunStep engine."""
    component = reader._component(name, node)
    task = node.task
    if task is None or str(getattr(task, "type", "run_function")) != "run_function":
        raise V2Error(name, "field task", "the local engine runs parallel tasks of type run_function")
    values, outputs = reader._bind(name, node, component)
    batch_input = _input_data(name, node.input_data, values)
    arguments = _arguments(name, task.program_arguments or "", values, outputs)
    append = task.append_row_to
    output_action = "summary_only"
    if append:
        match = re.fullmatch(r"\$\{\{\s*outputs\.([A-Za-z0-9_]+)\s*\}\}", str(append).strip())
        if not match or match.group(1) not in outputs:
            raise V2Error(name, "field task.append_row_to", f"{append} names no output of the node",
                          hint="outputs: " + ", ".join(outputs))  # fmt: skip
        output_action = "append_row"
        written = [outputs[match.group(1)].name]
    else:
        written = [ref.name for ref in outputs.values()][:1]
    if len(outputs) != 1:
        raise V2Error(name, "field outputs", "the local engine runs a parallel node with one output")
    source = reader._code(name, task.code, Path(component.base_path or reader.base))
    if not task.entry_script or not (source / task.entry_script).is_file():
        raise V2Error(name, "field task.entry_script", f"{task.entry_script} is not a file in {source}")

    def setting(field: str) -> Any:  # the node's own value, else its component's (as Azure merges them)
        value = getattr(node, field, None)
        return getattr(component, field, None) if value is None else value

    retry = setting("retry_settings")
    retry = retry if isinstance(retry, dict) else vars(retry) if retry is not None else {}
    options: dict[str, Any] = {
        "mini_batch_size": _mini_batch_size(reader, name, setting("mini_batch_size")),
        "error_threshold": _threshold(setting("error_threshold"), -1),
        "allowed_failed_count": _threshold(setting("mini_batch_error_threshold"), None),
        "allowed_failed_percent": _flag(arguments, "--allowed_failed_percent"),
        "output_action": output_action,
        "append_row_file_name": None,
        "node_count": _int_or_none(getattr(setting("resources"), "instance_count", None)) or 1,
        "process_count_per_node": setting("max_concurrency_per_instance") or 1,
        "run_invocation_timeout": retry.get("timeout") or 60,
        "run_max_try": retry.get("max_retries") or 3,
        "partition_keys": list(setting("partition_keys") or []) or None,
        "environment_variables": {str(k): str(v) for k, v in (node.environment_variables or {}).items()},
    }
    inputs = _data_names(values)
    kind = reader.plan.datasets[batch_input.name].kind if batch_input.name in reader.plan.datasets else None
    return ParallelRunStepPlan(
        name=name,
        source_directory=source,
        entry_script=task.entry_script,
        arguments=arguments,
        inputs=inputs,
        input_kinds={batch_input.name: _batch_kind(reader, batch_input, values, kind)},
        outputs=written,
        options=options,
        allow_reuse=bool(getattr(component, "is_deterministic", True) is not False),
        compute_target=reader._compute(node),
        environment=_environment_name(getattr(task, "environment", None)),
    )


def _mini_batch_size(reader: Any, name: str, value: Any) -> str | ParamRef | None:
    """The node's mini_batch_size: text, or a ``${{parent.inputs.x}}`` binding (resolved when the run starts)."""
    if value is None:
        return None
    text = str(value)
    if REFERENCE.search(text):
        return reader._binding(name, "mini_batch_size", "string", text)
    return text


def _input_data(name: str, input_data: Any, values: dict[str, Any]) -> DataRef:
    match = REFERENCE.fullmatch(str(input_data or "").strip())
    key = match.group(1).removeprefix("inputs.") if match else None
    if key is None or not isinstance(values.get(key), DataRef):
        raise V2Error(name, "field input_data", f"{input_data!r} names no data input of the node",
                      hint="input_data: ${{inputs.NAME}} with NAME a data input")  # fmt: skip
    return values[key]


def _batch_kind(reader: Any, ref: DataRef, values: dict[str, Any], kind: str | None) -> str:
    """Tabular (rows) for an mltable, file (paths) for a folder; a step output's kind is its declared type."""
    source = reader.plan.datasets.get(ref.name)
    if source is not None:
        return "tabular" if source.asset_type == "mltable" else "file"
    node, _, out = ref.name.partition(".")
    producer = reader.nodes.get(node)
    spec = (getattr(getattr(producer, "component", None), "outputs", None) or {}).get(out)
    given = producer.outputs[out]._data if producer is not None and out in producer.outputs else None
    declared = getattr(given, "type", None) or getattr(spec, "type", None)
    return "tabular" if declared == "mltable" else "file"


def _arguments(name: str, text: str, values: dict[str, Any], outputs: dict[str, DataRef]) -> list[Arg]:
    """program_arguments as the entry script's argv: whitespace-split, each reference a whole token."""
    parts = _template(name, "task.program_arguments", text, values, outputs)
    refs: dict[str, Any] = {}
    joined = ""
    for part in parts:
        if isinstance(part, str):
            joined += part
        else:
            marker = f"\x00{len(refs)}\x00"
            refs[marker] = part
            joined += marker
    out: list[Arg] = []
    for token in shlex.split(joined):
        if token in refs:
            out.append(refs[token])
        elif "\x00" in token:
            raise V2Error(name, "field task.program_arguments", f"{token!r} mixes text and a reference",
                          hint="give each ${{inputs.x}} as an argument of its own")  # fmt: skip
        else:
            out.append(token)
    return out


def _flag(arguments: list[Arg], flag: str) -> float | None:
    """A ParallelRunStep driver setting given in program_arguments (``--allowed_failed_percent 30``)."""
    for i, arg in enumerate(arguments[:-1]):
        if arg == flag and isinstance(arguments[i + 1], str | ParamRef):
            value = arguments[i + 1]
            try:
                return float(value) if isinstance(value, str) else None
            except ValueError:
                return None
    return None


def _threshold(value: Any, default: int | None) -> int | None:
    if value is None:
        return default
    number = int(value)
    return None if (default is None and number < 0) else number
