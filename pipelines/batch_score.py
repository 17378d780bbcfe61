"""The batch-inference pipeline: ParallelRunStep (scoring/scoring.py) -> collect predictions (CSV + Parquet).

python -m pipelines.batch_score run --input NAME|PATH|URL [--model NAME[:VERSION]] [--output DIR]
                                    [--set NAME=VALUE]... [--json]
python -m pipelines.batch_score show [--json]
python -m pipelines.batch_score publish [--target local|azure] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.cli import exit_now, pipeline_cli
from pipelines.core.definition import PipelineDefinition, RunCheck
from pipelines.definitions import SCORING_DIR, STEPS_DIR, environment, recurrence, run_config
from pipelines.errors import UserError
from pipelines.settings import Settings

NAME = "amlops-batch-score"
PREDICTION_COLUMN = "prediction"
FAILED_ROWS_FILE = "failed_rows.csv"
CHECK_BLOCK = 8 * 1024**2  # bytes of input read at a time by the check before a run


@dataclass(frozen=True)
class RefusedRow:
    """An input row the model's input rule refuses: its file, its row (1 = the first after the header), why."""

    file: Path
    row: int
    column: str
    problem: str


def build(
    settings: Settings,
    data: str | None = None,
    model_version: int = 0,
    compute_targets: dict[str, Any] | None = None,
) -> PipelineDefinition:
    """The batch pipeline's SDK objects: a ParallelRunStep and the step that collects its output.

    ``compute_targets``: compute names to ``ComputeTarget`` objects, as in ``pipelines.train.build``
    (with the object, the SDK also checks ``node_count`` against the cluster's size).
    """
    from azureml.data import OutputFileDatasetConfig

    compute = (compute_targets or {}).get(settings.batch_compute_name, settings.batch_compute_name)
    params = _parameters(settings, data, model_version)
    scores = OutputFileDatasetConfig(name="scores")
    predictions = OutputFileDatasetConfig(name="predictions")
    score = _score_step(settings, params, scores, compute)
    collect = _collect_step(settings, scores, predictions, compute)
    return PipelineDefinition(
        name=NAME,
        description=f"Batch-score with {settings.model_name}: ParallelRunStep -> headered CSV/Parquet",
        steps=[score, collect],
        parameters=params,
        experiment_name=settings.batch_experiment_name,
        schedule=recurrence(settings),
        settings=settings,
        module="pipelines.batch_score",
        dataset_param="input_dataset",
        with_compute_targets=lambda targets: build(settings, data, model_version, targets),
    )


def _parameters(settings: Settings, data: str | None, model_version: int) -> dict[str, Any]:
    """The pipeline parameters a run may override: the model, the mini-batch size, the input dataset."""
    from azureml.core import Dataset
    from azureml.pipeline.core import PipelineParameter

    from pipelines.definitions import dataset_url

    params = {
        "model_name": PipelineParameter("model_name", default_value=settings.model_name),
        "model_version": PipelineParameter("model_version", default_value=model_version),
        "mini_batch_size": PipelineParameter("mini_batch_size", default_value=settings.mini_batch_size),
    }
    tabular = Dataset.Tabular.from_delimited_files(
        dataset_url(data or settings.dataset), validate=False, infer_column_types=False
    )
    params["input_dataset"] = PipelineParameter("input_dataset", default_value=tabular)
    return params


def _parallel_run_config(settings: Settings, params: dict[str, Any], compute: Any) -> Any:
    """The ParallelRunConfig, checked by the SDK; UserError with the setting to change."""
    from azureml.pipeline.steps import ParallelRunConfig

    if settings.node_count < 1:  # the SDK checks it only against an AmlCompute object's max_nodes
        raise UserError(
            f"node_count must be at least 1, got {settings.node_count}", hint="e.g. --set node_count=1"
        )
    # the SDK's own checks of the options (mini_batch_size, a PipelineParameter, is checked with the settings)
    try:
        return ParallelRunConfig(
            source_directory=str(SCORING_DIR),
            entry_script="scoring.py",
            environment=_scoring_environment(settings, compute),
            compute_target=compute,
            node_count=settings.node_count,
            process_count_per_node=settings.process_count_per_node,
            mini_batch_size=params["mini_batch_size"],
            error_threshold=settings.error_threshold,
            output_action="append_row",
            append_row_file_name="parallel_run_step.txt",
            run_invocation_timeout=settings.run_invocation_timeout,
            run_max_try=settings.run_max_try,
            logging_level="INFO",
        )
    except ValueError as exc:
        raise UserError(str(exc), hint=_option_hint(str(exc))) from None


def _score_step(settings: Settings, params: dict[str, Any], scores: Any, compute: Any) -> Any:
    from azureml.data.dataset_consumption_config import DatasetConsumptionConfig
    from azureml.pipeline.steps import ParallelRunStep

    batch_input = DatasetConsumptionConfig("batch_input", params["input_dataset"])
    return ParallelRunStep(
        name="batch-score",
        parallel_run_config=_parallel_run_config(settings, params, compute),
        inputs=[batch_input],
        output=scores,
        arguments=[
            "--model_name", params["model_name"],
            "--model_version", params["model_version"],
            "--key_columns", settings.key_columns,
            "--prediction_column", PREDICTION_COLUMN,
        ],
        allow_reuse=False,
    )  # fmt: skip


def _collect_step(settings: Settings, scores: Any, predictions: Any, compute: Any) -> Any:
    from azureml.pipeline.steps import PythonScriptStep

    return PythonScriptStep(
        name="collect",
        script_name="batch_output.py",
        source_directory=str(STEPS_DIR),
        arguments=[
            "--scores", scores.as_input("scores"),
            "--key_columns", settings.key_columns,
            "--prediction_column", PREDICTION_COLUMN,
            "--append_row_file_name", "parallel_run_step.txt",
            "--predictions", predictions,
        ],
        compute_target=compute,
        runconfig=run_config("batch"),
        allow_reuse=False,
    )  # fmt: skip


def _scoring_environment(settings: Settings, compute: Any) -> Any:
    """environments/batch.yml, or the ``batch_environment``: on Azure (a ComputeTarget object) the workspace's,
    read from it; offline an Environment of that name alone (a v2 export references it, as a curated one in
    the azureml registry; the local engine runs every step in the project's environment)."""
    if settings.batch_environment:
        from azureml.core import Environment

        if isinstance(compute, str):
            return Environment(settings.batch_environment)
        return Environment.get(compute.workspace, settings.batch_environment)
    return environment("batch")


def _option_hint(message: str) -> str:
    """What to set instead, for the ParallelRunConfig option an SDK error names."""
    defaults = Settings()
    for name in ("process_count_per_node", "run_max_try", "run_invocation_timeout", "error_threshold"):
        if name in message:
            ignore = " (-1 ignores failed items)" if name == "error_threshold" else ""
            return f"e.g. --set {name}={getattr(defaults, name)}{ignore}"
    return "see --help for the settings"


def check_run(check: RunCheck) -> None:
    """Before a local run starts: the key columns are in the input, --output can become a folder outside
    the input, and the input's rows follow the model's input rule (up to error_threshold may not)."""
    keys = [k.strip() for k in check.settings.key_columns.split(",") if k.strip()]
    missing = [k for k in keys if k not in check.columns]
    if missing:
        raise UserError(
            f"key column(s) {', '.join(missing)} not in {check.data_file.name} "
            f"(columns: {', '.join(check.columns)})",
            hint="name the input columns to copy next to each prediction with --set key_columns=COL1,COL2",
        )
    if check.args.output:
        check_output_folder(Path(check.args.output), check.data_path)
    if check.model is not None and check.data_path is not None:
        check.args.refused_rows = check_rows(check.data_path, check.model, check.settings.error_threshold)


def check_output_folder(target: Path, data_path: Path | None = None) -> None:
    """UserError unless ``target`` is a folder or can be made one (probed in its nearest existing parent)
    outside the input folder ``data_path`` (the ParallelRunStep engine's own rule for its output)."""
    from pipelines.local.parallel_run import inputs

    target = target.expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise UserError(
            f"--output {target} is a file, not a folder",
            hint="pass a folder for the predictions (it is created if missing), or move the file away",
        )
    if data_path is not None:
        try:
            inputs.check_output_folder(target, "--output", [data_path])
        except UserError as exc:
            raise UserError(f"--output {exc}", hint=exc.hint) from None
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"--output {target}: {existing} is a file, not a folder", hint="pass another folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".amlops-output-check-", dir=existing))
    except OSError as exc:
        raise UserError(
            f"--output {target}: cannot write in {existing} ({exc.strerror})",
            hint="pass a folder you can write to",
        ) from None


def check_rows(data_path: Path, model: Any, error_threshold: int) -> list[RefusedRow]:
    """The input rows that break the model's input rule (``scoring/input_rules.py``, as the entry script
    applies it), read as the ParallelRunStep workers read them; UserError naming the first one when there
    are more than ``error_threshold`` (-1: any number is allowed, and all are listed)."""
    from pipelines.datasets import csv_files
    from pipelines.local.parallel_run.mini_batches import read_tabular, tabular_mini_batches
    from scoring.input_rules import InputError, check_frame

    columns, bad_date = _recorded_rule(model) or _loaded_rule(model)
    if columns is None:  # no typed signature: the model's own checks decide, in the run
        return []
    limit = None if error_threshold < 0 else error_threshold  # -1: any (below -1 is refused when built)
    refused: list[RefusedRow] = []
    for file in csv_files(data_path):
        offset = 0
        for batch in tabular_mini_batches([file], CHECK_BLOCK):
            frame = read_tabular(batch, threads=2)
            try:
                _, _, bad = check_frame(frame, columns, bad_date)
            except InputError as exc:
                raise UserError(
                    f"{file.name}: {exc}", hint="score data with the columns the model was trained on"
                ) from None
            refused += [RefusedRow(file, offset + b.row + 1, b.column, b.problem) for b in bad]
            offset += len(frame)
            if limit is not None and len(refused) > limit:
                first = refused[0]
                raise UserError(
                    f"{first.file.name} row {first.row}, column "
                    f"{first.column!r}: {first.problem} (at least {len(refused)} rows break the model's input "
                    f"rule; error_threshold is {error_threshold})",
                    hint="fix those rows, or let up to N rows go unscored with --set error_threshold=N "
                    "(-1: any number; they are listed in failed_rows.csv)",
                )
    return refused


def _recorded_rule(model: Any) -> tuple[Any, Any] | None:
    """The model's input rule as its ``MLmodel`` file records it (the signature's typed columns and the
    register step's ``date_rule``), without importing MLflow or loading the model; None if not recorded."""
    import json

    from pipelines.local.workspace import registry
    from scoring.input_rules import Column, kind_of
    from steps.raw_dates import first_bad_date_in

    meta = registry.mlmodel_file(model.name, model.version) or {}
    rule = (meta.get("metadata") or {}).get("date_rule")
    try:
        inputs = json.loads(meta["signature"]["inputs"])
        columns = tuple(Column(c["name"], kind_of(str(c["type"]))) for c in inputs)
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(rule, dict) or not columns or any(not isinstance(c.name, str) for c in columns):
        return None

    return columns, functools.partial(first_bad_date_in, rule=rule)


def _loaded_rule(model: Any) -> tuple[Any, Any]:
    """The input rule of the loaded model (its pyfunc signature and its own ``bad_date``)."""
    import mlflow.pyfunc

    from pipelines.local.workspace import registry
    from scoring.input_rules import date_checker, signature_columns

    with _no_progress_bars():  # a refusal is one line
        _, model_dir = registry.materialize_model(model.name, model.version)
    loaded = mlflow.pyfunc.load_model(str(model_dir / model.name))
    return signature_columns(loaded), date_checker(loaded)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    saved = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = saved


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", dest="data", metavar="NAME|PATH|URL", help="the data to score (CSV or folder)"
    )
    parser.add_argument(
        "--model", metavar="NAME[:VERSION]", help="registered model (default: latest version)"
    )
    parser.add_argument("--output", metavar="DIR", help="also copy the predictions to this folder")


def _builder(settings: Settings, data: str | None, args: Any = None) -> PipelineDefinition:
    return build(settings, data)


def main(argv: list[str] | None = None) -> int:
    return pipeline_cli(prog="python -m pipelines.batch_score", doc=__doc__, build=_builder, argv=argv,
                        extra_run_args=_run_args, label_required=False, after_run=_copy_output,
                        check_run=check_run, model_lookup=True, setting_groups=("data", "model", "batch", "azure"))  # fmt: skip


def _copy_output(summary: dict[str, Any], args: argparse.Namespace) -> None:
    """``--output DIR``: copy the collected predictions there (the run folder keeps its own copy), with
    ``failed_rows.csv`` listing the rows left unscored, if any."""
    source = Path(summary["folder"]) / "outputs" / "predictions"
    summary["predictions"] = str(source)
    refused = getattr(args, "refused_rows", None)
    if refused and source.is_dir():
        report = source / FAILED_ROWS_FILE
        with open(report, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "row", "column", "problem"])
            writer.writerows([r.file.name, r.row, r.column, r.problem] for r in refused)
        summary["failed_rows"] = {"count": len(refused), "report": str(report)}
    if args.output and source.is_dir():
        target = Path(args.output).resolve()
        try:  # checked before the run; this fails only if the destination changed meanwhile
            target.mkdir(parents=True, exist_ok=True)
            for file in source.iterdir():
                shutil.copy2(file, target / file.name)
        except OSError as exc:
            raise UserError(
                f"run {summary['run_id']} completed, but copying its predictions to {target} failed: {exc}",
                hint=f"they are in {source}",
            ) from None
        summary["predictions"] = str(target)
        if "failed_rows" in summary:
            summary["failed_rows"]["report"] = str(target / FAILED_ROWS_FILE)


if __name__ == "__main__":
    exit_now(main())
