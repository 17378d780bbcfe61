"""The verbs every pipeline module shares: run (local engine), show (offline), publish, models."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.backends import targets
from pipelines.core.definition import Builder, PipelineDefinition, RunCheck, chosen_settings  # noqa: F401
from pipelines.definitions import recurrence_dict
from pipelines.errors import EXIT_BAD_INPUT, UserError, cli_main, print_json, refuse_empty_options
from pipelines.settings import Settings, load_settings, parse_assignments


def exit_now(code: int) -> None:
    """Exit a pipeline command without the interpreter's slow finalization.

    Importing the Azure ML SDK starts Application Insights sender threads; at exit the interpreter
    waits seconds for their uploads (retried when there is no network). Every result of a pipeline
    command is already written and closed when it returns, so flush the terminal and leave at once.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def settings_help(groups: tuple[str, ...] | None = None) -> str:
    """The settings a pipeline uses (its ``groups``; all if None), one line each with its default."""
    return "settings (--set NAME=VALUE, or AMLOPS_<NAME> in the environment or .env):\n" + "\n".join(
        f"  {name} (default {default!r}): {text}" for name, default, text in Settings.describe(groups)
    )


def pipeline_cli(
    prog: str,
    doc: str | None,
    build: Builder,
    argv: list[str] | None,
    extra_run_args: Callable[[argparse.ArgumentParser], None] | None = None,
    label_required: bool = True,
    after_run: Callable[[dict[str, Any], argparse.Namespace], None] | None = None,
    check_run: Callable[[RunCheck], None] | None = None,
    setting_groups: tuple[str, ...] | None = None,
    model_lookup: bool = False,
) -> int:
    """Parse and dispatch ``run``/``show``/``publish``/``models``/``export`` for one pipeline builder.

    ``model_lookup``: in the v2 export, the ParallelRunStep's entry script looks its model name up in the MLflow
    registry when it runs (v2 has no ``Model.get_model_path``).

    ``check_run`` raises UserError for what the module can tell is wrong before a run starts (it sees
    the data's header); ``after_run`` handles a completed run's results.
    """
    parser = build_parser(prog, doc, extra_run_args, setting_groups)

    @cli_main
    def dispatch(args_list: list[str] | None) -> int:
        args = parser.parse_args(args_list)
        refuse_empty_options(parser, args, args_list or [])
        if args.verb == "models":
            return _models_verb(args)
        base = (
            Settings(**json.loads(args.settings_json))
            if getattr(args, "settings_json", None)
            else load_settings()
        )
        assignments = parse_assignments(args.assignments)
        settings = base.with_overrides(assignments)
        if args.verb == "run" and args.target != "local":
            return _submit(build(settings, args.data), args)
        if args.verb == "run":
            given = chosen_settings(settings, assignments)
            return _run(build, settings, given, args, label_required, after_run, check_run)
        definition = build(settings, None)
        if args.verb == "show":
            return _show(definition, args.json)
        if args.verb == "export":
            return _export(definition, args, model_lookup)
        return _publish(definition, args)

    return dispatch(argv)


def build_parser(
    prog: str,
    doc: str | None,
    extra_run_args: Callable[[argparse.ArgumentParser], None] | None = None,
    setting_groups: tuple[str, ...] | None = None,
) -> argparse.ArgumentParser:
    """A pipeline module's parser: the verbs ``run``, ``show``, ``publish``, ``export`` and ``models``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=(doc or "").strip().splitlines()[0], epilog=settings_help(setting_groups),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    run_p = sub.add_parser("run", help="run the pipeline now on the local engine", epilog=settings_help(setting_groups),
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _common_options(run_p)
    run_p.add_argument(
        "--data", metavar="NAME|PATH|URL", help="the input dataset (default: the dataset setting)"
    )
    run_p.add_argument(
        "--target", choices=("local", "azure-v2"), default="local",
        help="local: run it here; azure-v2: submit it as an Azure ML SDK v2 pipeline job",
    )  # fmt: skip
    run_p.add_argument("--run-id", help=argparse.SUPPRESS)
    # a published version's frozen settings (JSON); --set still applies on top (service use)
    run_p.add_argument("--settings-json", help=argparse.SUPPRESS)
    run_p.add_argument("--extra", help=argparse.SUPPRESS)  # JSON merged into the run record (service use)
    if extra_run_args:
        extra_run_args(run_p)
    show_p = sub.add_parser("show", help="print the pipeline as built (offline)")
    _common_options(show_p)
    pub_p = sub.add_parser(
        "publish", help="publish the pipeline (Azure ML if a workspace is configured, else local)"
    )
    _common_options(pub_p)
    pub_p.add_argument("--target", choices=("auto", *targets()), default="auto")
    pub_p.add_argument("--set-default", action="store_true", help="make this version the endpoint's default")
    pub_p.add_argument("--no-schedule", action="store_true", help="do not attach the default schedule")
    export_p = sub.add_parser("export", help="write the pipeline as Azure ML SDK v2 YAML (offline, verified)")
    _common_options(export_p)
    export_p.add_argument("--sdk", choices=("v2",), required=True, help="the SDK to export for")
    export_p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the YAML files")
    _add_models_parser(sub)
    return parser


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="assignments", action="append", metavar="NAME=VALUE", help="override a setting"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _add_models_parser(sub: Any) -> None:
    """``models [list|show NAME[:VERSION]]``: the local registry's model versions."""
    models_p = sub.add_parser("models", help="registered model versions in the local registry: list, show")
    models_p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    models_sub = models_p.add_subparsers(dest="models_verb", metavar="ACTION")
    models_sub.add_parser("list", help="every registered version (the default)").add_argument(
        "--json", action="store_true", help="print machine-readable JSON"
    )
    show_model = models_sub.add_parser("show", help="one version's metrics, tags, data hash and figures")
    show_model.add_argument("model", metavar="NAME[:VERSION]", help="latest version when VERSION is left out")
    show_model.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _models_verb(args: argparse.Namespace) -> int:
    if getattr(args, "models_verb", None) == "show":
        return _show_model(args.model, args.json)
    return _models(args.json)


def _run(
    build: Builder,
    settings: Settings,
    given: frozenset[str],
    args: argparse.Namespace,
    label_required: bool,
    after_run: Callable[[dict[str, Any], argparse.Namespace], None] | None,
    check_run: Callable[[RunCheck], None] | None,
) -> int:
    from pipelines.local.runtime.engine_host import EngineHost

    host = EngineHost()  # imports MLflow and the engine on the other core while this builds the plan
    try:
        record = _run_in(host, build, settings, given, args, label_required, check_run)
    finally:
        host.close()
    summary = run_summary(record)
    if after_run is not None and record["status"] == "Completed":
        after_run(summary, args)
    error = record.get("error") or {}
    bad_input = record["status"] != "Completed" and error.get("exit_code") == 2
    if args.json:
        print_json(summary)
    else:  # bad input found by a step: its one error line is the UserError below, not also the summary's
        print_summary({**summary, "error": None} if bad_input else summary)
    if bad_input:
        failure = UserError(
            f"step {error.get('step')}: {error.get('message')}", hint=f"see {summary['folder']}/logs"
        )
        if not args.json:
            raise failure
        # stdout holds one JSON document (the summary, with its error); the error line goes to stderr
        print(f"error: {failure}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0 if record["status"] == "Completed" else 1


def _run_in(
    host: Any,
    build: Builder,
    settings: Settings,
    given: frozenset[str],
    args: argparse.Namespace,
    label_required: bool,
    check_run: Callable[[RunCheck], None] | None,
) -> dict[str, Any]:
    """Check the data and settings, build the pipeline and its plan, run it in ``host``; the final record."""
    from pipelines import datasets
    from pipelines.local.runtime import engine, plan_cache, runs
    from pipelines.local.workspace import registry

    data_ref = args.data or settings.dataset
    data_path = datasets.resolve(data_ref)
    assignments: dict[str, Any] = {}
    required: list[str] = [settings.label] if label_required else []
    if getattr(args, "model", None) is not None or not label_required:
        name, version = registry.parse_model_ref(getattr(args, "model", None) or settings.model_name)
        model = registry.get_model(name, version)  # UserError when it is not registered
        assignments.update(model_name=model.name, model_version=model.version)
        required = registry.model_input_columns(model.name, model.version)
    else:
        model = None
    data_file, head = precheck_data(data_path, required, role="label" if label_required else "features")
    if check_run is not None:
        columns = [str(c) for c in head.columns]
        check_run(RunCheck(settings, given, data_file, columns, head, args, data_path, model))
    # the SDK is imported only to build a definition not built before (plan_cache.py)
    definition = plan_cache.cached_plan(build, settings, data_ref, read=_read_steps)
    plan = definition.plan
    assignments = {k: v for k, v in assignments.items() if k in plan.parameters}
    engine.resolve_parameters(plan, assignments)  # bad values fail here, before a run exists
    bindings = {name: data_path for name in plan.datasets}
    extra = json.loads(args.extra) if args.extra else {}
    out = sys.stderr if args.json else sys.stdout
    request = engine.RunRequest(
        plan=plan,
        pipeline_name=definition.name,
        experiment_name=definition.experiment_name,
        parameter_assignments=assignments,
        dataset_paths=bindings,
        run_id=args.run_id or runs.new_run_id(definition.name),
        extra={"settings": settings.as_dict(), **extra},
    )
    print(f"run {request.run_id}: {definition.description}", file=out, flush=True)
    return host.run(request, to_stderr=args.json)


def _read_steps(steps: list[Any]) -> Any:
    from pipelines.core import v1_reader

    return v1_reader.read_steps(steps)


def precheck_data(path: Path, required_columns: list[str], role: str = "label") -> tuple[Path, Any]:
    """Fail fast (before a run exists) on unreadable or empty data or missing columns; the (first) CSV file
    and its first rows, as read."""
    import pandas as pd

    from pipelines.datasets import csv_files

    files = csv_files(path)
    for file in files:
        repeated = repeated_columns(file)
        if repeated:
            raise UserError(
                f"{file.name} repeats the column name(s) {', '.join(repeated)}",
                hint="give every column its own name (a reader would call the copies "
                f"{repeated[0]}.1, ... and use them as other columns)",
            )
    try:
        header = pd.read_csv(files[0], nrows=5)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise UserError(
            f"cannot read {files[0]} as CSV ({exc})", hint="pass a readable CSV with a header row"
        ) from None
    if header.empty:
        raise UserError(
            f"{files[0]} has no data rows", hint="pass a CSV with a header and at least a few rows"
        )
    missing = [c for c in required_columns if c not in header.columns]
    if missing:
        columns = ", ".join(map(str, header.columns))
        if role == "label":
            raise UserError(
                f"label column {missing[0]!r} is not in {files[0].name} (columns: {columns})",
                hint="name the label with --set label=COLUMN",
            )
        raise UserError(
            f"{files[0].name} lacks the column(s) {', '.join(missing)} that the model needs (it has: {columns})",
            hint="score data with the columns the model was trained on",
        )
    return files[0], header


def repeated_columns(file: Path) -> list[str]:
    """The names that occur more than once in a CSV file's header line (unreadable or empty: none)."""
    import csv

    try:
        with open(file, newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, csv.Error):
        return []  # reported by the read that follows
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for name in header:
        if name in seen:
            repeated[name] = None
        seen.add(name)
    return list(repeated)


def run_summary(record: dict[str, Any]) -> dict[str, Any]:
    from pipelines.local.runtime.runs import run_folder

    folder = run_folder(record["run_id"])
    registration = None
    reg_file = folder / "outputs" / "registration" / "registration.json"
    if reg_file.is_file():
        registration = json.loads(reg_file.read_text())
    return {
        "run_id": record["run_id"],
        "status": record["status"],
        "folder": str(folder),
        "steps": {s["name"]: s["status"] for s in record["steps"]},
        "metrics": {k: v for k, v in sorted(record.get("metrics", {}).items())},
        "registration": registration,
        "error": record.get("error"),
        "mlflow_run_id": record.get("mlflow_run_id"),
        **({"batch": batch_report(record["parallel_run"])} if record.get("parallel_run") else {}),
    }


def batch_report(parallel_runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each ParallelRunStep's speed and failures, from the run record."""
    out = {}
    for step, r in parallel_runs.items():
        failures = r.get("failures") or []
        out[step] = {
            "rows": r.get("result_rows"),
            "items": r.get("items"),
            "seconds": r.get("seconds"),
            "rows_per_second": r.get("rows_per_second"),
            "workers": r.get("workers"),
            "mini_batches": r.get("mini_batches"),
            "failed_mini_batches": r.get("failed_mini_batches"),
            "failed_items": r.get("failed_items"),
            "first_failures": [
                f"mini-batch {f.get('id')} ({f.get('source')}): {f.get('error', '')}"[:200]
                for f in failures[:3]
            ],
            "report": r.get("report_dir"),
        }
    return out


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\nrun {summary['run_id']}: {summary['status']}")
    test = {k: v for k, v in summary["metrics"].items() if k.startswith("test_")}
    if test:
        print("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items()))
    reg = summary.get("registration")
    if reg:
        state = "registered" if reg["registered"] else "not registered"
        version = reg.get("version")
        print(
            f"model: {reg['model_name']} {state}"
            + (f" (version {version})" if version else "")
            + f": {reg['reason']}"
        )
    for step, b in (summary.get("batch") or {}).items():
        print(
            f"{step}: {b['rows']:,} rows in {b['seconds']:.1f} s ({b['rows_per_second']:,.0f} rows/s, "
            f"{b['workers']} workers); failed: {b['failed_mini_batches']} of {b['mini_batches']} mini-batches, "
            f"{b['failed_items']} of {b['items']:,} items"
        )
        for line in b["first_failures"]:
            print(f"  {line}")
        print(f"  report: {b['report']}")
    if summary.get("error"):
        print(f"error: {summary['error'].get('message')}")
    if summary.get("predictions"):
        print(f"predictions: {summary['predictions']}")
    if summary.get("failed_rows"):
        failed = summary["failed_rows"]
        print(
            f"rows not scored: {failed['count']} (they break the model's input rule; see {failed['report']})"
        )
    print(f"run folder: {summary['folder']}")


def _show(definition: PipelineDefinition, as_json: bool) -> int:
    from pipelines.core import v1_reader

    plan = v1_reader.read_steps(definition.steps)
    sdk_types = {id(s): type(s).__name__ for s in definition.steps}
    by_name = {s.name: s for s in definition.steps}
    info = {
        "name": definition.name,
        "description": definition.description,
        "experiment": definition.experiment_name,
        "parameters": {k: _jsonable(v) for k, v in plan.parameters.items()},
        "datasets": {
            k: {"paths": list(v.paths), "mode": v.mode, "kind": v.kind} for k, v in plan.datasets.items()
        },
        "steps": [
            {
                "name": s.name,
                "sdk_type": sdk_types[id(by_name[s.name])],
                "inputs": s.inputs,
                "outputs": s.outputs,
                "compute_target": s.compute_target,
                "environment": getattr(s, "environment", None),
                "allow_reuse": s.allow_reuse,
                **({"automl": s.settings.__dict__} if isinstance(s, v1_reader.AutoMLStepPlan) else {}),
                **({"parallel_run": s.options} if isinstance(s, v1_reader.ParallelRunStepPlan) else {}),
            }
            for s in plan.steps
        ],
        "schedule": recurrence_dict(definition.schedule),
    }
    if as_json:
        print_json(info)
        return 0
    print(f"pipeline {info['name']}: {info['description']}")
    print(f"experiment: {info['experiment']}")
    print("parameters:")
    for k, v in info["parameters"].items():
        print(f"  {k} = {v!r}")
    print("dataset inputs:")
    for k, v in info["datasets"].items():
        print(f"  {k}: {v['kind']} dataset {', '.join(v['paths'])} ({v['mode']})")
    print("steps:")
    for s in info["steps"]:
        print(
            f"  {s['name']} [{s['sdk_type']}] on {s['compute_target']}, environment {s['environment'] or '-'}"
        )
        print(f"    inputs: {', '.join(s['inputs']) or '-'}; outputs: {', '.join(s['outputs']) or '-'}")
        for key in ("automl", "parallel_run"):
            if key in s:
                print("    " + ", ".join(f"{k}={v}" for k, v in s[key].items() if v not in (None, [], "")))
    if info["schedule"]:
        print("schedule: " + ", ".join(f"{k}={v}" for k, v in info["schedule"].items() if v is not None))
    return 0


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _publish(definition: PipelineDefinition, args: argparse.Namespace) -> int:
    from pipelines.backends import load_backend

    result = load_backend(args.target).publish(
        definition, set_default=args.set_default, schedule=not args.no_schedule
    )
    if args.json:
        print_json(result)
    else:
        for line in result.get("lines", []):
            print(line)
    return 0


def _submit(definition: PipelineDefinition, args: argparse.Namespace) -> int:
    """``run --target azure-v2``: submit the pipeline as a v2 pipeline job and print where it is."""
    from pipelines.backends import load_backend

    parameters: dict[str, Any] = {}
    data = getattr(args, "data", None)
    if data and definition.dataset_param and Path(data).is_file():  # uploaded by azure-ai-ml
        parameters[definition.dataset_param] = str(Path(data).resolve())
    if getattr(args, "model", None):  # batch_score --model NAME[:VERSION]: the job's model inputs
        from pipelines.local.workspace.registry import parse_model_ref

        name, version = parse_model_ref(args.model)
        parameters["model_name"] = name
        if version is not None:
            parameters["model_version"] = version
    result = load_backend(args.target).submit(definition, parameters)
    if args.json:
        print_json(result)
    else:
        print(f"submitted {result['run_id']} ({result['status']}): {result['url']}")
    return 0


def _export(definition: PipelineDefinition, args: argparse.Namespace, model_lookup: bool) -> int:
    from pipelines.v2.export import export_definition, report

    report(export_definition(definition, args.out, model_lookup), args.json)
    return 0


def _show_model(ref: str, as_json: bool) -> int:
    from pipelines.local.workspace import registry

    details = registry.model_details(*registry.parse_model_ref(ref))
    if as_json:
        print_json(details)
        return 0
    print(f"{details['name']}:{details['version']}  run {details['run_id'] or '-'}")
    print(f"  data sha256: {details['data_sha256'] or '-'}")
    print("  metrics: " + (", ".join(f"{k}={v:.4f}" for k, v in details["metrics"].items()) or "none"))
    skip = {"data_sha256", "run_id", "figures", "figures_run_id"}
    print("  tags: " + (", ".join(f"{k}={v}" for k, v in details["tags"].items() if k not in skip) or "none"))
    print("  figures:" + ("" if details["figures"] else " none (registered before figures were logged)"))
    for name, path in details["figures"].items():
        print(f"    {name}: {path}")
    return 0


def _models(as_json: bool) -> int:
    from pipelines.local.workspace import registry

    models = registry.list_models()
    if as_json:
        print_json([m.__dict__ for m in models])
        return 0
    if not models:
        print("no registered models (train one: python -m pipelines.train run)")
    for m in models:
        metrics = ", ".join(f"{k}={v}" for k, v in sorted(m.tags.items()) if k.startswith("test_"))
        print(f"{m.name}:{m.version}  run {m.tags.get('run_id', '-')}  {metrics}")
    return 0
