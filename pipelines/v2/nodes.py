"""The v2 command nodes of the plan's script steps (components in their own files), and what every node kind
shares: a step's command line with its input/output bindings, environment, code path and compute."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.plan import AutoMLStepPlan, DataRef, ParamRef, Plan, ScriptStepPlan
from pipelines.v2.curated import curated_reference, environment_reference, is_curated
from pipelines.v2.documents import (
    BASE_IMAGE,
    MLTABLE_CSV,
    SCHEMA,
    Context,
    Translation,
    UnsupportedConstruct,
    component_name,
    ident,
    literal_input,
)


@dataclass
class Command:
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


def command_arguments(step: Any, args: list[Any], plan: Plan, types: dict[str, str], producers: dict[str, str],
                      dropped: set[str], out: Translation) -> Command:  # fmt: skip
    """``args`` as a v2 command line: literals quoted, parameters and data as ``${{inputs.x}}``/``${{outputs.y}}``."""
    cmd = Command()
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


def environment(name: str | None, ctx: Context, out: Translation, where: str) -> Any:
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
    reference = environment_reference(name)
    if not is_curated(name):
        out.differences.append(f"{where}: environment {name} is referenced as {reference}; register it first")
    return reference


def code_path(source: Path, ctx: Context) -> str:
    """The step's source folder relative to the components/ folder in the output folder."""
    import os

    return os.path.relpath(source, ctx.out_dir / "components")


def node_compute(step: Any, ctx: Context) -> dict[str, Any]:
    if step.compute_target and step.compute_target != ctx.default_compute:
        return {"compute": f"azureml:{step.compute_target}"}
    return {}


def script_node(step: ScriptStepPlan, plan: Plan, types: dict[str, str], producers: dict[str, str],
                 dropped: set[str], ctx: Context, out: Translation) -> dict[str, Any]:  # fmt: skip
    """PythonScriptStep -> a command component in its own file and the node using it."""
    cmd = command_arguments(step, step.arguments, plan, types, producers, dropped, out)
    env, description = _script_environment(step, types, producers, ctx, out)
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
        "description": description,
        "version": "1",
        "is_deterministic": step.allow_reuse,
        "code": code_path(step.source_directory, ctx),
        "environment": env,
        "command": command,
        "inputs": cmd.inputs,
        "outputs": cmd.outputs,
    }
    if variables:
        component["environment_variables"] = variables
    if description is None:
        del component["description"]
    path = f"components/{ident(step.name)}.yml"
    out.files[path] = component
    out.mapped.append(
        f"step {step.name} (PythonScriptStep) -> command component {path}, is_deterministic={step.allow_reuse}"
    )
    node = {"type": "command", "component": f"./{path}", "inputs": cmd.bindings, **node_compute(step, ctx)}
    mltables = {k: {"type": "mltable"} for k, v in cmd.outputs.items() if v["type"] == "mltable"}
    if mltables:
        node["outputs"] = mltables
    return node


def _script_environment(step: ScriptStepPlan, types: dict[str, str], producers: dict[str, str], ctx: Context,
                        out: Translation) -> tuple[Any, str | None]:  # fmt: skip
    """The step's environment, and why it differs from the v1 step's: a step reading AutoML's best model (an
    MLflow model whose own environment lists the AutoML runtime) runs in ``ctx.automl_model_environment``."""
    models = [n for n in step.inputs if types.get(n) == "mlflow_model" and n in producers]
    if not models:
        return environment(step.environment, ctx, out, f"step {step.name}"), None
    env = ctx.automl_model_environment
    if env is None:
        out.differences.append(
            f"step {step.name}: reads AutoML's MLflow model ({', '.join(models)}); on Azure that model's own"
            f" environment lists the AutoML runtime, which {step.environment or 'its environment'} lacks: give the"
            f" step an environment with the same runtime pins, e.g. {curated_reference('AzureML-AutoML')}"
        )
        return environment(step.environment, ctx, out, f"step {step.name}"), None
    out.differences.append(
        f"step {step.name}: reads AutoML's MLflow model ({', '.join(models)}), whose own environment lists the"
        f" AutoML runtime: its component runs in the curated AutoML environment {env} (as the v1 step does on"
        f" Azure), not {step.environment}; the local engine runs it in this project's environment"
    )
    description = (
        f"Reads AutoML's best model, an MLflow model whose own environment lists the AutoML runtime: on Azure it"
        f" runs in {env}, not {step.environment}; the local engine runs every step in this project's environment."
    )
    return env, description


def _is_dataset(plan: Plan, parameter: str) -> bool:
    default = plan.parameters.get(parameter)
    return isinstance(default, str) and default.startswith("dataset:")
