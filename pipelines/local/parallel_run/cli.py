"""``python -m pipelines.local.parallel_run``: run a ParallelRunStep entry script on this machine.

Exit 0 on success, 1 when a failure threshold is exceeded, 2 on bad input::

    python -m pipelines.local.parallel_run scoring/scoring.py --input data.csv --model bike-demand \\
        --mini-batch-size 1MB --process-count-per-node 2 -- --model_name bike-demand
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pipelines.core import defaults
from pipelines.errors import cli_main, print_json
from pipelines.local.parallel_run.job import run_parallel
from pipelines.local.parallel_run.options import (
    DEFAULT_APPEND_ROW_FILE,
    EXIT_THRESHOLD,
    OUTPUT_ACTIONS,
    ParallelRunOptions,
    failure_summary,
)


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
        "--error-threshold",
        type=int,
        default=defaults.PRS_ERROR_THRESHOLD,
        help=f"failed items allowed; -1 ignores (default {defaults.PRS_ERROR_THRESHOLD})",
    )
    p.add_argument("--allowed-failed-count", type=int, help="failed mini-batches allowed; -1 ignores")
    p.add_argument("--allowed-failed-percent", type=float, help="percent of failed mini-batches allowed")
    p.add_argument(
        "--run-max-try",
        type=int,
        default=defaults.PRS_RUN_MAX_TRY,
        help=f"tries per mini-batch (default {defaults.PRS_RUN_MAX_TRY})",
    )
    p.add_argument(
        "--run-invocation-timeout",
        type=float,
        default=defaults.PRS_RUN_INVOCATION_TIMEOUT,
        help=f"seconds per run() call (default {defaults.PRS_RUN_INVOCATION_TIMEOUT})",
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
