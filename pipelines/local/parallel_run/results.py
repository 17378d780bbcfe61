"""What a job leaves behind: the per-mini-batch bookkeeping, the published output and Azure's report files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.atomic_files import write_text
from pipelines.local.parallel_run.mini_batches import MiniBatch
from pipelines.local.parallel_run.options import JobResult, MiniBatchFailure, ParallelRunOptions


@dataclass
class Record:
    """The parent's bookkeeping for one mini-batch."""

    batch: MiniBatch
    tries: int = 0
    items: int = -1
    results: int = 0
    seconds: float = 0.0
    status: str = "pending"  # pending, running, succeeded, failed
    worker: str = ""
    errors: list[str] = field(default_factory=list)
    note: str = ""


class HeaderedError(Exception):
    """The headered file cannot be written (the results' columns do not fit one table)."""


def unified_schema(schemas: list[Any]) -> Any:
    """One schema for all the parts: types promoted where they can be, text where the parts disagree."""
    import pyarrow as pa

    try:
        return pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # e.g. int64 in early mini-batches, text in later ones
        names = list(dict.fromkeys(name for schema in schemas for name in schema.names))
        fields = []
        for name in names:
            own = [pa.schema([schema.field(name)]) for schema in schemas if name in schema.names]
            try:
                fields.append(pa.unify_schemas(own, promote_options="permissive").field(name))
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                fields.append(pa.field(name, pa.string()))
        return pa.schema(fields)


class JobOutput:
    """The output and report half of the scheduler (``job.Scheduler``): it publishes the results the
    workers staged and writes the report from the scheduler's records and counters."""

    options: ParallelRunOptions
    records: list[Record]
    output_dir: Path
    report_dir: Path
    staging_dir: Path
    headered_error: str
    failed_items: int
    failed_batches: int
    items_done: int
    rows_done: int
    n_workers: int
    threads: int
    started: float

    def _say(self, text: str) -> None:  # pragma: no cover - the scheduler's own
        raise NotImplementedError

    def _publish_output(self) -> tuple[Path | None, Path | None]:
        if self.options.output_action != "append_row":
            return None, None
        target = self.output_dir / self.options.append_file_name
        tmp = self.staging_dir / f".{target.name}.tmp"
        done = [r for r in self.records if r.status == "succeeded"]
        with open(tmp, "wb") as out:
            for record in done:
                part = self.staging_dir / f"mb-{record.batch.id:08d}.txt"
                if part.exists():
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
        headered = None
        if self.options.headered_output:
            try:
                headered = self._publish_headered(done)
            except HeaderedError as exc:
                self.headered_error = str(exc)
                self._say(f"warning: {self.headered_error}; {target.name} is complete")
        os.replace(tmp, target)
        return target, headered

    def _publish_headered(self, done: list[Record]) -> Path:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        stem = Path(self.options.append_file_name).stem
        target = self.output_dir / f"{stem}.{self.options.headered_output}"
        failed = sorted(self.staging_dir.glob("mb-*.parquet.error"))
        if failed:
            raise HeaderedError(f"{target.name} was not written: {failed[0].read_text().strip()}")
        parts = [self.staging_dir / f"mb-{r.batch.id:08d}.parquet" for r in done]
        parts = [p for p in parts if p.exists()]
        tmp = self.staging_dir / f".headered-{target.name}.tmp"  # never the append_row file's temp name
        try:
            schema = unified_schema([pq.read_schema(p) for p in parts])
            if self.options.headered_output == "parquet":
                with pq.ParquetWriter(tmp, schema) as writer:
                    for part in parts:
                        writer.write_table(pq.read_table(part).cast(schema))
            else:
                with open(tmp, "wb") as out, pacsv.CSVWriter(out, schema) as writer:
                    for part in parts:
                        writer.write_table(pq.read_table(part).cast(schema))
        except (pa.ArrowException, ValueError, TypeError) as exc:
            tmp.unlink(missing_ok=True)
            raise HeaderedError(f"{target.name} was not written: {str(exc).splitlines()[0]}") from None
        os.replace(tmp, target)
        return target

    def _cleanup_staging(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def _result(self, abort_reason: str, output_file: Path | None, headered_file: Path | None) -> JobResult:
        seconds = time.perf_counter() - self.started
        failed = [r for r in self.records if r.status == "failed" or (abort_reason and r.errors)]
        failures = tuple(
            MiniBatchFailure(
                id=r.batch.id, source=r.batch.describe(), tries=r.tries, items=r.items, error=r.errors[0]
            )
            for r in failed
            if r.errors
        ) + tuple(  # succeeded, but with failed items: the error_threshold counts those
            MiniBatchFailure(
                id=r.batch.id, source=r.batch.describe(), tries=r.tries, items=r.items, error=partial(r)
            )
            for r in self.records
            if r.status == "succeeded" and r.items > r.results
        )
        total_items = sum(max(r.items, 0) for r in self.records)
        if abort_reason:
            message = f"job aborted: {abort_reason}"
        else:
            message = (
                f"{len(self.records) - self.failed_batches}/{len(self.records)} mini-batches succeeded, "
                f"{self.failed_items} failed items"
            )
        return JobResult(
            succeeded=not abort_reason,
            message=message,
            mini_batches=len(self.records),
            failed_mini_batches=self.failed_batches,
            items=total_items,
            failed_items=self.failed_items,
            result_rows=self.rows_done,
            seconds=round(seconds, 3),
            rows_per_second=round(self.items_done / seconds, 1) if seconds > 0 else 0.0,
            workers=self.n_workers,
            threads_per_worker=self.threads,
            output_dir=self.output_dir,
            output_file=output_file,
            headered_file=headered_file,
            report_dir=self.report_dir,
            failures=failures,
            headered_error=self.headered_error,
        )

    def _write_report(self, result: JobResult) -> None:
        logs = self.report_dir / "logs"
        lines = [
            f"{result.status}: {result.message}",
            f"mini-batches: {result.mini_batches} ({result.failed_mini_batches} failed)",
            f"items: {result.items} ({result.failed_items} failed), result rows: {result.result_rows}",
            f"time: {result.seconds:.2f} s, {result.rows_per_second:,.0f} items/s, "
            f"{result.workers} workers x {result.threads_per_worker} threads",
            f"output: {result.output_file or '(none)'}",
        ]
        write_text(logs / "job_result.txt", "\n".join(lines) + "\n")
        write_text(logs / "job_result.json", json.dumps(result.to_dict(), indent=2) + "\n")
        error_lines = []
        for r in self.records:
            if r.errors:
                error_lines.append(f"mini-batch {r.batch.id} ({r.batch.describe()}), status {r.status}:")
                error_lines += [f"  try {i}: {e}" for i, e in enumerate(r.errors, 1)]
            elif r.status == "succeeded" and r.items > r.results:
                error_lines.append(f"mini-batch {r.batch.id} ({r.batch.describe()}): {partial(r)}")
        if error_lines:
            write_text(logs / "job_error.txt", "\n".join(error_lines) + "\n")
        with open(logs / "processed_mini-batches.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["mini_batch_id", "source", "status", "tries", "items", "succeeded_items", "failed_items",
                 "seconds", "worker", "first_error", "note"]
            )  # fmt: skip
            for r in self.records:
                succeeded = r.results if r.status == "succeeded" else 0
                failed = max(r.items - succeeded, 0) if r.status in ("succeeded", "failed") else 0
                writer.writerow(
                    [r.batch.id, r.batch.describe(), r.status, r.tries, max(r.items, 0), succeeded, failed,
                     f"{r.seconds:.3f}", r.worker, r.errors[0] if r.errors else "", r.note]
                )  # fmt: skip


def partial(record: Record) -> str:
    """Why a mini-batch that ran has failed items."""
    reason = record.note or "run() returned fewer results than items"
    return f"{record.items - record.results} of {record.items} items failed: {reason}"
