"""The SDK-neutral plan (read from SDK v1 step objects) as Azure ML SDK v2 (azure-ai-ml) YAML documents.

One translation serves the exporter and the ``azure-v2`` backend: it returns the documents (plain dicts
in the v2 YAML schemas) with the file each belongs in; ``pipelines.v2.verify`` loads every one with
azure-ai-ml's own loaders into its entity. Paths inside a document are relative to the file it is
written to. The mapping (v1 -> v2):

    PythonScriptStep             -> command component (own file) + a command node
    AutoMLStep / AutoMLConfig    -> an AutoML node (regression / classification / forecasting)
    ParallelRunStep              -> parallel component (run_function task) + a parallel node
    PipelineParameter            -> pipeline input with its type and default
    allow_reuse                  -> is_deterministic
    runconfig environment vars   -> environment_variables
    FileDataset / TabularDataset -> uri_file / mltable input; step outputs -> uri_folder (mltable where
                                    AutoML reads them, its MLTable file written by a line in the command)
    TrainingOutput(Model)        -> the AutoML node's best_model (mlflow_model)
"""

from __future__ import annotations

import re
from typing import Any

from pipelines.core.plan import AutoMLStepPlan, ParallelRunStepPlan, Plan, ScriptStepPlan
from pipelines.v2.automl import automl_node
from pipelines.v2.documents import (  # noqa: F401 - re-exported: the translation's interface
    BASE_IMAGE,
    FREQUENCIES,
    SCHEMA,
    Context,
    Translation,
    UnsupportedConstruct,
    component_name,
    ident,
    literal_input,
)
from pipelines.v2.nodes import script_node
from pipelines.v2.parallel import parallel_node


def translate(plan: Plan, ctx: Context) -> Translation:
    """The v2 documents for ``plan``: components, a pipeline job, a pipeline component, environments."""
    out = Translation(
        name=ctx.name, job_file=f"{ctx.name}.pipeline.yml", component_file=f"{ctx.name}.component.yml"
    )
    types = _data_types(plan)
    automl_metrics = {s.metrics_output for s in plan.steps if isinstance(s, AutoMLStepPlan)}
    producers = {name: step.name for step in plan.steps for name in step.outputs}
    inputs, job_outputs = _pipeline_inputs(plan, types, ctx, out)
    jobs: dict[str, Any] = {}
    for step in plan.steps:
        if isinstance(step, ScriptStepPlan):
            jobs[ident(step.name)] = script_node(step, plan, types, producers, automl_metrics, ctx, out)
        elif isinstance(step, ParallelRunStepPlan):
            jobs[ident(step.name)] = parallel_node(step, plan, types, producers, ctx, out)
        elif isinstance(step, AutoMLStepPlan):
            jobs[ident(step.name)] = automl_node(step, plan, producers, ctx, out)
        else:  # pragma: no cover - the plan has three kinds
            raise UnsupportedConstruct(f"step {step.name!r}: {type(step).__name__} has no v2 equivalent")
    settings = {"continue_on_step_failure": False}
    if ctx.default_compute:
        settings["default_compute"] = f"azureml:{ctx.default_compute}"
    bound = set(re.findall(r"parent\.inputs\.(\w+)", repr(jobs)))
    for name in [k for k in inputs if k not in bound]:
        del inputs[name]
        out.differences.append(f"pipeline parameter {name} is used by no v2 step; it is left out")
    # a pipeline job's inputs are values (data: type and path); a pipeline component's are typed, with defaults
    values = {k: v["default"] if "default" in v else v for k, v in inputs.items()}
    body = {"jobs": jobs}
    if job_outputs:
        body["outputs"] = job_outputs
    out.files[out.job_file] = {
        "$schema": SCHEMA.format("pipelineJob"),
        "type": "pipeline",
        "display_name": ctx.name,
        "description": ctx.description,
        "experiment_name": ctx.experiment_name,
        "settings": settings,
        "inputs": values,
        **body,
    }
    out.files[out.component_file] = {
        "$schema": SCHEMA.format("pipelineComponent"),
        "type": "pipeline",
        "name": component_name(ctx.name, "pipeline"),
        "display_name": ctx.name,
        "description": ctx.description,
        "version": "1",
        "inputs": {k: {"type": v["type"]} if "path" in v else v for k, v in inputs.items()},
        **body,
    }
    data = [k for k, v in inputs.items() if "path" in v]
    if data:
        out.differences.append(
            f"the pipeline component's data inputs ({', '.join(data)}) have no default (v2 components cannot hold"
            " one): a batch endpoint invocation passes them, where a v1 published pipeline had the dataset's"
        )
    out.mapped.append(
        f"the pipeline -> pipeline job {out.job_file} and pipeline component {out.component_file}"
    )
    return out


def _data_types(plan: Plan) -> dict[str, str]:
    """The v2 type of every piece of data: datasets by kind, AutoML's inputs mltable, its model mlflow_model."""
    types = {}
    for name, source in plan.datasets.items():
        types[name] = (
            "mltable" if source.kind == "tabular" else "uri_file" if len(source.paths) == 1 else "uri_folder"
        )
    for step in plan.steps:
        for name in step.outputs:
            types.setdefault(name, "uri_folder")
    for step in plan.steps:
        if isinstance(step, AutoMLStepPlan):
            types[step.training_data] = "mltable"
            types[step.model_output] = "mlflow_model"
    return types


def _pipeline_inputs(
    plan: Plan, types: dict[str, str], ctx: Context, out: Translation
) -> tuple[dict[str, Any], dict[str, Any]]:
    """PipelineParameters -> pipeline inputs with type and default (datasets -> data inputs with a path)."""
    inputs: dict[str, Any] = {}
    for name, default in plan.parameters.items():
        if isinstance(default, str) and default.startswith("dataset:"):
            dataset = default.removeprefix("dataset:")
            inputs[ident(name)] = _dataset_input(dataset, plan, types, ctx, out)
            continue
        inputs[ident(name)] = literal_input(default)
    for name in plan.datasets:  # datasets that no PipelineParameter wraps are pipeline inputs too
        if not any(v == f"dataset:{name}" for v in plan.parameters.values()):
            inputs[ident(name)] = _dataset_input(name, plan, types, ctx, out)
    mapped = ", ".join(f"{k} ({v['type']})" for k, v in inputs.items())
    out.mapped.append(f"PipelineParameters and datasets -> pipeline inputs: {mapped}")
    return inputs, {}


def _dataset_input(
    name: str, plan: Plan, types: dict[str, str], ctx: Context, out: Translation
) -> dict[str, Any]:
    source = plan.datasets[name]
    kind = types[name]
    remote = [p for p in source.paths if re.match(r"^(https?|azureml|wasbs?|abfss?)://", p)]
    if not source.paths or len(remote) != len(source.paths):
        raise UnsupportedConstruct(
            f"dataset {name!r} ({', '.join(source.paths) or 'no paths'}) is not a URL or datastore path v2 can read:"
            " build it from http(s), azureml:// or abfss:// paths, or pass a registered data asset"
        )
    if kind == "mltable":  # a TabularDataset: an MLTable folder beside the job, uploaded with it
        folder = f"data/{name}"
        lines = (
            ["paths:"]
            + [f"  - file: {p}" for p in source.paths]
            + [
                "transformations:",
                "  - read_delimited:",
                '      delimiter: ","',
                "      header: all_files_same_headers",
                "      encoding: utf8",
            ]
        )
        out.texts[f"{folder}/MLTable"] = "\n".join(lines) + "\n"
        out.mapped.append(
            f"TabularDataset {name} -> mltable input ({folder}/MLTable reads {', '.join(source.paths)})"
        )
        return {"type": "mltable", "path": f"./{folder}"}
    if kind == "uri_file":
        if source.mode == "download":
            out.differences.append(
                f"dataset {name}: v1 downloaded the FileDataset into a folder holding the file; the v2 uri_file input"
                " gives the script the file's own path"
            )
        return {
            "type": "uri_file",
            "path": remote[0],
            "mode": "download" if source.mode == "download" else "ro_mount",
        }
    raise UnsupportedConstruct(
        f"dataset {name!r} has {len(remote)} paths; v2 has no multi-path file input: register them as one uri_folder"
        " data asset and pass that"
    )
