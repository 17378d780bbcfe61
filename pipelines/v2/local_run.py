"""The ``run`` and ``show`` verbs for SDK v2 pipeline job YAML on the local engine.

python -m pipelines.v2 run pipeline.yml [--set INPUT=VALUE]... [--output DIR] [--json] [--debug]
python -m pipelines.v2 show pipeline.yml [--json]

A run gets the same run record, logs, statuses, MLflow runs and step reuse as a v1 pipeline's run
(``python -m pipelines.workspace runs`` lists it). ``--set`` gives a pipeline input a value, or a data
input a local path; ``--output DIR`` copies the pipeline's outputs to ``DIR/<output name>/``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from pipelines.errors import EXIT_BAD_INPUT, UserError, cli_main, print_json
from pipelines.settings import parse_assignments


def parser(verb: str) -> argparse.ArgumentParser:
    lines = __doc__.strip().splitlines()
    parser = argparse.ArgumentParser(
        prog=f"python -m pipelines.v2 {verb}", description=lines[0],
        epilog="\n".join(lines[2:]), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("pipeline", type=Path, help="a pipeline job YAML (type: pipeline)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    if verb == "run":
        parser.add_argument("--set", dest="assignments", action="append", metavar="INPUT=VALUE",
                            help="a pipeline input's value (a data input: a local path)")  # fmt: skip
        parser.add_argument("--output", type=Path, metavar="DIR", help="copy the pipeline outputs here")
        parser.add_argument("--run-id", help=argparse.SUPPRESS)
    return parser


@cli_main
def run(argv: list[str] | None) -> int:
    """Run a pipeline job YAML on the local engine; exit 0 when it completes."""
    from pipelines.local.runtime.engine_host import EngineHost

    args = parser("run").parse_args(argv)
    if args.output is not None and args.output.exists() and not args.output.is_dir():
        raise UserError(f"--output {args.output} is a file", hint="name a folder (it is created if missing)")
    host = EngineHost()  # imports MLflow and the engine on the other core while azure-ai-ml reads the YAML
    try:
        request, pipe = _request(args)
    except BaseException:
        host.proc.kill()  # no run was started: nothing of the host's to wait for
        host.proc.wait()
        raise
    try:
        out = sys.stderr if args.json else sys.stdout
        print(f"run {request.run_id}: {pipe.name} ({pipe.source})", file=out, flush=True)
        record = host.run(request, to_stderr=args.json)
    finally:
        host.close()
    return _report(record, pipe, args)


def _request(args: argparse.Namespace) -> tuple[Any, Any]:
    """Read the YAML, bind --set values, data paths and registered models; the engine's RunRequest."""
    from pipelines.core.v2_reader import read_pipeline
    from pipelines.local.runtime import engine, runs

    given = parse_assignments(args.assignments)
    pipe = read_pipeline(args.pipeline, data_paths=given)  # a data input's --set value replaces its path
    plan = pipe.plan
    assignments: dict[str, Any] = {}
    paths: dict[str, Path] = {}
    for name, value in given.items():
        if name in plan.datasets and plan.datasets[name].paths:
            paths[name] = _local_path(name, value, plan.datasets[name].asset_type)
        elif name in pipe.input_types:
            if plan.parameters.get(name) is None:  # no default to take the type from: the declared type
                plan.parameters[name] = _typed(name, value, pipe.input_types[name])
            else:
                assignments[name] = value
        else:
            known = ", ".join(sorted(pipe.input_types) + sorted(n for n in plan.datasets if "." not in n))
            raise UserError(
                f"--set {name}: the pipeline has no input {name!r}", hint=f"inputs: {known or 'none'}"
            )
    unset = [n for n in pipe.required if plan.parameters.get(n) is None]
    if unset:
        raise UserError(
            f"pipeline input {unset[0]} has no value", hint=f"give it with --set {unset[0]}=VALUE"
        )
    engine.resolve_parameters(plan, assignments)  # a value of the wrong type fails here, before a run exists
    for data_name, source in plan.datasets.items():  # local paths as they are (any folder, not only CSV)
        if data_name not in paths:
            ref = pipe.models.get(data_name)
            paths[data_name] = _registered_model(data_name, ref) if ref else Path(source.paths[0])
    request = engine.RunRequest(
        plan=plan,
        pipeline_name=pipe.name,
        experiment_name=pipe.experiment_name,
        parameter_assignments=assignments,
        dataset_paths=paths,
        run_id=args.run_id
        or runs.new_run_id(re.sub(r"[^A-Za-z0-9_.-]+", "-", pipe.name).strip("-.") or "v2"),
        extra={"source": str(pipe.source.resolve()), "sdk": "v2", "pipeline_outputs": plan.outputs},
    )
    return request, pipe


def _local_path(name: str, value: str, asset_type: str) -> Path:
    path = Path(value).expanduser().resolve()
    if not path.exists():
        raise UserError(f"--set {name}: {value} does not exist", hint=f"give a local {asset_type or 'path'}")
    if asset_type == "uri_file" and not path.is_file():
        raise UserError(f"--set {name}: {value} is not a file", hint="this input is a uri_file")
    if asset_type in ("uri_folder", "mltable") and not path.is_dir():
        raise UserError(f"--set {name}: {value} is not a folder", hint=f"this input is a {asset_type}")
    if asset_type == "mltable" and not (path / "MLTable").is_file():
        raise UserError(
            f"--set {name}: {value} has no MLTable file", hint="give a folder holding an MLTable file"
        )
    return path


def _typed(name: str, value: str, kind: str) -> Any:
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        raise UserError(f"--set {name}: expects {kind}, got {value!r}") from None
    if kind == "boolean":
        if value.lower() not in ("true", "false"):
            raise UserError(f"--set {name}: expects boolean (true or false), got {value!r}")
        return value.lower() == "true"
    return value


def _registered_model(data_name: str, ref: str) -> Path:
    from pipelines.local.workspace import registry

    node, _, key = data_name.partition(".")
    name, version = registry.parse_model_ref(ref)
    try:
        _, model_dir = registry.materialize_model(name, version)
    except UserError as exc:
        where = f"node {node}, input {key}" if key else f"pipeline input {node}"
        raise UserError(f"{where}: {exc.message}", hint=exc.hint) from None
    return model_dir / name


def _report(record: dict[str, Any], pipe: Any, args: argparse.Namespace) -> int:
    from pipelines.cli import print_summary, run_summary

    summary = run_summary(record)
    summary["outputs"] = _copy_outputs(record, pipe, args.output) if record["status"] == "Completed" else {}
    error = record.get("error") or {}
    bad_input = record["status"] != "Completed" and error.get("exit_code") == 2
    if args.json:
        print_json(summary)
    else:
        print_summary({**summary, "error": None} if bad_input else summary)
        for name, where in summary["outputs"].items():
            print(f"output {name}: {where}")
    if bad_input:
        message = f"node {error.get('step')}: {error.get('message')} (see {summary['folder']}/logs)"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0 if record["status"] == "Completed" else 1


def _copy_outputs(record: dict[str, Any], pipe: Any, target: Path | None) -> dict[str, str]:
    """The pipeline outputs' folders: in the run folder, or copied to ``target/<name>`` when given."""
    from pipelines.local.runtime.runs import run_folder

    found = {}
    for name, data in pipe.plan.outputs.items():
        source = run_folder(record["run_id"]) / "outputs" / data
        if target is None:
            found[name] = str(source)
            continue
        dest = target / name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        shutil.copytree(source, dest)
        found[name] = str(dest.resolve())
    return found


@cli_main
def show(argv: list[str] | None) -> int:
    """Print the plan a pipeline job YAML reads into (offline: nothing runs)."""
    from pipelines.core.v2_reader import read_pipeline

    args = parser("show").parse_args(argv)
    pipe = read_pipeline(args.pipeline)
    info = plan_info(pipe)
    if args.json:
        print_json(info)
        return 0
    print(f"pipeline {info['name']}: {info['description'] or '-'}")
    print(f"experiment: {info['experiment']}")
    print("inputs:")
    for k, v in info["parameters"].items():
        print(f"  {k} = {v!r}")
    for k, v in info["datasets"].items():
        print(f"  {k}: {v['type']} {', '.join(v['paths'])} ({v['mode']})")
    print("steps:")
    for s in info["steps"]:
        print(f"  {s['name']} [{s['node_type']} -> {s['kind']}] on {s['compute_target']}, environment "
              f"{s['environment'] or '-'}, reuse {'on' if s['allow_reuse'] else 'off'}")  # fmt: skip
        print(f"    inputs: {', '.join(s['inputs']) or '-'}; outputs: {', '.join(s['outputs']) or '-'}")
        if s.get("command"):
            print(f"    command: {s['command']}")
        for key in ("automl", "parallel_run"):
            if key in s:
                print(
                    "    " + ", ".join(f"{k}={v}" for k, v in s[key].items() if v not in (None, [], "", {}))
                )
    if info["outputs"]:
        print("outputs: " + ", ".join(f"{k} <- {v}" for k, v in info["outputs"].items()))
    return 0


def plan_info(pipe: Any) -> dict[str, Any]:
    """The plan as ``show --json`` prints it."""
    from pipelines.core.plan import AutoMLStepPlan, CommandStepPlan, DataRef, ParallelRunStepPlan, ParamRef

    def text(args: list[Any], sep: str) -> str:
        return sep.join(
            f"{{{a.name}}}"
            if isinstance(a, DataRef)
            else f"{{param:{a.name}}}"
            if isinstance(a, ParamRef)
            else a
            for a in args
        )

    plan = pipe.plan
    steps = []
    for s in plan.steps:
        step: dict[str, Any] = {
            "name": s.name,
            "node_type": pipe.node_types.get(s.name),
            "kind": s.kind,
            "inputs": s.inputs,
            "outputs": s.outputs,
            "compute_target": s.compute_target,
            "environment": getattr(s, "environment", None),
            "allow_reuse": s.allow_reuse,
        }
        if isinstance(s, CommandStepPlan):
            step["source_directory"] = str(s.source_directory)
            step["command"] = " ".join(text(s.command, "").split())
        if isinstance(s, AutoMLStepPlan):
            step["automl"] = s.settings.__dict__
        if isinstance(s, ParallelRunStepPlan):
            step["parallel_run"] = {"entry_script": s.entry_script, "arguments": text(s.arguments, " "),
                                    "input_kinds": s.input_kinds, **s.options}  # fmt: skip
        steps.append(step)
    return {
        "name": pipe.name,
        "description": pipe.description,
        "experiment": pipe.experiment_name,
        "source": str(pipe.source),
        "parameters": {k: v for k, v in plan.parameters.items()},
        "required": pipe.required,
        "datasets": {
            k: {"paths": list(v.paths), "mode": v.mode, "kind": v.kind, "type": v.asset_type}
            for k, v in plan.datasets.items()
        },
        "steps": steps,
        "outputs": plan.outputs,
    }
