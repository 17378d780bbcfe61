"""A ParallelRunStep job's options (``ParallelRunConfig``'s, checked as the SDK checks them) and its result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core import defaults
from pipelines.errors import UserError

DEFAULT_APPEND_ROW_FILE = "parallel_run_step.txt"
OUTPUT_ACTIONS = ("append_row", "summary_only")
HEADERED_FORMATS = ("", "csv", "parquet")
EXIT_THRESHOLD = 1
_BAD_FILE_NAME = set('~"#%&*:<>?/\\{|}')


@dataclass(frozen=True)
class ParallelRunOptions:
    """The ``ParallelRunConfig`` options the local engine honours, plus the step's arguments and model."""

    entry_script: str
    source_directory: str | None = None
    mini_batch_size: str | int | None = None  # None: 1MB (tabular) or 10 files
    error_threshold: int = defaults.PRS_ERROR_THRESHOLD
    allowed_failed_count: int | None = None
    allowed_failed_percent: float | None = None
    run_max_try: int = defaults.PRS_RUN_MAX_TRY
    run_invocation_timeout: float = defaults.PRS_RUN_INVOCATION_TIMEOUT
    node_count: int = 1
    process_count_per_node: int | None = None  # None: one per core, as Azure does on CPU nodes
    output_action: str = "append_row"
    append_row_file_name: str | None = None
    logging_level: str = "INFO"
    environment_variables: dict[str, str] = field(default_factory=dict)
    arguments: tuple[str, ...] = ()  # the step's arguments: the workers' sys.argv[1:]
    model: str | None = None  # "name[:version]" from the local registry, for Model.get_model_path
    input_kind: str = "auto"  # "tabular" (CSV rows), "file" (paths) or "auto" (CSV -> tabular)
    headered_output: str = ""  # "", "csv" or "parquet": also write results with a header row
    partition_keys: tuple[str, ...] = ()  # columns whose values make the mini-batches (no mini_batch_size)

    @property
    def append_file_name(self) -> str:
        """The append_row output file name."""
        return self.append_row_file_name or DEFAULT_APPEND_ROW_FILE

    def validate(self) -> None:
        """Raise UserError for options the SDK's ParallelRunConfig would reject."""
        if self.output_action not in OUTPUT_ACTIONS:
            raise UserError(
                f"output_action {self.output_action!r} is not supported",
                hint="use append_row or summary_only",
            )
        for name in ("error_threshold", "allowed_failed_count"):
            value = getattr(self, name)
            if value is not None and value < -1:
                raise UserError(f"{name} must be -1 (ignore failures) or more, got {value}", hint="e.g. 10")
        if self.allowed_failed_percent is not None and not 0 <= self.allowed_failed_percent <= 100:
            raise UserError(
                f"allowed_failed_percent must be between 0 and 100, got {self.allowed_failed_percent}",
                hint="e.g. 10",
            )
        if self.partition_keys:
            if self.mini_batch_size not in (None, ""):
                raise UserError(
                    "mini_batch_size and partition_keys are mutually exclusive (as in ParallelRunConfig)",
                    hint="drop mini_batch_size: each partition is one mini-batch",
                )
            if not all(isinstance(k, str) and k for k in self.partition_keys):
                raise UserError(f"partition_keys must be column names, got {list(self.partition_keys)}",
                                hint='e.g. ["season"]')  # fmt: skip
            if len(set(self.partition_keys)) != len(self.partition_keys):
                raise UserError(
                    f"partition_keys repeats a key: {list(self.partition_keys)}", hint='e.g. ["season"]'
                )
        if self.run_max_try < 1:
            raise UserError(f"run_max_try must be at least 1, got {self.run_max_try}", hint="e.g. 3")
        if not self.run_invocation_timeout > 0:  # NaN too
            raise UserError("run_invocation_timeout must be positive", hint="seconds, e.g. 60")
        if self.node_count < 1 or (
            self.process_count_per_node is not None and self.process_count_per_node < 1
        ):
            raise UserError("node_count and process_count_per_node must be at least 1", hint="e.g. 1 and 2")
        if _BAD_FILE_NAME & set(self.append_file_name) or self.append_file_name.strip(".") == "":
            raise UserError(
                f"append_row_file_name {self.append_file_name!r} is not a valid file name",
                hint="use a plain name such as predictions.txt",
            )
        if self.input_kind not in ("auto", "tabular", "file"):
            raise UserError(f"input kind {self.input_kind!r} is not supported", hint="use tabular or file")
        if self.headered_output not in HEADERED_FORMATS:
            raise UserError(
                f"headered_output {self.headered_output!r} is not supported", hint="use csv or parquet"
            )
        headered = f"{Path(self.append_file_name).stem}.{self.headered_output}"
        if self.headered_output and self.output_action == "append_row" and headered == self.append_file_name:
            raise UserError(
                f"append_row_file_name {self.append_file_name!r} is also the headered {self.headered_output} file's"
                " name",
                hint=f"name the append_row file e.g. {Path(self.append_file_name).stem}.txt",
            )


@dataclass(frozen=True)
class MiniBatchFailure:
    """A mini-batch that failed all its tries (or the one that was running when the job aborted)."""

    id: int
    source: str
    tries: int
    items: int
    error: str


@dataclass(frozen=True)
class JobResult:
    """What a ParallelRunStep job did: counts, speed, where the output and the report are, what failed."""

    succeeded: bool
    message: str
    mini_batches: int
    failed_mini_batches: int
    items: int
    failed_items: int
    result_rows: int
    seconds: float
    rows_per_second: float
    workers: int
    threads_per_worker: int
    output_dir: Path
    output_file: Path | None
    headered_file: Path | None
    report_dir: Path
    failures: tuple[MiniBatchFailure, ...] = ()
    headered_error: str = ""  # why the headered file was not written (the append_row output still was)

    @property
    def status(self) -> str:
        return "Succeeded" if self.succeeded else "Failed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (paths as strings)."""
        out = asdict(self)
        out["status"] = self.status
        for key in ("output_dir", "output_file", "headered_file", "report_dir"):
            out[key] = str(out[key]) if out[key] is not None else None
        return out


def failure_summary(result: JobResult) -> str:
    """The terminal message for a failed job: what was exceeded, each failing mini-batch and its first error."""
    lines = [f"parallel_run failed: {result.message}"]
    for f in result.failures[:20]:
        lines.append(f"  mini-batch {f.id} ({f.source}, {f.items} items, {f.tries} tries): {f.error}")
    if len(result.failures) > 20:
        lines.append(f"  ... and {len(result.failures) - 20} more")
    lines.append(f"report: {result.report_dir / 'logs'}")
    return "\n".join(lines)
