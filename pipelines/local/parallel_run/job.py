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

Command line (exit 0 success, 1 threshold exceeded, 2 bad input)::

    python -m pipelines.local.parallel_run scoring/scoring.py --input data.csv --model bike-demand \\
        --mini-batch-size 1MB --process-count-per-node 2 -- --model_name bike-demand
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import UserError, cli_main, print_json
from pipelines.local.parallel_run import SHIMS_DIR  # noqa: E402
from pipelines.local.parallel_run.mini_batches import (
    MiniBatch,
    Partitions,
    file_mini_batches,
    parse_mini_batch_size,
    read_partitions,
    tabular_mini_batches,
    write_partitions,
)
from pipelines.local.parallel_run.worker import CONFIG_ENV
from pipelines.settings import PROJECT_ROOT  # noqa: E402

DEFAULT_APPEND_ROW_FILE = "parallel_run_step.txt"
OUTPUT_ACTIONS = ("append_row", "summary_only")
HEADERED_FORMATS = ("", "csv", "parquet")
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
EXIT_THRESHOLD = 1
_BAD_FILE_NAME = set('~"#%&*:<>?/\\{|}')


@dataclass(frozen=True)
class ParallelRunOptions:
    """The ``ParallelRunConfig`` options the local engine honours, plus the step's arguments and model."""

    entry_script: str
    source_directory: str | None = None
    mini_batch_size: str | int | None = None  # None: 1MB (tabular) or 10 files
    error_threshold: int = 10
    allowed_failed_count: int | None = None
    allowed_failed_percent: float | None = None
    run_max_try: int = 3
    run_invocation_timeout: float = 60
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


@dataclass
class _Record:
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


class _HeaderedError(Exception):
    """The headered file cannot be written (the results' columns do not fit one table)."""


def _unified_schema(schemas: list[Any]) -> Any:
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


class _Abort(Exception):
    """A threshold was exceeded."""


class _Worker:
    """One worker process and its two pipes."""

    def __init__(self, slot: int, generation: int, engine: _Engine) -> None:
        self.slot = slot
        self.generation = generation
        self.node = slot // engine.per_node
        self.name = f"process{slot:03d}" + (f".{generation}" if generation else "")
        self.ready = False
        self.task: _Record | None = None
        self.deadline = float("inf")
        self.buffer = b""
        self.closed = False
        task_read, self._task_write = os.pipe()
        result_read, result_write = os.pipe()
        user_logs = engine.report_dir / "logs" / "user"
        stdout_dir = user_logs / "stdout" / str(self.node)
        stdout_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "task_fd": task_read,
            "result_fd": result_write,
            "entry_script": str(engine.entry_script),
            "source_dir": str(engine.source_dir),
            "arguments": list(engine.options.arguments),
            "staging_dir": str(engine.staging_dir),
            "output_action": engine.options.output_action,
            "headered_output": engine.options.headered_output,
            "threads": engine.threads,
            "preload": engine.preload,
        }
        env = dict(engine.base_env)
        env[CONFIG_ENV] = json.dumps(config)
        env["AMLOPS_PRS_AGENT_NAME"] = self.name
        env["AMLOPS_PRS_NODE_ID"] = str(self.node)
        env["AMLOPS_PRS_LOG_FILE"] = str(
            user_logs / "entry_script_log" / str(self.node) / f"{self.name}.log.txt"
        )
        with (
            open(stdout_dir / f"{self.name}.stdout.txt", "wb") as out,
            open(stdout_dir / f"{self.name}.stderr.txt", "wb") as err,
        ):
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.local.parallel_run.worker"],
                cwd=engine.source_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(task_read, result_write),
                start_new_session=True,
            )
        os.close(task_read)
        os.close(result_write)
        self.result_fd = result_read
        os.set_blocking(result_read, False)
        if engine.model_env is not None:
            self.send({"env": engine.model_env})

    def send(self, message: dict[str, Any]) -> bool:
        """Write one task line; False if the worker is gone."""
        try:
            os.write(self._task_write, (json.dumps(message) + "\n").encode("utf-8"))
            return True
        except (BrokenPipeError, OSError):
            return False

    def read_events(self) -> tuple[list[dict[str, Any]], bool]:
        """Events available now, and whether the pipe reached EOF (the worker exited)."""
        eof = False
        while True:
            try:
                chunk = os.read(self.result_fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self.buffer += chunk
        events = []
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                events.append(json.loads(line))
        return events, eof

    def kill(self) -> None:
        """Kill the worker and anything it started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for fd in (self._task_write, self.result_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def exit_description(self) -> str:
        code = self.proc.wait()
        if code < 0:
            try:
                return f"worker {self.name} died from signal {signal.Signals(-code).name}"
            except ValueError:
                return f"worker {self.name} died from signal {-code}"
        return f"worker {self.name} exited with code {code}"


class _Engine:
    """Runs one job; use ``run_parallel``."""

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
        self.source_dir, self.entry_script = _locate_entry_script(options)
        self.kind, self.files = _input_files(inputs, options.input_kind)
        self.partitions: list[Partitions] = []
        if options.partition_keys:  # read and checked here, before any output; written in _loop (staging)
            if self.kind != "tabular":
                raise UserError(
                    "partition_keys needs CSV input; the local engine partitions rows by column values",
                    hint="pass CSV files, or drop partition_keys for file input",
                )
            # as on Azure, each input (dataset) is partitioned on its own
            self.partitions = [
                read_partitions(_files_of(path, self.files), options.partition_keys) for path in inputs
            ]
            batches: Any = []
        else:
            size = parse_mini_batch_size(options.mini_batch_size, self.kind)
            batches = (
                tabular_mini_batches(self.files, size)
                if self.kind == "tabular"
                else file_mini_batches(self.files, size)
            )
        self.records = [_Record(batch) for batch in batches]
        self.per_node = options.process_count_per_node or _cores()
        self.n_workers = options.node_count * self.per_node
        self.threads = max(1, _cores() // self.n_workers)
        self.base_env = self._worker_env()
        self.preload = _preload_modules(self.entry_script)
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
        self.workers: list[_Worker] = []

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
        if self.n_workers * self.threads > _cores():
            self._say(
                f"warning: {self.n_workers} workers on {_cores()} cores: oversubscribed "
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
                self.records += [_Record(batch) for batch in batches]
            self.partitions = []  # the rows are in the files now
        pending: deque[_Record] = deque(self.records)
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
        """Lay out ``options.model`` for ``Model.get_model_path``; UserError if it is not registered."""
        from pipelines.local.workspace import registry

        assert self.options.model
        name, version = registry.parse_model_ref(self.options.model)
        return registry.model_env(name, version)

    def _start_worker(self, slot: int, generation: int, selector: selectors.BaseSelector) -> _Worker:
        worker = _Worker(slot, generation, self)
        selector.register(worker.result_fd, selectors.EVENT_READ, worker)
        if generation == 0:
            self.workers.append(worker)
        else:
            self.workers[slot] = worker
        return worker

    def _dispatch(self, worker: _Worker, record: _Record) -> None:
        record.tries += 1
        record.status = "running"
        record.worker = worker.name
        worker.task = record
        worker.deadline = time.monotonic() + self.options.run_invocation_timeout
        worker.send(record.batch.to_message())  # a dead worker is noticed by its pipe's EOF

    def _handle(self, worker: _Worker, message: dict[str, Any], pending: deque[_Record]) -> int:
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
        self, worker: _Worker, reason: str, selector: selectors.BaseSelector, pending: deque[_Record]
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

    def _attempt_failed(self, record: _Record, error: str, pending: deque[_Record]) -> int:
        """One try of a mini-batch failed: retry it, or count it as failed once tries are used up."""
        record.errors.append(error)
        if record.tries < self.options.run_max_try:
            record.status = "pending"
            pending.append(record)
            return 0
        record.status = "failed"
        if record.items < 0:
            record.items = _count_items(record.batch)
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

    # -- output and report -----------------------------------------------------------------------

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
            except _HeaderedError as exc:
                self.headered_error = str(exc)
                self._say(f"warning: {self.headered_error}; {target.name} is complete")
        os.replace(tmp, target)
        return target, headered

    def _publish_headered(self, done: list[_Record]) -> Path:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        stem = Path(self.options.append_file_name).stem
        target = self.output_dir / f"{stem}.{self.options.headered_output}"
        failed = sorted(self.staging_dir.glob("mb-*.parquet.error"))
        if failed:
            raise _HeaderedError(f"{target.name} was not written: {failed[0].read_text().strip()}")
        parts = [self.staging_dir / f"mb-{r.batch.id:08d}.parquet" for r in done]
        parts = [p for p in parts if p.exists()]
        tmp = self.staging_dir / f".headered-{target.name}.tmp"  # never the append_row file's temp name
        try:
            schema = _unified_schema([pq.read_schema(p) for p in parts])
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
            raise _HeaderedError(f"{target.name} was not written: {str(exc).splitlines()[0]}") from None
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
                id=r.batch.id, source=r.batch.describe(), tries=r.tries, items=r.items, error=_partial(r)
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
        _write_text(logs / "job_result.txt", "\n".join(lines) + "\n")
        _write_text(logs / "job_result.json", json.dumps(result.to_dict(), indent=2) + "\n")
        error_lines = []
        for r in self.records:
            if r.errors:
                error_lines.append(f"mini-batch {r.batch.id} ({r.batch.describe()}), status {r.status}:")
                error_lines += [f"  try {i}: {e}" for i, e in enumerate(r.errors, 1)]
            elif r.status == "succeeded" and r.items > r.results:
                error_lines.append(f"mini-batch {r.batch.id} ({r.batch.describe()}): {_partial(r)}")
        if error_lines:
            _write_text(logs / "job_error.txt", "\n".join(error_lines) + "\n")
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
    _check_output_folders(out, report, paths)
    engine = _Engine(options, paths, out, report, progress, canceled)
    return engine.run()


def failure_summary(result: JobResult) -> str:
    """The terminal message for a failed job: what was exceeded, each failing mini-batch and its first error."""
    lines = [f"parallel_run failed: {result.message}"]
    for f in result.failures[:20]:
        lines.append(f"  mini-batch {f.id} ({f.source}, {f.items} items, {f.tries} tries): {f.error}")
    if len(result.failures) > 20:
        lines.append(f"  ... and {len(result.failures) - 20} more")
    lines.append(f"report: {result.report_dir / 'logs'}")
    return "\n".join(lines)


def _locate_entry_script(options: ParallelRunOptions) -> tuple[Path, Path]:
    source = Path(options.source_directory).expanduser() if options.source_directory else None
    entry = Path(options.entry_script).expanduser()
    if source is not None and not entry.is_absolute():
        entry = source / entry
    if not entry.is_file():
        raise UserError(
            f"entry script {entry} does not exist", hint="pass the path of a .py file with init()/run()"
        )
    if source is None:
        source = entry.parent
    if not source.is_dir():
        raise UserError(f"source directory {source} does not exist", hint="check --source-dir")
    return source.resolve(), entry.resolve()


def _input_files(inputs: list[Path], kind: str) -> tuple[str, list[Path]]:
    if not inputs:
        raise UserError("no input given", hint="pass --input PATH (a CSV file, or a folder)")
    files: list[Path] = []
    for path in inputs:
        if not path.exists():
            raise UserError(f"input {path} does not exist", hint="pass an existing CSV file or folder")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
            if not found:
                raise UserError(f"input folder {path} holds no files", hint="pass a folder with data files")
            files += found
        else:
            files.append(path)
    files = [f.resolve() for f in files]
    if kind == "auto":
        csvs = [f for f in files if f.suffix.lower() == ".csv"]
        if csvs and len(csvs) != len(files):  # the kind must not depend on a stray file
            others = [f.name for f in files if f.suffix.lower() != ".csv"]
            raise UserError(
                f"the input mixes CSV files with other files ({', '.join(others[:3])})",
                hint="pass --input-kind tabular with only CSV files, or --input-kind file to pass every path to run()",
            )
        kind = "tabular" if csvs else "file"
    elif kind == "tabular":
        not_csv = [f.name for f in files if f.suffix.lower() != ".csv"]
        if not_csv:
            raise UserError(
                f"tabular input must be CSV files; got {', '.join(not_csv[:3])}",
                hint="use --input-kind file to pass file paths to run()",
            )
    return kind, files


def _files_of(source: Path, files: list[Path]) -> list[Path]:
    """Those of ``files`` (from ``_input_files``) that the input ``source``, a file or a folder, gave."""
    source = source.resolve()
    return [f for f in files if f == source or source in f.parents]


def _hidden(relative: Path) -> bool:
    """Whether a file in an input folder is hidden: a part of its path starts with "." or "_" (as Hadoop and
    Spark mark their own files, e.g. ``_SUCCESS``, ``.ipynb_checkpoints/``)."""
    return any(part.startswith((".", "_")) for part in relative.parts)


def _check_output_folders(output: Path, report: Path, inputs: list[Path]) -> None:
    """The output and report folders must be folders (or not exist yet), and not where an input is read."""
    for folder, flag in ((output, "--output"), (report, "--report-dir")):
        check_output_folder(folder, flag, inputs)


def check_output_folder(folder: Path, flag: str, inputs: list[Path]) -> None:
    """UserError if ``folder`` (resolved) is a file, or equals or lies inside an input folder, where it would
    be read as input (a hidden folder there is not read, so it is allowed)."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder", hint=f"pass another {flag}")
    for source in (p.resolve() for p in inputs):
        if source.is_dir() and (folder == source or source in folder.parents):
            if not _hidden(folder.relative_to(source)):  # a hidden folder is not read as input
                raise UserError(
                    f"{folder} is inside the input folder {source}",
                    hint=f"pass a {flag} outside the input: a later run would read the results as input",
                )


def _preload_modules(entry_script: Path) -> list[str]:
    """Libraries the entry script imports, for its workers to import while the model is laid out."""
    from pipelines.local.runtime.warm import enabled, preload_modules

    return (preload_modules(entry_script) or []) if enabled() else []


def _count_items(batch: MiniBatch) -> int:
    """Items in a mini-batch the worker never reported on (it crashed before reading it)."""
    if batch.kind == "file":
        return len(batch.files)
    with open(batch.path, "rb") as fh:  # one mini-batch (about mini_batch_size bytes), not the file
        fh.seek(batch.start)
        data = fh.read(batch.end - batch.start)
    return sum(1 for line in data.split(b"\n") if line.strip())


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _partial(record: _Record) -> str:
    """Why a mini-batch that ran has failed items."""
    reason = record.note or "run() returned fewer results than items"
    return f"{record.items - record.results} of {record.items} items failed: {reason}"


def _driver_arguments(args: argparse.Namespace) -> list[str]:
    """Flags Azure's ParallelRunStep driver puts in the entry script's ``sys.argv`` before the step's own
    arguments (as the SDK builds them), so a script that does not use ``parse_known_args`` fails here too."""
    flags = ["--scoring_module_name", Path(args.entry_script).name, "--error_threshold", str(args.error_threshold),
             "--output_action", args.output_action, "--logging_level", args.logging_level,
             "--run_invocation_timeout", f"{args.run_invocation_timeout:g}", "--run_max_try", str(args.run_max_try)]  # fmt: skip
    if args.mini_batch_size:
        flags += ["--mini_batch_size", str(args.mini_batch_size)]
    return flags


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _default_run_dir() -> Path:
    from pipelines.settings import amlops_home

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return amlops_home() / "runs" / "parallel-run" / f"{stamp}-{uuid.uuid4().hex[:6]}"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m pipelines.local.parallel_run``."""
    p = argparse.ArgumentParser(
        prog="python -m pipelines.local.parallel_run",
        description="Run a ParallelRunStep entry script locally with Azure's semantics.",
        epilog="Arguments after -- go to the entry script's sys.argv, after the flags Azure's ParallelRunStep"
        " driver adds there (--scoring_module_name, --mini_batch_size, ...): read yours with parse_known_args.",
    )
    p.add_argument("entry_script", help="the entry script (init() and run(mini_batch))")
    p.add_argument("--input", action="append", required=True, help="CSV file or folder (repeatable)")
    p.add_argument("--source-dir", help="the step's source_directory (default: the script's folder)")
    p.add_argument("--output", help="output folder (default: a new run folder under AMLOPS_HOME)")
    p.add_argument("--report-dir", help="report folder (default: beside the output, <output>-report)")
    p.add_argument("--mini-batch-size", help="bytes for CSV input (1MB, 512KB, 1024), files for file input")
    p.add_argument(
        "--partition-keys", help="comma-separated columns: one mini-batch per distinct value (CSV input)"
    )
    p.add_argument(
        "--error-threshold", type=int, default=10, help="failed items allowed; -1 ignores (default 10)"
    )
    p.add_argument("--allowed-failed-count", type=int, help="failed mini-batches allowed; -1 ignores")
    p.add_argument("--allowed-failed-percent", type=float, help="percent of failed mini-batches allowed")
    p.add_argument("--run-max-try", type=int, default=3, help="tries per mini-batch (default 3)")
    p.add_argument(
        "--run-invocation-timeout", type=float, default=60, help="seconds per run() call (default 60)"
    )
    p.add_argument("--node-count", type=int, default=1, help="simulated nodes (default 1)")
    p.add_argument("--process-count-per-node", type=int, help="workers per node (default: cores)")
    p.add_argument("--output-action", choices=OUTPUT_ACTIONS, default="append_row")
    p.add_argument("--append-row-file-name", help=f"default {DEFAULT_APPEND_ROW_FILE}")
    p.add_argument(
        "--headered-output", choices=("csv", "parquet"), help="also write results with a header row"
    )
    p.add_argument("--input-kind", choices=("auto", "tabular", "file"), default="auto")
    p.add_argument("--model", help="NAME[:VERSION] from the local registry, for Model.get_model_path")
    p.add_argument("--logging-level", default="INFO", help="EntryScript logger level (default INFO)")
    p.add_argument("--json", action="store_true", help="print the job result as JSON on stdout")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    """CLI: exit 0 on success, 1 when a failure threshold is exceeded, 2 on bad input."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    entry_args: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, entry_args = args_list[:cut], args_list[cut + 1 :]
    args = build_parser().parse_args(args_list)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # stopped: kill the workers as Ctrl-C does
        signal.signal(signum, _interrupt)
    options = ParallelRunOptions(
        entry_script=args.entry_script,
        source_directory=args.source_dir,
        mini_batch_size=args.mini_batch_size,
        error_threshold=args.error_threshold,
        allowed_failed_count=args.allowed_failed_count,
        allowed_failed_percent=args.allowed_failed_percent,
        run_max_try=args.run_max_try,
        run_invocation_timeout=args.run_invocation_timeout,
        node_count=args.node_count,
        process_count_per_node=args.process_count_per_node,
        output_action=args.output_action,
        append_row_file_name=args.append_row_file_name,
        logging_level=args.logging_level,
        arguments=tuple(_driver_arguments(args) + entry_args),
        model=args.model,
        input_kind=args.input_kind,
        headered_output=args.headered_output or "",
        partition_keys=tuple(k.strip() for k in args.partition_keys.split(","))
        if args.partition_keys
        else (),
    )
    if args.output:
        output = Path(args.output)
        report = Path(args.report_dir) if args.report_dir else None
    else:
        run_dir = _default_run_dir()
        output = run_dir / "output"
        report = Path(args.report_dir) if args.report_dir else run_dir / "report"
    result = run_parallel(options, args.input, output, report, progress=True)
    if args.json:
        print_json(result.to_dict())
    if not result.succeeded:
        print(failure_summary(result), file=sys.stderr)
        return EXIT_THRESHOLD
    if not args.json:
        where = result.output_file or result.output_dir
        print(f"{result.message}; output: {where}; report: {result.report_dir / 'logs'}", file=sys.stderr)
    return 0
