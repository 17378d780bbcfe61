"""The v2 pipeline nodes of the plan's steps: command and parallel components in their own files, AutoML nodes."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.plan import AutoMLStepPlan, DataRef, ParallelRunStepPlan, ParamRef, Plan, ScriptStepPlan
from pipelines.v2.documents import (
    AUTOML_TASKS,
    BASE_IMAGE,
    MLTABLE_CSV,
    PRS_FLAGS,
    PRS_INDEXED_FLAG,
    SCHEMA,
    Context,
    Translation,
    UnsupportedConstruct,
    component_name,
    ident,
    literal_input,
)


@dataclass
class _Command:
    """A command line being built: its text parts and the component inputs/outputs it binds."""

    parts: list[str] = field(default_factory=list)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    bindings: dict[str, str] = field(default_factory=dict)  # node input -> ${{parent...}}


def binding(name: str, plan: Plan, producers: dict[str, str]) -> str:
    """How a node reaches a piece of data or parameter: a pipeline input or another node's output."""
    if name in producers:
        producer = next(s for s in plan.steps if s.name == producers[name])
        output = (
            "best_model" if isinstance(producer, AutoMLStepPlan) and name == producer.model_output else name
        )
        return f"${{{{parent.jobs.{ident(producers[name])}.outputs.{ident(output)}}}}}"
    wrapping = {
        v.removeprefix("dataset:"): k
        for k, v in plan.parameters.items()
        if isinstance(v, str) and v.startswith("dataset:")
    }
    return f"${{{{parent.inputs.{ident(wrapping.get(name, name))}}}}}"


def _arguments(step: Any, args: list[Any], plan: Plan, types: dict[str, str], producers: dict[str, str],
               dropped: set[str], out: Translation) -> _Command:  # fmt: skip
    """``args`` as a v2 command line: literals quoted, parameters and data as ``${{inputs.x}}``/``${{outputs.y}}``."""
    cmd = _Command()
    for i, arg in enumerate(args):
        if isinstance(arg, ParamRef):
            key = ident(arg.name)
            cmd.parts.append(f"${{{{inputs.{key}}}}}")
            cmd.inputs[key] = {"type": literal_input(plan.parameters.get(arg.name))["type"]}
            cmd.bindings[key] = f"${{{{parent.inputs.{key}}}}}"
        elif isinstance(arg, DataRef) and arg.name in dropped:
            if cmd.parts and str(args[i - 1]).startswith("-"):
                cmd.parts.pop()
            out.differences.append(
                f"step {step.name}: {arg.name} (AutoML's Metrics TrainingOutput) has no v2 output; its argument is"
                " left out (the AutoML job's metrics are in its run)"
            )
        elif isinstance(arg, DataRef) and arg.name in step.outputs:
            cmd.parts.append(f"${{{{outputs.{ident(arg.name)}}}}}")
            cmd.outputs[ident(arg.name)] = {"type": types[arg.name]}
        elif isinstance(arg, DataRef):
            cmd.parts.append(f"${{{{inputs.{ident(arg.name)}}}}}")
            cmd.inputs[ident(arg.name)] = {"type": types[arg.name]}
            cmd.bindings[ident(arg.name)] = binding(arg.name, plan, producers)
        else:
            cmd.parts.append(shlex.quote(str(arg)))
    for name in step.inputs:
        if ident(name) not in cmd.inputs and name not in dropped:
            cmd.inputs[ident(name)] = {"type": types[name]}
            cmd.bindings[ident(name)] = binding(name, plan, producers)
            if name in getattr(step, "input_kinds", {}):
                continue  # a parallel job's mini-batched input: its input_data
            out.differences.append(
                f"step {step.name}: input {name} is not in its arguments; v2 sets no AZUREML_DATAREFERENCE_{name}"
                f" variable, pass ${{{{inputs.{name}}}}} in the command to use it"
            )
    for name in step.outputs:
        if ident(name) not in cmd.outputs and name not in dropped:
            cmd.outputs[ident(name)] = {"type": types[name]}
    return cmd


def _environment(name: str | None, ctx: Context, out: Translation, where: str) -> Any:
    """An inline environment from ``environments/<name>.yml`` (amlops-<name>), else a workspace reference."""
    short = (name or "").removeprefix("amlops-")
    spec = ctx.environments_dir / f"{short}.yml" if ctx.environments_dir and short else None
    if spec is not None and spec.is_file():
        out.copies[f"environments/{short}.yml"] = spec
        document = {
            "$schema": SCHEMA.format("environment"),
            "name": name,
            "image": BASE_IMAGE,
            "conda_file": f"{short}.yml",
        }
        out.files[f"environments/{name}.environment.yml"] = document
        return {"image": BASE_IMAGE, "conda_file": f"../environments/{short}.yml"}
    if not name:
        raise UnsupportedConstruct(
            f"{where} has no environment: give its runconfig (or ParallelRunConfig) an Environment with a name"
        )
    out.differences.append(
        f"{where}: environment {name} is referenced as azureml:{name}@latest; register it first"
    )
    return f"azureml:{name}@latest"


def _code_path(source: Path, ctx: Context) -> str:
    """The step's source folder relative to the components/ folder in the output folder."""
    import os

    return os.path.relpath(source, ctx.out_dir / "components")


def _node_compute(step: Any, ctx: Context) -> dict[str, Any]:
    if step.compute_target and step.compute_target != ctx.default_compute:
        return {"compute": f"azureml:{step.compute_target}"}
    return {}


def script_node(step: ScriptStepPlan, plan: Plan, types: dict[str, str], producers: dict[str, str],
                 dropped: set[str], ctx: Context, out: Translation) -> dict[str, Any]:  # fmt: skip
    """PythonScriptStep -> a command component in its own file and the node using it."""
    cmd = _arguments(step, step.arguments, plan, types, producers, dropped, out)
    models = [n for n in step.inputs if types.get(n) == "mlflow_model" and n in producers]
    if models:
        out.differences.append(
            f"step {step.name}: reads AutoML's MLflow model ({', '.join(models)}); on Azure that model's own"
            f" environment lists the AutoML runtime, which {step.environment or 'its environment'} lacks: give the step"
            " an environment with the same runtime pins to load it"
        )
    variables, prefix = {}, []
    used = {a.name for a in step.arguments if isinstance(a, ParamRef)}
    for key, value in step.variables.items():
        if isinstance(value, str):
            variables[key] = value
        elif (
            isinstance(value, ParamRef) and value.name not in used and not _is_dataset(plan, value.name)
        ):  # params= the script reads from its environment
            name = ident(value.name)
            prefix.append(f"{key}=${{{{inputs.{name}}}}}")
            cmd.inputs[name] = {"type": literal_input(plan.parameters.get(value.name))["type"]}
            cmd.bindings[name] = f"${{{{parent.inputs.{name}}}}}"
    if any(
        isinstance(v, DataRef) or (isinstance(v, ParamRef) and v.name in used)
        for v in step.variables.values()
    ):
        out.differences.append(
            f"step {step.name}: v2 sets no AML_PARAMETER_*/AZUREML_DATAREFERENCE_* variables for what its arguments"
            " already pass"
        )
    for name, source in step.upload_sources.items():
        cmd.parts += [
            "&&",
            "cp",
            "-r",
            shlex.quote(source.rstrip("/") + "/."),
            f"${{{{outputs.{ident(name)}}}}}",
        ]
        out.differences.append(
            f"step {step.name}: output {name} is copied from {source} by the command (v1 uploaded it)"
        )
    for name, spec in cmd.outputs.items():
        if spec["type"] == "mltable":  # AutoML reads it: the command writes its MLTable file
            cmd.parts += ["&&", "python", "-c", shlex.quote("import sys; open(sys.argv[1] + '/MLTable', 'w').write(sys.argv[2])"),
                          f"${{{{outputs.{name}}}}}", shlex.quote(MLTABLE_CSV)]  # fmt: skip
            out.mapped.append(
                f"step {step.name}: output {name} -> mltable (the command writes its MLTable file)"
            )
    command = " ".join([*prefix, "python", shlex.quote(step.script_name), *cmd.parts])
    component = {
        "$schema": SCHEMA.format("commandComponent"),
        "type": "command",
        "name": component_name(ctx.name, step.name),
        "display_name": step.name,
        "version": "1",
        "is_deterministic": step.allow_reuse,
        "code": _code_path(step.source_directory, ctx),
        "environment": _environment(step.environment, ctx, out, f"step {step.name}"),
        "command": command,
        "inputs": cmd.inputs,
        "outputs": cmd.outputs,
    }
    if variables:
        component["environment_variables"] = variables
    path = f"components/{ident(step.name)}.yml"
    out.files[path] = component
    out.mapped.append(
        f"step {step.name} (PythonScriptStep) -> command component {path}, is_deterministic={step.allow_reuse}"
    )
    node = {"type": "command", "component": f"./{path}", "inputs": cmd.bindings, **_node_compute(step, ctx)}
    mltables = {k: {"type": "mltable"} for k, v in cmd.outputs.items() if v["type"] == "mltable"}
    if mltables:
        node["outputs"] = mltables
    return node


def _is_dataset(plan: Plan, parameter: str) -> bool:
    default = plan.parameters.get(parameter)
    return isinstance(default, str) and default.startswith("dataset:")


def _entry_arguments(args: list[Any]) -> list[Any]:
    """A ParallelRunStep's arguments less the flags the SDK adds for its own driver."""
    kept, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if isinstance(arg, str) and (arg in PRS_FLAGS or PRS_INDEXED_FLAG.match(arg)) and i + 1 < len(args):
            skip = True
            continue
        kept.append(arg)
    return kept


def _model_arguments(args: list[Any], ctx: Context, step: Any, out: Translation) -> list[Any]:
    """``--model_name P [--model_version Q]`` -> ``--model ${{inputs.model}}`` when a model input is asked for."""
    if not ctx.model_input:
        return args
    kept: list[Any] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in ("--model_name", "--model_version") and i + 1 < len(args):
            skip = True
            if arg == "--model_name":
                kept += ["--model", DataRef("model")]
            continue
        kept.append(arg)
    out.differences.append(
        f"step {step.name}: v2 has no Model.get_model_path lookup by name; the entry script gets the model as the"
        " model input (--model PATH) instead of --model_name/--model_version"
    )
    return kept


def parallel_node(step: ParallelRunStepPlan, plan: Plan, types: dict[str, str], producers: dict[str, str],
                   ctx: Context, out: Translation) -> dict[str, Any]:  # fmt: skip
    """ParallelRunStep -> a parallel component (run_function task) in its own file and the node using it."""
    opts = step.options
    data = [name for name in step.inputs if name in step.input_kinds]
    if len(data) != 1:
        raise UnsupportedConstruct(
            f"step {step.name!r}: a v2 parallel job cuts one input into mini-batches, this ParallelRunStep has"
            f" {len(data)}: pass the others as side_inputs"
        )
    if opts.get("output_action") == "summary_only":
        out.differences.append(
            f"step {step.name}: output_action summary_only -> no append_row_to; results are not kept"
        )
    args = _model_arguments(_entry_arguments(step.arguments), ctx, step, out)
    types = {**types, "model": "mlflow_model"}
    # the step's output holds the append_row file; the SDK passes it as --output, which is not kept
    cmd = _arguments(step, args, plan, types, producers, set(), out)
    if ctx.model_input:
        cmd.bindings["model"] = "${{parent.inputs.model}}"
    for name in step.outputs:
        cmd.outputs.setdefault(name, {"type": "uri_folder"})
    retry = {
        "max_retries": _value(opts.get("run_max_try"), 3),
        "timeout": _value(opts.get("run_invocation_timeout"), 60),
    }
    mini_batch = opts.get("mini_batch_size")
    component: dict[str, Any] = {
        "$schema": SCHEMA.format("parallelComponent"),
        "type": "parallel",
        "name": component_name(ctx.name, step.name),
        "display_name": step.name,
        "version": "1",
        "is_deterministic": step.allow_reuse,
        "inputs": cmd.inputs,
        "outputs": cmd.outputs,
        "input_data": f"${{{{inputs.{ident(data[0])}}}}}",
        "mini_batch_size": str(_value(mini_batch, "1MB" if step.input_kinds[data[0]] == "tabular" else 10)),
        "resources": {"instance_count": _value(opts.get("node_count"), 1)},
        "max_concurrency_per_instance": _value(opts.get("process_count_per_node"), 1),
        "error_threshold": _value(opts.get("error_threshold"), -1),
        "mini_batch_error_threshold": _value(opts.get("allowed_failed_count"), -1),
        "retry_settings": retry,  # a dict: azure-ai-ml 1.35.2 does not take a RetrySettings object here
        "logging_level": "INFO",
        "task": {
            "type": "run_function",
            "code": _code_path(step.source_directory, ctx),
            "entry_script": step.entry_script,
            "environment": _environment(step.environment, ctx, out, f"step {step.name}"),
            "program_arguments": " ".join(cmd.parts),
        },
    }
    if step.outputs and opts.get("output_action", "append_row") == "append_row":
        component["task"]["append_row_to"] = f"${{{{outputs.{ident(step.outputs[0])}}}}}"
        if opts.get("append_row_file_name") not in (None, "parallel_run_step.txt"):
            out.differences.append(
                f"step {step.name}: append_row_file_name {opts['append_row_file_name']} -> v2 always writes"
                " parallel_run_step.txt"
            )
    if opts.get("environment_variables"):
        component["task"]["environment_variables"] = {
            k: str(v) for k, v in opts["environment_variables"].items()
        }
    if opts.get("partition_keys"):
        component["partition_keys"] = list(opts["partition_keys"])
        component.pop("mini_batch_size")
    if opts.get("allowed_failed_percent") not in (None, 100):
        out.differences.append(
            f"step {step.name}: allowed_failed_percent={opts['allowed_failed_percent']} has no v2 equivalent"
            " (v2 has error_threshold and mini_batch_error_threshold)"
        )
    path = f"components/{ident(step.name)}.yml"
    out.files[path] = component
    out.mapped.append(
        f"step {step.name} (ParallelRunStep) -> parallel component {path}: mini_batch_size, error_threshold,"
        " allowed_failed_count -> mini_batch_error_threshold, run_max_try/run_invocation_timeout -> retry_settings,"
        " node_count -> instance_count, process_count_per_node -> max_concurrency_per_instance, append_row_to"
    )
    node: dict[str, Any] = {
        "type": "parallel",
        "component": f"./{path}",
        "inputs": cmd.bindings,
        **_node_compute(step, ctx),
    }
    if isinstance(mini_batch, ParamRef):
        node["mini_batch_size"] = f"${{{{parent.inputs.{ident(mini_batch.name)}}}}}"
    return node


def _value(value: Any, default: Any) -> Any:
    """An option's value; a PipelineParameter's default (the node binds the parameter where v2 allows it)."""
    if value is None:
        return default
    if isinstance(value, ParamRef):
        return default
    return value


def automl_node(step: AutoMLStepPlan, plan: Plan, producers: dict[str, str], ctx: Context,
                 out: Translation) -> dict[str, Any]:  # fmt: skip
    """AutoMLStep -> an AutoML node with its task, metric, label, limits, training and featurization."""
    s = step.settings
    if s.task not in AUTOML_TASKS:
        raise UnsupportedConstruct(
            f"step {step.name!r}: AutoML task {s.task!r} has no v2 pipeline node here; use one of {', '.join(AUTOML_TASKS)}"
        )
    limits: dict[str, Any] = {"enable_early_termination": bool(s.enable_early_stopping)}
    if s.experiment_timeout_minutes:
        limits["timeout_minutes"] = int(s.experiment_timeout_minutes)
        if s.experiment_timeout_minutes < 15:
            out.differences.append(
                f"step {step.name}: timeout_minutes={s.experiment_timeout_minutes} is under Azure AutoML's 15-minute"
                " minimum; the service will refuse it (raise it with --set timeout_minutes=15)"
            )
    if s.iterations:
        limits["max_trials"] = int(s.iterations)
    node: dict[str, Any] = {
        "type": "automl",
        "task": s.task,
        "primary_metric": s.primary_metric or None,
        "target_column_name": s.label_column_name,
        "training_data": binding(step.training_data, plan, producers),
        "limits": limits,
        "featurization": {"mode": getattr(s, "featurization", None) or "auto"},
        "outputs": {
            "best_model": {"type": "mlflow_model"}
        },  # written `type:` (1.35.2 dumps job_output_type:)
        **_node_compute(step, ctx),
    }
    if not node["primary_metric"]:
        node.pop("primary_metric")
    if s.n_cross_validations:
        node["n_cross_validations"] = int(s.n_cross_validations)
    training: dict[str, Any] = {
        "enable_stack_ensemble": s.enable_ensemble,
        "enable_vote_ensemble": s.enable_ensemble,
    }
    if s.allowed_models:
        training["allowed_training_algorithms"] = list(s.allowed_models)
    if s.blocked_models:
        training["blocked_training_algorithms"] = list(s.blocked_models)
    node["training"] = training
    if s.task == "forecasting":
        forecasting = {"time_column_name": s.time_column_name, "forecast_horizon": s.forecast_horizon}
        if s.freq:
            forecasting["frequency"] = s.freq
        if s.target_lags:
            forecasting["target_lags"] = s.target_lags if isinstance(s.target_lags, list) else [s.target_lags]
        node["forecasting"] = {k: v for k, v in forecasting.items() if v is not None}
    out.mapped.append(
        f"step {step.name} (AutoMLStep) -> automl node: task {s.task}, primary_metric, target_column_name,"
        " limits (timeout_minutes, max_trials, enable_early_termination), n_cross_validations, training"
        " (allowed/blocked algorithms, ensembles), featurization; TrainingOutput(Model) -> best_model (mlflow_model)"
    )
    out.differences.append(
        f"step {step.name}: v2 AutoML reads MLTable data and writes an MLflow model (best_model); it has no"
        " Metrics output"
    )
    if not step.allow_reuse:
        out.differences.append(
            f"step {step.name}: allow_reuse=False has no v2 counterpart (an AutoML node has no is_deterministic);"
            " the local engine reuses an unchanged AutoML node"
        )
    return node
