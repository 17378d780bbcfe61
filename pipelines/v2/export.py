"""Export SDK v1 pipelines as Azure ML SDK v2 YAML: the ``export`` verb and the writers the CLIs share.

    python -m pipelines.v2 export FILE.py:CALLABLE --out DIR [--json]

CALLABLE returns a list of SDK v1 steps (PythonScriptStep, AutoMLStep, ParallelRunStep). Every file is
written to a temporary folder beside DIR, loaded, validated and round-tripped with azure-ai-ml, and only
then moved into DIR: on any error nothing is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.plan import PlanError
from pipelines.errors import UserError, print_json
from pipelines.v2.curated import curated_reference
from pipelines.v2.translate import SCHEMA, Context, Translation, component_name, translate

WEEK_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def check_out_dir(out: Path) -> Path:
    """The absolute output folder; UserError if it (or a parent) is a file."""
    out = out.expanduser().resolve()
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            raise UserError(
                f"--out {out}: {path} is a file, not a folder", hint="pass a folder for the YAML files"
            )
    return out


# v1 step kinds the translation has no v2 node for, and what to use instead
INSTEAD = {
    "CommandStep": "a PythonScriptStep (it becomes a v2 command component)",
    "HyperDriveStep": "a v2 sweep job, written by hand",
    "DataTransferStep": "a v2 data import or a PythonScriptStep that copies the data",
    "DatabricksStep": "a v2 Spark component, written by hand",
    "AdlaStep": "a PythonScriptStep",
    "MpiStep": "a PythonScriptStep with a distribution set on its v2 command component",
    "EstimatorStep": "a PythonScriptStep",
    "ModuleStep": "the PythonScriptSteps the module runs",
    "SynapseSparkStep": "a v2 Spark component, written by hand",
}


def plan_of(steps: Any) -> Any:
    """The plan of SDK v1 steps; an unsupported step kind or a PlanError becomes a one-line UserError."""
    from azureml.pipeline.steps import AutoMLStep, ParallelRunStep, PythonScriptStep

    from pipelines.core import v1_reader

    for step in v1_reader._flatten(steps)[0]:
        if type(step) not in (PythonScriptStep, AutoMLStep, ParallelRunStep):
            kind = type(step).__name__
            instead = INSTEAD.get(kind, "a PythonScriptStep, AutoMLStep or ParallelRunStep")
            raise UserError(
                f"step {getattr(step, 'name', step)!r}: {kind} has no SDK v2 translation",
                hint=f"use {instead}",
            )

    try:
        return v1_reader.read_steps(steps)
    except PlanError as exc:
        raise UserError(str(exc), hint="see the v1 -> v2 section of the README for what maps") from None


def translate_plan(plan: Any, ctx: Context) -> Translation:
    try:
        return translate(plan, ctx)
    except PlanError as exc:
        raise UserError(str(exc)) from None


def schedule_document(
    translation: Translation, recurrence: Any, now: dt.datetime | None = None
) -> dict[str, Any]:
    """A v1 ScheduleRecurrence as a v2 JobSchedule with a RecurrenceTrigger that references the job file.

    The start time is the next whole minute (from ``now``, UTC), so creating it never runs the job at once.
    The job is referenced, not inlined: azure-ai-ml 1.35.2 does not load a schedule with an inline pipeline job.
    """
    from pipelines.v2.translate import FREQUENCIES

    now = (now or dt.datetime.now(dt.UTC)).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    pattern: dict[str, Any] = {}
    if recurrence.hours:
        pattern["hours"] = list(recurrence.hours)
    if recurrence.minutes:
        pattern["minutes"] = list(recurrence.minutes)
    if recurrence.week_days:
        pattern["week_days"] = [d.lower() for d in recurrence.week_days]
    if pattern:
        pattern.setdefault("hours", [0])
        pattern.setdefault("minutes", [0])
    zone = getattr(recurrence, "time_zone", None)
    trigger: dict[str, Any] = {
        "type": "recurrence",
        "frequency": FREQUENCIES[recurrence.frequency],
        "interval": int(recurrence.interval),
        "start_time": (recurrence.start_time or now.strftime("%Y-%m-%dT%H:%M:%S")),
        "time_zone": getattr(zone, "value", zone) or "UTC",
    }
    if pattern:
        trigger["schedule"] = pattern
    return {
        "$schema": SCHEMA.format("schedule"),
        "name": f"{translation.name}-schedule",
        "display_name": f"{translation.name} schedule",
        "trigger": trigger,
        "create_job": f"./{translation.job_file}",
    }


def endpoint_documents(translation: Translation, compute: str | None) -> dict[str, dict[str, Any]]:
    """A batch endpoint (Entra token auth: batch endpoints have no keys) and a pipeline component deployment."""
    endpoint = translation.name[:32]
    deployment: dict[str, Any] = {
        "$schema": SCHEMA.format("pipelineComponentBatchDeployment"),
        "name": f"{translation.name}-1"[:32],
        "endpoint_name": endpoint,
        "type": "pipeline",
        "component": f"./{translation.component_file}",
        "settings": {"continue_on_step_failure": False},
    }
    if compute:
        deployment["settings"]["default_compute"] = compute
    return {
        f"{translation.name}.batch-endpoint.yml": {
            "$schema": SCHEMA.format("batchEndpoint"),
            "name": endpoint,
            "description": f"{translation.name}: the v1 PipelineEndpoint's counterpart",
            "auth_mode": "aad_token",
        },
        f"{translation.name}.batch-deployment.yml": deployment,
    }


def write_verified(
    out: Path, translation: Translation, extra: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """Write the documents into a temporary sibling of ``out``, verify them all, then move them into ``out``."""
    from pipelines.v2 import verify

    documents = {**translation.files, **(extra or {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for rel, document in documents.items():
            _write(staging / rel, yaml.safe_dump(document, sort_keys=False, width=120))
        for rel, text in translation.texts.items():
            _write(staging / rel, text)
        for rel, source in translation.copies.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / rel)
        try:
            verify.verify_folder(staging, list(documents))
        except verify.VerifyError as exc:
            raise UserError(str(exc), hint="this is a translation bug: report it with the v1 steps") from None
        written = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        for rel in written:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, out / rel)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def report(result: dict[str, Any], as_json: bool) -> None:
    """Print what was written, what was mapped, and every difference that could not be carried over."""
    if as_json:
        print_json(result)
        return
    print(f"wrote {len(result['files'])} files to {result['out']}")
    for line in result["files"]:
        print(f"  {line}")
    print("mapped:")
    for line in result["mapped"]:
        print(f"  {line}")
    print("differences v2 cannot carry over:" if result["differences"] else "differences: none")
    for line in result["differences"]:
        print(f"  {line}")


def export_definition(definition: Any, out: Path, model_lookup: bool = False) -> dict[str, Any]:
    """A pipeline module's definition as v2 files: job, components, pipeline component, endpoint, schedule.

    As the v1 definitions do on Azure, a step reading AutoML's best model runs in the curated AutoML environment;
    ``model_lookup``: the ParallelRunStep's entry script looks ``--model_name`` up in the MLflow registry.
    """
    from pipelines.definitions import AZURE_AUTOML_ENVIRONMENT, ENVIRONMENTS_DIR

    out = check_out_dir(out)
    plan = plan_of(definition.steps)
    compute = definition.settings.compute_name or None
    ctx = Context(definition.name, definition.description, definition.experiment_name, out, ENVIRONMENTS_DIR,
                  compute, mlflow_model_lookup=model_lookup,
                  automl_model_environment=curated_reference(AZURE_AUTOML_ENVIRONMENT))  # fmt: skip
    translation = translate_plan(plan, ctx)
    extra = endpoint_documents(translation, compute)
    if definition.schedule is not None:
        extra[f"{translation.name}.schedule.yml"] = schedule_document(translation, definition.schedule)
        translation.mapped.append(
            "ScheduleRecurrence -> JobSchedule with a RecurrenceTrigger (start: next minute)"
        )
    translation.mapped.append(
        "PublishedPipeline + PipelineEndpoint -> pipeline component + batch endpoint + PipelineComponentBatchDeployment"
    )
    translation.differences.append(
        "the batch endpoint authenticates with a Microsoft Entra token; batch endpoints have no keys"
    )
    files = write_verified(out, translation, extra)
    return _result(out, files, translation)


def _result(out: Path, files: list[str], translation: Translation) -> dict[str, Any]:
    return {
        "out": str(out),
        "files": files,
        "job": translation.job_file,
        "mapped": translation.mapped,
        "differences": translation.differences,
    }


def load_callable(spec: str) -> Any:
    """The steps returned by ``FILE.py:CALLABLE``; UserError for a missing file or callable, or no steps."""
    file_text, _, name = spec.rpartition(":")
    if not file_text or not name:
        raise UserError(f"{spec!r} is not FILE.py:CALLABLE", hint="e.g. my_pipeline.py:build_steps")
    path = Path(file_text).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"no file {path}", hint="pass the Python file that builds the v1 steps")
    module_spec = importlib.util.spec_from_file_location(f"_v1_export_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(path.parent))
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: say what broke, in one line
        raise UserError(
            f"importing {path.name} failed: {type(exc).__name__}: {exc}", hint="run it with python"
        ) from None
    finally:
        sys.path.remove(str(path.parent))
    func = getattr(module, name, None)
    if not callable(func):
        raise UserError(
            f"{path.name} has no callable {name!r}", hint="name a function that returns the v1 steps"
        )
    try:
        steps = func()
    except Exception as exc:
        raise UserError(
            f"{name}() raised {type(exc).__name__}: {exc}", hint="fix the function that builds the steps"
        ) from None
    flat = steps if isinstance(steps, list | tuple) else [steps] if steps is not None else []
    if not flat:
        raise UserError(f"{name}() returned no steps", hint="return a list of SDK v1 steps")
    from azureml.pipeline.core import StepSequence
    from azureml.pipeline.core.builder import PipelineStep

    for step in flat:
        if not isinstance(step, PipelineStep | StepSequence | list | tuple):
            raise UserError(
                f"{name}() returned a {type(step).__name__}, not an SDK v1 step",
                hint="return PythonScriptStep, AutoMLStep and ParallelRunStep objects",
            )
    return steps, path.stem


def export_callable(spec: str, out: Path) -> dict[str, Any]:
    """``pipelines.v2 export``: anyone's v1 steps as v2 files."""
    out = check_out_dir(out)
    steps, stem = load_callable(spec)
    plan = plan_of(steps)
    name = component_name(stem, "").strip("_").replace("_", "-") or "pipeline"
    from pipelines.definitions import ENVIRONMENTS_DIR

    computes = {s.compute_target for s in plan.steps if s.compute_target}
    compute = next(iter(computes)) if len(computes) == 1 else None
    ctx = Context(
        name, f"exported from {Path(spec.rpartition(':')[0]).name}", name, out, ENVIRONMENTS_DIR, compute
    )
    translation = translate_plan(plan, ctx)
    files = write_verified(out, translation)
    return _result(out, files, translation)


def parser(verb: str = "export") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m pipelines.v2 {verb}", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "callable", metavar="FILE.py:CALLABLE", help="a function returning a list of SDK v1 steps"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the YAML files")
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    report(export_callable(args.callable, args.out), args.json)
    return 0
