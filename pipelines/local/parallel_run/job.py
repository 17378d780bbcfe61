"""The local ParallelRunStep engine: run an SDK v1 entry script (``init()``/``run(mini_batch)``) on this machine.

Semantics follow ``ParallelRunConfig``'s docstrings (azureml-pipeline-steps 1.62):

- ``node_count × process_count_per_node`` worker processes, each a fresh interpreter (fork+exec, like
  multiprocessing's ``spawn``), with ``OMP_NUM_THREADS`` & co. set so that workers × threads ≤ cores;
  each calls ``init()`` once, then ``run(mini_batch)`` for as many mini-batches as it is given.
- TabularDataset (CSV) mini-batches are byte ranges of about ``mini_batch_size`` (default 1MB) that
  never cross a file; FileDataset mini-batches are lists of ``mini_batch_size`` paths (default 10).
  Workers read their own mini-batches; the parent only computes the ranges.
- ``partition_keys`` (CSV input): one mini-batch per distinct combination of the key columns' values
  (mini_batches.py), instead of ``mini_batch_size``; a ``run(mini_batch, mini_batch_context)`` gets the
  values as ``mini_batch_context.partition_key_value``.
- ``run()`` returns one element per processed item; failed items = len(mini_batch) − len(result). An
  exception, exceeding ``run_invocation_timeout`` (the worker is killed and replaced) or a crashing
  worker fails the mini-batch, which is retried up to ``run_max_try`` times in all. A mini-batch counts
  as failed once its last try failed (deterministic; Azure may also count it between tries).
- ``error_threshold`` (failed items), ``allowed_failed_count`` (failed mini-batches) and
  ``allowed_failed_percent`` (checked once all mini-batches are scheduled) abort the job when
  exceeded (−1, or 100 for the percent, ignores failures).
- ``append_row`` writes every result to one file (default ``parallel_run_step.txt``) in Azure's
  format: DataFrame rows space-separated without header, list items one per line. Workers write
  per-mini-batch part files; the parent concatenates them in mini-batch order into a temp file and
  renames it, so the output is complete or absent, and a re-run replaces it. Optionally also a
  headered ``.csv``/``.parquet`` beside it (``headered_output``). ``summary_only`` only counts.
- A report folder like Azure's: ``logs/job_result.txt``, ``logs/job_error.txt``,
  ``logs/processed_mini-batches.csv``, ``logs/job_result.json`` and the workers' logs under ``logs/user``.

Modules: options.py (the options and the result), inputs.py (entry script, input files, folders),
mini_batches.py, workers.py (the worker processes; worker.py is the process itself), this scheduler,
results.py (output and report) and cli.py (``python -m pipelines.local.parallel_run``).
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.local.parallel_run import SHIMS_DIR
from pipelines.local.parallel_run.inputs import (
    check_output_folders,
    count_items,
    files_of,
    input_files,
    locate_entry_script,
)
from pipelines.local.parallel_run.mini_batches import (
    Partitions,
    file_mini_batches,
    parse_mini_batch_size,
    read_partitions,
    tabular_mini_batches,
    write_partitions,
)
from pipelines.local.parallel_run.options import JobResult, ParallelRunOptions
from pipelines.local.parallel_run.results import JobOutput, Record
from pipelines.local.parallel_run.workers import THREAD_VARIABLES, Worker, cores
from pipelines.settings import PROJECT_ROOT


class _Abort(Exception):
    """A threshold was exceeded."""


class Scheduler(JobOutput):
    """Runs one job: starts the workers, hands out mini-batches, retries, counts and aborts; use ``run_parallel``."""

    def __init__(
        self,
        options: ParallelRunOptions,
        inputs: list[Path],
        output_dir: Path,
        report_dir: Path,
        progress: bool,
        canceled: Callable[[], bool] | None = None,
    ) -> None:
        self.options = options
        self.output_dir = output_dir
        self.report_dir = report_dir
        self.progress = progress
        self.canceled = canceled or (lambda: False)
        self.source_dir, self.entry_script = locate_entry_script(options)
        self.kind, self.files = input_files(inputs, options.input_kind)
        self.partitions: list[Partitions] = []
        if options.partition_keys:  # read and checked here, before any output; written in _loop (staging)
            if self.kind != "tabular":
                raise UserError(
                    "partition_keys needs CSV input; the local engine partitions rows by column values",
                    hint="pass CSV files, or drop partition_keys for file input",
                )
            # as on Azure, each input (dataset) is partitioned on its own
            self.partitions = [
                read_partitions(files_of(path, self.files), options.partition_keys) for path in inputs
            ]
            batches: Any = []
        else:
            size = parse_mini_batch_size(options.mini_batch_size, self.kind)
            batches = (
                tabular_mini_batches(self.files, size)
                if self.kind == "tabular"
                else file_mini_batches(self.files, size)
            )
        self.records = [Record(batch) for batch in batches]
        self.per_node = options.process_count_per_node or cores()
        self.n_workers = options.node_count * self.per_node
        self.threads = max(1, cores() // self.n_workers)
        self.base_env = self._worker_env()
        self.preload = preload_modules(self.entry_script)
        # Model.get_model_path's variables: sent to the workers (first line on their task pipe) once
        # resolved, which takes seconds of MLflow; the workers import their libraries meanwhile
        self.model_env: dict[str, str] | None = None if options.model else {}
        self.staging_dir = output_dir / f".parallel-run-staging-{uuid.uuid4().hex[:8]}"
        self.headered_error = ""
        self.failed_items = 0
        self.failed_batches = 0
        self.items_done = 0
        self.rows_done = 0
        self.started = time.perf_counter()
        self._last_progress = 0.0
        self.workers: list[Worker] = []

    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({name: str(self.threads) for name in THREAD_VARIABLES})
        paths = [str(PROJECT_ROOT), str(SHIMS_DIR)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env["AMLOPS_PRS_LOG_DIR"] = str(self.report_dir / "logs" / "user")
        env["AMLOPS_PRS_OUTPUT_DIR"] = str(self.output_dir)
        env["AMLOPS_PRS_WORKING_DIR"] = str(self.source_dir)
        env["AMLOPS_PRS_LOGGING_LEVEL"] = self.options.logging_level
        if self.options.model:
            from pipelines.local.workspace import registry

            env.update(registry.mlflow_env())
        env.update({k: str(v) for k, v in self.options.environment_variables.items()})
        return env

    # -- the job ---------------------------------------------------------------------------------

    def run(self) -> JobResult:
        self._prepare_folders()
        if self.n_workers * self.threads > cores():
            self._say(
                f"warning: {self.n_workers} workers on {cores()} cores: oversubscribed "
                "(each worker gets 1 thread; lower process_count_per_node to avoid it)"
            )
        abort_reason = ""
        try:
            clean = False
            try:
                self._loop()
                clean = True
            except _Abort as exc:
                abort_reason = str(exc)
            except BaseException:
                self._stop_workers(graceful=False)
                self._reap_workers()
                raise
            self._stop_workers(graceful=clean)
            try:  # published while the workers run shutdown() and exit
                if not abort_reason:
                    output_file, headered_file = self._publish_output()
                else:
                    output_file = headered_file = None
            finally:
                self._reap_workers()
        except BaseException:
            self._cleanup_staging()
            raise
        self._cleanup_staging()
        result = self._result(abort_reason, output_file, headered_file)
        self._write_report(result)
        return result

    def _prepare_folders(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name in (self.options.append_file_name, *self._headered_names()):
            (self.output_dir / name).unlink(missing_ok=True)  # a failed re-run must not leave old results
        for stale in self.output_dir.glob(".parallel-run-staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.staging_dir.mkdir()
        logs = self.report_dir / "logs"
        if logs.exists():
            shutil.rmtree(logs)
        logs.mkdir(parents=True)

    def _headered_names(self) -> list[str]:
        stem = Path(self.options.append_file_name).stem
        return [f"{stem}.csv", f"{stem}.parquet"]

    def _loop(self) -> None:
        if self.partitions:
            for index, partitions in enumerate(self.partitions):
                folder = self.staging_dir / "partitions" / str(index)
                batches = write_partitions(partitions, folder, first_id=len(self.records))
                self.records += [Record(batch) for batch in batches]
            self.partitions = []  # the rows are in the files now
        pending: deque[Record] = deque(self.records)
        scheduled = 0  # mini-batches dispatched at least once
        selector = selectors.DefaultSelector()
        self.workers = []
        for slot in range(self.n_workers):
            self._start_worker(slot, 0, selector)
        if self.model_env is None:
            self.model_env = self._resolve_model()
            for worker in self.workers:
                worker.send({"env": self.model_env})
        unfinished = len(self.records)
        while unfinished:
            if self.canceled():  # the job is stopped: workers are killed and no output is published
                raise KeyboardInterrupt
            for worker in list(self.workers):
                if worker.ready and worker.task is None and pending:
                    record = pending.popleft()
                    if record.tries == 0:
                        scheduled += 1
                    self._dispatch(worker, record)
            self._check_percent(scheduled)
            timeout = min((w.deadline for w in self.workers), default=float("inf")) - time.monotonic()
            events = selector.select(timeout=max(0.0, min(timeout, 0.5)))
            for key, _ in events:
                worker = key.data
                messages, eof = worker.read_events()
                for message in messages:
                    unfinished -= self._handle(worker, message, pending)
                if eof:
                    selector.unregister(worker.result_fd)
                    unfinished -= self._replace(worker, worker.exit_description(), selector, pending)
            now = time.monotonic()
            for worker in list(self.workers):
                if worker.task is not None and now > worker.deadline:
                    worker.kill()
                    selector.unregister(worker.result_fd)
                    timeout_s = self.options.run_invocation_timeout
                    reason = f"run() timed out after {timeout_s:g} s (run_invocation_timeout); worker killed"
                    unfinished -= self._replace(worker, reason, selector, pending)
            self._show_progress()
        self._check_percent(scheduled, final=True)
        self._show_progress(final=True)

    def _resolve_model(self) -> dict[str, str]:
        """Lay out every registered model for ``Model.get_model_path``, ``options.model`` as the default one.

        UserError if ``options.model`` is not registered.
        """
        from pipelines.local.workspace import registry

        assert self.options.model
        name, version = registry.parse_model_ref(self.options.model)
        return registry.every_model_env(name, version)

    def _start_worker(self, slot: int, generation: int, selector: selectors.BaseSelector) -> Worker:
        worker = Worker(slot, generation, self)
        selector.register(worker.result_fd, selectors.EVENT_READ, worker)
        if generation == 0:
            self.workers.append(worker)
        else:
            self.workers[slot] = worker
        return worker

    def _dispatch(self, worker: Worker, record: Record) -> None:
        record.tries += 1
        record.status = "running"
        record.worker = worker.name
        worker.task = record
        worker.deadline = time.monotonic() + self.options.run_invocation_timeout
        worker.send(record.batch.to_message())  # a dead worker is noticed by its pipe's EOF

    def _handle(self, worker: Worker, message: dict[str, Any], pending: deque[Record]) -> int:
        """Apply one worker event; returns how many mini-batches it finished (0 or 1)."""
        event = message.get("event")
        if event == "ready":
            worker.ready = True
        elif event == "bad_script":
            raise UserError(
                message["error"], hint="an entry script needs importable init() and run(mini_batch)"
            )
        elif event == "init_failed":
            log = (
                self.report_dir / "logs" / "user" / "stdout" / str(worker.node) / f"{worker.name}.stderr.txt"
            )
            # a replacement worker, mid-job: the job fails, with its report
            if any(r.tries for r in self.records):
                raise _Abort(
                    f"init() failed in a replacement worker: {message['error']} (traceback in {log})"
                )
            raise UserError(
                f"entry script {self.entry_script.name}: {message['error']}",
                hint=f"see the traceback in {log}",
            )
        elif event == "start" and worker.task is not None:
            worker.task.items = int(message["items"])
        elif event == "done" and worker.task is not None:
            record = worker.task
            worker.task = None
            worker.deadline = float("inf")
            record.seconds += float(message.get("seconds", 0.0))
            if int(message.get("items", -1)) >= 0:
                record.items = int(message["items"])
            if message.get("error"):
                return self._attempt_failed(record, message["error"], pending)
            record.status = "succeeded"
            record.results = int(message["results"])
            record.note = message.get("note") or ""
            failed = max(0, record.items - record.results)
            self.items_done += record.items
            self.rows_done += record.results
            if failed:
                self.failed_items += failed
                self._check_thresholds()
            return 1
        return 0

    def _replace(
        self, worker: Worker, reason: str, selector: selectors.BaseSelector, pending: deque[Record]
    ) -> int:
        """A worker died or was killed: fail its mini-batch (if any) and start a replacement."""
        worker.close()
        record = worker.task
        if not worker.ready and record is None:
            log = (
                self.report_dir / "logs" / "user" / "stdout" / str(worker.node) / f"{worker.name}.stderr.txt"
            )
            raise UserError(
                f"entry script {self.entry_script.name}: {reason} before init() completed",
                hint=f"see {log}",
            )
        self._start_worker(worker.slot, worker.generation + 1, selector)
        if record is None:
            return 0
        return self._attempt_failed(record, reason, pending)

    def _attempt_failed(self, record: Record, error: str, pending: deque[Record]) -> int:
        """One try of a mini-batch failed: retry it, or count it as failed once tries are used up."""
        record.errors.append(error)
        if record.tries < self.options.run_max_try:
            record.status = "pending"
            pending.append(record)
            return 0
        record.status = "failed"
        if record.items < 0:
            record.items = count_items(record.batch)
        self.items_done += record.items
        self.failed_batches += 1
        self.failed_items += record.items
        self._check_thresholds()
        return 1

    def _check_thresholds(self) -> None:
        opts = self.options
        if opts.error_threshold != -1 and self.failed_items > opts.error_threshold:
            raise _Abort(
                f"{self.failed_items} failed items exceed error_threshold={opts.error_threshold}",
            )
        if opts.allowed_failed_count not in (None, -1) and self.failed_batches > opts.allowed_failed_count:
            raise _Abort(
                f"{self.failed_batches} failed mini-batches exceed allowed_failed_count={opts.allowed_failed_count}"
            )

    def _check_percent(self, scheduled: int, final: bool = False) -> None:
        pct = self.options.allowed_failed_percent
        if pct is None or not self.records or (scheduled < len(self.records) and not final):
            return
        failed_pct = 100.0 * self.failed_batches / len(self.records)
        if failed_pct > pct:
            raise _Abort(f"{failed_pct:.1f}% failed mini-batches exceed allowed_failed_percent={pct:g}")

    def _stop_workers(self, graceful: bool) -> None:
        """Ask idle workers to finish (they call the script's shutdown()); kill the rest."""
        for worker in self.workers:
            if graceful and worker.task is None and worker.proc.poll() is None:
                worker.send({"stop": True})
            else:
                worker.kill()

    def _reap_workers(self) -> None:
        """Wait for the stopping workers (10 s at most, then kill them) and close their pipes."""
        deadline = time.monotonic() + 10
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
            worker.close()

    # -- terminal --------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def _show_progress(self, final: bool = False) -> None:
        if not self.progress:
            return
        now = time.perf_counter()
        tty = sys.stderr.isatty()
        if not final and now - self._last_progress < (0.5 if tty else 5.0):
            return
        self._last_progress = now
        done = sum(1 for r in self.records if r.status in ("succeeded", "failed"))
        elapsed = max(now - self.started, 1e-9)
        line = (
            f"parallel_run: {done}/{len(self.records)} mini-batches, {self.items_done:,} rows, "
            f"{self.items_done / elapsed:,.0f} rows/s, {self.failed_batches} failed mini-batches, "
            f"{self.failed_items} failed items"
        )
        end = "\n" if final or not tty else ""
        print(("\r" if tty else "") + line, end=end, file=sys.stderr, flush=True)


def run_parallel(
    options: ParallelRunOptions,
    inputs: list[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    report_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    canceled: Callable[[], bool] | None = None,
) -> JobResult:
    """Run ``options.entry_script`` over ``inputs`` as ParallelRunStep would; UserError on bad input.

    Returns a JobResult whether or not a failure threshold was exceeded (``succeeded`` says which).
    ``report_dir`` defaults to ``output_dir``'s sibling ``<output_dir>-report``. ``canceled`` is asked
    between events (at least twice a second): once it says True the workers are killed, nothing is
    published and KeyboardInterrupt is raised.
    """
    options.validate()
    out = Path(output_dir).resolve()
    report = Path(report_dir).resolve() if report_dir else out.with_name(out.name + "-report")
    paths = [Path(p).expanduser() for p in inputs]
    check_output_folders(out, report, paths)
    engine = Scheduler(options, paths, out, report, progress, canceled)
    return engine.run()


def preload_modules(entry_script: Path) -> list[str]:
    """Libraries the entry script imports, for its workers to import while the model is laid out."""
    from pipelines.local.runtime import warm

    return (warm.preload_modules(entry_script) or []) if warm.enabled() else []
