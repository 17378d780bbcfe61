"""ParallelRunStep/ParallelRunConfig as a v2 parallel component (run_function task) and the node using it."""

from __future__ import annotations

from typing import Any

from pipelines.core.plan import ParallelRunStepPlan, ParamRef, Plan
from pipelines.v2.documents import (
    PRS_FLAGS,
    PRS_INDEXED_FLAG,
    SCHEMA,
    Context,
    Translation,
    UnsupportedConstruct,
    component_name,
    ident,
)
from pipelines.v2.nodes import Command, code_path, command_arguments, environment, node_compute

MAPPED = (
    "mini_batch_size, error_threshold, allowed_failed_count -> mini_batch_error_threshold,"
    " run_max_try/run_invocation_timeout -> retry_settings, node_count -> instance_count,"
    " process_count_per_node -> max_concurrency_per_instance, append_row_to"
)


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
    """``--model_name P [--model_version Q]`` kept, the entry script told to look the name up in the MLflow
    registry when it runs (``--model_registry mlflow``), when the context asks for it."""
    if not ctx.mlflow_model_lookup or "--model_name" not in args:
        return args
    out.differences.append(
        f"step {step.name}: v2 has no Model.get_model_path lookup by name; the entry script looks model_name up"
        " in the MLflow model registry when each worker starts (--model_registry mlflow; a job's MLflow tracking"
        " URI is the workspace's), the latest version unless model_version pins one, so a schedule or a batch"
        " endpoint invocation scores with the model latest at run time"
    )
    return [*args, "--model_registry", "mlflow"]


def parallel_node(step: ParallelRunStepPlan, plan: Plan, types: dict[str, str], producers: dict[str, str],
                  ctx: Context, out: Translation) -> dict[str, Any]:  # fmt: skip
    """ParallelRunStep -> a parallel component (run_function task) in its own file and the node using it."""
    data = _data_input(step)
    opts = step.options
    if opts.get("output_action") == "summary_only":
        out.differences.append(
            f"step {step.name}: output_action summary_only -> no append_row_to; results are not kept"
        )
    cmd = _command(step, plan, types, producers, ctx, out)
    component = _component(step, data, cmd, ctx, out)
    if opts.get("allowed_failed_percent") not in (None, 100):
        out.differences.append(
            f"step {step.name}: allowed_failed_percent={opts['allowed_failed_percent']} has no v2 equivalent"
            " (v2 has error_threshold and mini_batch_error_threshold)"
        )
    path = f"components/{ident(step.name)}.yml"
    out.files[path] = component
    out.mapped.append(f"step {step.name} (ParallelRunStep) -> parallel component {path}: {MAPPED}")
    node: dict[str, Any] = {
        "type": "parallel",
        "component": f"./{path}",
        "inputs": cmd.bindings,
        **node_compute(step, ctx),
    }
    mini_batch = opts.get("mini_batch_size")
    if isinstance(mini_batch, ParamRef):
        node["mini_batch_size"] = f"${{{{parent.inputs.{ident(mini_batch.name)}}}}}"
    return node


def _data_input(step: ParallelRunStepPlan) -> str:
    """The one input a v2 parallel job cuts into mini-batches."""
    data = [name for name in step.inputs if name in step.input_kinds]
    if len(data) != 1:
        raise UnsupportedConstruct(
            f"step {step.name!r}: a v2 parallel job cuts one input into mini-batches, this ParallelRunStep has"
            f" {len(data)}: pass the others as side_inputs"
        )
    return data[0]


def _command(step: ParallelRunStepPlan, plan: Plan, types: dict[str, str], producers: dict[str, str],
             ctx: Context, out: Translation) -> Command:  # fmt: skip
    """The entry script's program arguments (less the SDK's own flags) and the component's inputs/outputs."""
    args = _model_arguments(_entry_arguments(step.arguments), ctx, step, out)
    # the step's output holds the append_row file; the SDK passes it as --output, which is not kept
    cmd = command_arguments(step, args, plan, types, producers, set(), out)
    for name in step.outputs:
        cmd.outputs.setdefault(name, {"type": "uri_folder"})
    return cmd


def _component(
    step: ParallelRunStepPlan, data: str, cmd: Command, ctx: Context, out: Translation
) -> dict[str, Any]:
    """The parallel component document: mini-batches, error thresholds, retries, instances, the task."""
    opts = step.options
    retry = {
        "max_retries": _value(opts.get("run_max_try"), 3),
        "timeout": _value(opts.get("run_invocation_timeout"), 60),
    }
    component: dict[str, Any] = {
        "$schema": SCHEMA.format("parallelComponent"),
        "type": "parallel",
        "name": component_name(ctx.name, step.name),
        "display_name": step.name,
        "version": "1",
        "is_deterministic": step.allow_reuse,
        "inputs": cmd.inputs,
        "outputs": cmd.outputs,
        "input_data": f"${{{{inputs.{ident(data)}}}}}",
        "mini_batch_size": str(
            _value(opts.get("mini_batch_size"), "1MB" if step.input_kinds[data] == "tabular" else 10)
        ),
        "resources": {"instance_count": _value(opts.get("node_count"), 1)},
        "max_concurrency_per_instance": _value(opts.get("process_count_per_node"), 1),
        "error_threshold": _value(opts.get("error_threshold"), -1),
        "mini_batch_error_threshold": _value(opts.get("allowed_failed_count"), -1),
        "retry_settings": retry,  # a dict: azure-ai-ml 1.35.2 does not take a RetrySettings object here
        "logging_level": "INFO",
        "task": _task(step, cmd, ctx, out),
    }
    if opts.get("partition_keys"):
        component["partition_keys"] = list(opts["partition_keys"])
        component.pop("mini_batch_size")
    return component


def _task(step: ParallelRunStepPlan, cmd: Command, ctx: Context, out: Translation) -> dict[str, Any]:
    """The run_function task: code, entry script, environment, program arguments, append_row_to."""
    opts = step.options
    task: dict[str, Any] = {
        "type": "run_function",
        "code": code_path(step.source_directory, ctx),
        "entry_script": step.entry_script,
        "environment": environment(step.environment, ctx, out, f"step {step.name}"),
        "program_arguments": " ".join(cmd.parts),
    }
    if step.outputs and opts.get("output_action", "append_row") == "append_row":
        task["append_row_to"] = f"${{{{outputs.{ident(step.outputs[0])}}}}}"
        if opts.get("append_row_file_name") not in (None, "parallel_run_step.txt"):
            out.differences.append(
                f"step {step.name}: append_row_file_name {opts['append_row_file_name']} -> v2 always writes"
                " parallel_run_step.txt"
            )
    if opts.get("environment_variables"):
        task["environment_variables"] = {k: str(v) for k, v in opts["environment_variables"].items()}
    return task


def _value(value: Any, default: Any) -> Any:
    """An option's value; a PipelineParameter's default (the node binds the parameter where v2 allows it)."""
    if value is None:
        return default
    if isinstance(value, ParamRef):
        return default
    return value
