"""The local ParallelRunStep engine, driven through its Python API with tiny entry scripts.

Each test writes an entry script into tmp_path; the scripts record what happened in their worker
(pids, argv, mini-batch contents) as small JSON files in a ``--record`` folder passed as entry args.
"""

from __future__ import annotations

import csv
import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest

from pipelines import datagen
from pipelines.errors import UserError
from pipelines.local.parallel_run.job import run_parallel
from pipelines.local.parallel_run.options import JobResult, ParallelRunOptions, failure_summary

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")

PRELUDE = """
import argparse, json, os, sys, time
from pathlib import Path
from azureml_user.parallel_run import EntryScript

def _record_dir():
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", default="")
    return parser.parse_known_args()[0].record

def note(kind, **data):
    folder = _record_dir()
    if folder:  # written whole, then renamed: a reader never sees a half-written record
        path = Path(folder) / f"{kind}-{os.getpid()}-{time.time_ns()}.json"
        path.with_suffix(".tmp").write_text(json.dumps(data))
        os.replace(path.with_suffix(".tmp"), path)

def init():
    note("init", pid=os.getpid(), argv=sys.argv[1:], omp=os.environ.get("OMP_NUM_THREADS"),
         has_pytest="pytest" in sys.modules)
"""


def script(tmp_path: Path, body: str, name: str = "entry.py", prelude: bool = True) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text((PRELUDE if prelude else "") + textwrap.dedent(body))
    return path


def records(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "rec").glob(f"{kind}-*.json"))]


def run(tmp_path: Path, entry: Path, inputs: list[Path], **options: Any) -> JobResult:
    (tmp_path / "rec").mkdir(exist_ok=True)
    progress = options.pop("progress", False)
    options.setdefault("process_count_per_node", 2)
    options.setdefault("arguments", ("--record", str(tmp_path / "rec")))
    canceled = options.pop("canceled", None)
    opts = ParallelRunOptions(entry_script=str(entry), **options)
    return run_parallel(opts, inputs, tmp_path / "out", progress=progress, canceled=canceled)


def processed(result: JobResult) -> list[dict[str, str]]:
    with open(result.report_dir / "logs" / "processed_mini-batches.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """2,000 bike-like rows (about 150 KB: 8 mini-batches of 20KB)."""
    return datagen.write_csv(tmp_path / "data" / "bike.csv", 2000, seed=11)


ECHO = """
def run(mini_batch):
    note("run", pid=os.getpid(), first=int(mini_batch.instant.iloc[0]), last=int(mini_batch.instant.iloc[-1]),
         n=len(mini_batch))
    return mini_batch[["instant", "date", "temp"]]
"""


def test_every_row_comes_back_exactly_once_in_azure_format(tmp_path: Path, data: Path) -> None:
    result = run(tmp_path, script(tmp_path, ECHO), [data], mini_batch_size="20KB")
    assert result.succeeded and result.failed_items == 0
    assert result.mini_batches >= 7
    lines = result.output_file.read_text().splitlines()
    expected = pd.read_csv(data)
    assert len(lines) == len(expected) == result.result_rows == result.items
    assert lines[0] == f"1 1/1/2011 {expected.temp[0]}"  # space-separated, no header, no index
    assert [int(line.split(" ")[0]) for line in lines] == expected.instant.tolist()
    assert result.output_file == tmp_path / "out" / "parallel_run_step.txt"
    assert sorted(os.listdir(tmp_path / "out")) == ["parallel_run_step.txt"]  # no temp files left behind


def test_workers_are_node_count_times_processes_each_init_once(tmp_path: Path, data: Path) -> None:
    result = run(tmp_path, script(tmp_path, ECHO), [data], mini_batch_size="10KB", node_count=2,
                 process_count_per_node=1)  # fmt: skip
    inits, runs = records(tmp_path, "init"), records(tmp_path, "run")
    assert result.workers == 2 and len(inits) == 2
    assert len({r["pid"] for r in inits}) == 2 and os.getpid() not in {r["pid"] for r in inits}
    assert {r["pid"] for r in runs} <= {r["pid"] for r in inits}
    assert len(runs) == result.mini_batches > 2  # run() many times per init()


def test_workers_are_fresh_interpreters_with_bounded_threads(tmp_path: Path, data: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    for per_node in (1, 2):
        result = run(tmp_path, script(tmp_path, ECHO), [data], process_count_per_node=per_node)
        assert result.workers * result.threads_per_worker <= max(cores, result.workers)
        assert result.threads_per_worker == max(1, cores // per_node)
    inits = records(tmp_path, "init")
    assert {r["omp"] for r in inits} == {str(max(1, cores // 1)), str(max(1, cores // 2))}
    assert not any(r["has_pytest"] for r in inits)  # not forked from this (pytest) process


def test_entry_args_reach_sys_argv_for_parse_known_args(tmp_path: Path, data: Path) -> None:
    args = ("--record", str(tmp_path / "rec"), "--model_name", "m", "--azure_injected", "x")
    run(tmp_path, script(tmp_path, ECHO), [data], arguments=args, process_count_per_node=1)
    assert records(tmp_path, "init")[0]["argv"] == list(args)


def test_mini_batches_never_cross_files(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    datagen.generate(500, 1).to_csv(folder / "a.csv", index=False)
    other = datagen.generate(300, 2)
    other["instant"] += 10_000
    other.to_csv(folder / "b.csv", index=False)
    result = run(tmp_path, script(tmp_path, ECHO), [folder], mini_batch_size="16KB")
    for r in records(tmp_path, "run"):
        assert (r["last"] < 10_000) == (r["first"] < 10_000), r
    assert result.items == 800 and len(result.output_file.read_text().splitlines()) == 800
    sources = {row["source"].split("[")[0] for row in processed(result)}
    assert sources == {"a.csv", "b.csv"}


def test_file_dataset_gets_lists_of_paths(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(23):
        (folder / f"img{i:02d}.bin").write_bytes(b"x" * i)
    body = """
    def run(mini_batch):
        assert isinstance(mini_batch, list)
        note("run", n=len(mini_batch))
        return [f"{Path(p).name} {Path(p).stat().st_size}" for p in mini_batch]
    """
    result = run(tmp_path, script(tmp_path, body), [folder])
    assert sorted(r["n"] for r in records(tmp_path, "run")) == [3, 10, 10]  # default 10 files
    lines = result.output_file.read_text().splitlines()
    assert lines == [f"img{i:02d}.bin {i}" for i in range(23)]  # list items one per line
    run(tmp_path, script(tmp_path, body), [folder], mini_batch_size="5")
    assert sorted(r["n"] for r in records(tmp_path, "run"))[:5] == [3, 3, 5, 5, 5]


def test_fewer_results_count_as_failed_items(tmp_path: Path, data: Path) -> None:
    body = """
    def run(mini_batch):
        return mini_batch.iloc[1:][["instant"]]
    """
    result = run(tmp_path, script(tmp_path, body), [data], mini_batch_size="20KB", error_threshold=-1)
    assert result.succeeded
    assert result.failed_items == result.mini_batches
    assert result.result_rows == 2000 - result.mini_batches
    assert all(row["failed_items"] == "1" and row["status"] == "succeeded" for row in processed(result))

    aborted = run(tmp_path, script(tmp_path, body), [data], mini_batch_size="20KB", error_threshold=2)
    assert not aborted.succeeded and "error_threshold=2" in aborted.message
    assert aborted.failed_items == 3  # aborted as soon as the count went above the threshold
    assert aborted.output_file is None and not (tmp_path / "out" / "parallel_run_step.txt").exists()


RAISE_ON_FIRST = """
def run(mini_batch):
    note("run", first=int(mini_batch.instant.iloc[0]))
    if mini_batch.instant.iloc[0] == 1:
        raise ValueError("bad row in the first mini-batch")
    return mini_batch[["instant"]]
"""


def test_exception_fails_the_mini_batch_after_run_max_try(tmp_path: Path, data: Path) -> None:
    result = run(tmp_path, script(tmp_path, RAISE_ON_FIRST), [data], mini_batch_size="20KB", error_threshold=-1,
                 run_max_try=3)  # fmt: skip
    assert result.succeeded  # error_threshold=-1 ignores failures
    assert sum(1 for r in records(tmp_path, "run") if r["first"] == 1) == 3
    assert result.failed_mini_batches == 1
    first = processed(result)[0]
    assert first["status"] == "failed" and first["tries"] == "3"
    assert "ValueError: bad row in the first mini-batch" in first["first_error"]
    assert int(first["failed_items"]) == result.failed_items > 0
    assert result.result_rows == 2000 - result.failed_items  # nothing lost: rows out or counted failed
    assert "bad row" in (result.report_dir / "logs" / "job_error.txt").read_text()
    [failure] = result.failures
    assert failure.id == 0 and failure.tries == 3 and "ValueError" in failure.error


def test_retry_after_a_transient_failure_succeeds(tmp_path: Path, data: Path) -> None:
    body = """
    def run(mini_batch):
        marker = Path(_record_dir()) / f"seen-{int(mini_batch.instant.iloc[0])}"
        if not marker.exists():
            marker.write_text("")
            raise RuntimeError("transient")
        return mini_batch[["instant"]]
    """
    result = run(tmp_path, script(tmp_path, body), [data], mini_batch_size="40KB", error_threshold=0)
    assert result.succeeded and result.failed_items == 0 and result.result_rows == 2000
    assert {row["tries"] for row in processed(result)} == {"2"}
    assert {row["first_error"] for row in processed(result)} == {"RuntimeError: transient"}


def test_failure_message_names_mini_batches_and_first_errors(tmp_path: Path, data: Path) -> None:
    result = run(tmp_path, script(tmp_path, RAISE_ON_FIRST), [data], mini_batch_size="20KB", error_threshold=5,
                 run_max_try=2)  # fmt: skip
    assert not result.succeeded and result.status == "Failed"
    text = failure_summary(result)
    assert "error_threshold=5" in text
    assert "mini-batch 0 (bike.csv[" in text and "ValueError: bad row in the first mini-batch" in text
    assert str(result.report_dir / "logs") in text
    assert (result.report_dir / "logs" / "job_result.txt").read_text().startswith("Failed: job aborted")


def test_timeout_kills_the_worker_and_starts_a_replacement(tmp_path: Path, data: Path) -> None:
    body = """
    def run(mini_batch):
        if mini_batch.instant.iloc[0] == 1:
            time.sleep(60)
        return mini_batch[["instant"]]
    """
    result = run(tmp_path, script(tmp_path, body), [data], mini_batch_size="40KB", run_invocation_timeout=1.5,
                 run_max_try=1, error_threshold=-1)  # fmt: skip
    assert result.seconds < 20
    assert result.failed_mini_batches == 1
    assert "timed out after 1.5 s" in processed(result)[0]["first_error"]
    assert len(records(tmp_path, "init")) == 3  # two workers + one replacement (init() again)
    assert result.result_rows == 2000 - result.failed_items


@pytest.mark.parametrize(
    "crash",
    ["os._exit(7)", "import ctypes; ctypes.string_at(0)"],
    ids=["os_exit", "segfault"],
)
def test_a_crashing_worker_costs_only_its_mini_batch(tmp_path: Path, data: Path, crash: str) -> None:
    body = f"""
    def run(mini_batch):
        note("run", first=int(mini_batch.instant.iloc[0]))
        if mini_batch.instant.iloc[0] == 1:
            {crash}
        return mini_batch[["instant"]]
    """
    result = run(tmp_path, script(tmp_path, body), [data], mini_batch_size="20KB", run_max_try=2,
                 error_threshold=-1)  # fmt: skip
    rows = processed(result)
    assert rows[0]["status"] == "failed" and rows[0]["tries"] == "2"
    assert ("exited with code 7" if "exit" in crash else "SIGSEGV") in rows[0]["first_error"]
    assert all(row["status"] == "succeeded" for row in rows[1:])
    assert int(rows[0]["items"]) > 0  # counted by the parent although the worker never reported it
    assert result.result_rows + result.failed_items == 2000


FAIL_FIRST_TWO = """
def run(mini_batch):
    if mini_batch.instant.iloc[0] in (1,) or len(mini_batch) and mini_batch.instant.iloc[-1] == 2000:
        raise RuntimeError("no")
    return mini_batch[["instant"]]
"""


@pytest.mark.parametrize(
    ("limits", "succeeded"),
    [
        ({"allowed_failed_count": 1}, False),
        ({"allowed_failed_count": 2}, True),
        ({"allowed_failed_count": -1}, True),
        ({"allowed_failed_percent": 20}, False),  # 2 of 8 mini-batches = 25%
        ({"allowed_failed_percent": 30}, True),
    ],
)
def test_failed_mini_batch_limits(
    tmp_path: Path, data: Path, limits: dict[str, Any], succeeded: bool
) -> None:
    result = run(tmp_path, script(tmp_path, FAIL_FIRST_TWO), [data], mini_batch_size="20KB", error_threshold=-1,
                 run_max_try=1, **limits)  # fmt: skip
    assert result.mini_batches == 8
    assert result.succeeded is succeeded
    if not succeeded:
        assert next(iter(limits)) in result.message
        assert result.output_file is None
    else:
        assert result.failed_mini_batches == 2


def test_summary_only_counts_without_output(tmp_path: Path, data: Path) -> None:
    body = """
    def run(mini_batch):
        return ["ok"] * (len(mini_batch) - 1)
    """
    result = run(tmp_path, script(tmp_path, body), [data], output_action="summary_only", error_threshold=-1,
                 mini_batch_size="40KB")  # fmt: skip
    assert result.succeeded and result.output_file is None
    assert result.failed_items == result.mini_batches and result.items == 2000
    assert not (tmp_path / "out" / "parallel_run_step.txt").exists()


def test_rerun_into_the_same_folder_replaces_and_a_failed_rerun_leaves_no_stale_output(
    tmp_path: Path, data: Path
) -> None:
    entry = script(tmp_path, ECHO)
    for _ in range(2):
        result = run(tmp_path, entry, [data], mini_batch_size="40KB", append_row_file_name="scores.txt")
        assert len(result.output_file.read_text().splitlines()) == 2000
    assert result.output_file.name == "scores.txt"
    failing = run(tmp_path, script(tmp_path, RAISE_ON_FIRST, name="bad.py"), [data], error_threshold=0,
                  run_max_try=1, append_row_file_name="scores.txt")  # fmt: skip
    assert not failing.succeeded
    assert not (tmp_path / "out" / "scores.txt").exists()  # no old result left looking like this run's


def test_output_file_appears_only_when_complete(tmp_path: Path, data: Path) -> None:
    body = """
    def run(mini_batch):
        out = Path(EntryScript().output_dir)
        note("run", visible=sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
        return mini_batch[["instant"]]
    """
    entry = script(tmp_path, body)
    run(tmp_path, entry, [data], mini_batch_size="40KB")
    run(tmp_path, entry, [data], mini_batch_size="40KB")  # second run: the old file is gone first
    assert all(r["visible"] == [] for r in records(tmp_path, "run"))
    assert (tmp_path / "out" / "parallel_run_step.txt").exists()


def test_entry_script_logger_writes_to_the_report_folder(tmp_path: Path, data: Path) -> None:
    body = """
    def run(mini_batch):
        EntryScript().logger.info("scored %d rows on %s", len(mini_batch), EntryScript().agent_name)
        print("plain print goes to the worker's stdout log")
        return mini_batch[["instant"]]
    """
    result = run(tmp_path, script(tmp_path, body), [data], process_count_per_node=1)
    logs = result.report_dir / "logs" / "user"
    text = (logs / "entry_script_log" / "0" / "process000.log.txt").read_text()
    assert "scored" in text and "process000" in text and "|INFO|" in text
    assert "plain print" in (logs / "stdout" / "0" / "process000.stdout.txt").read_text()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_headered_output_keeps_column_names_and_order(tmp_path: Path, data: Path, fmt: str) -> None:
    body = """
    def run(mini_batch):
        out = mini_batch[["date", "instant"]].copy()
        out["prediction"] = mini_batch.temp * 2
        return out
    """
    result = run(tmp_path, script(tmp_path, body), [data], mini_batch_size="20KB", headered_output=fmt)
    frame = pd.read_csv(result.headered_file) if fmt == "csv" else pd.read_parquet(result.headered_file)
    assert list(frame.columns) == ["date", "instant", "prediction"]
    assert frame.instant.tolist() == list(range(1, 2001))
    assert result.headered_file.name == f"parallel_run_step.{fmt}"
    assert len(result.output_file.read_text().splitlines()) == 2000


def test_values_with_spaces_are_quoted_so_rows_stay_parseable(tmp_path: Path, data: Path) -> None:
    body = """
    def run(mini_batch):
        out = mini_batch[["instant"]].copy()
        out["label"] = "a b"
        return out
    """
    result = run(tmp_path, script(tmp_path, body), [data], process_count_per_node=1)
    back = pd.read_csv(result.output_file, sep=" ", header=None)
    assert back.shape == (2000, 2) and set(back[1]) == {"a b"}


def test_progress_line_on_stderr(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(tmp_path, script(tmp_path, ECHO), [data], progress=True, process_count_per_node=1)
    err = capsys.readouterr().err
    assert "rows/s" in err and "1/1 mini-batches" in err and "2,000 rows" in err


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("def init():\n    pass\n", "no run\\(\\) function"),
        ("def run(mb):\n    return mb\n", "no init\\(\\) function"),
        ("import no_such_module_xyz\n", "failed to import: ModuleNotFoundError"),
        ("def init():\n    raise RuntimeError('model missing')\ndef run(mb):\n    return mb\n",
         "init\\(\\) failed: RuntimeError: model missing"),
    ],
    ids=["no_run", "no_init", "import_error", "init_raises"],
)  # fmt: skip
def test_bad_entry_scripts_are_user_errors_without_output(
    tmp_path: Path, data: Path, body: str, match: str
) -> None:
    entry = script(tmp_path, body, prelude=False)
    with pytest.raises(UserError, match=match):
        run(tmp_path, entry, [data], process_count_per_node=1)
    assert not (tmp_path / "out" / "parallel_run_step.txt").exists()
    assert not list((tmp_path / "out").glob(".parallel-run-staging-*"))


def test_bad_inputs_are_user_errors(tmp_path: Path, data: Path) -> None:
    entry = script(tmp_path, ECHO)
    with pytest.raises(UserError, match="does not exist"):
        run(tmp_path, entry, [tmp_path / "missing.csv"])
    with pytest.raises(UserError, match="mini_batch_size"):
        run(tmp_path, entry, [data], mini_batch_size="1XB")
    with pytest.raises(UserError, match="entry script .* does not exist"):
        run(tmp_path, tmp_path / "nope.py", [data])
    with pytest.raises(UserError, match="no-such-model"):
        run(tmp_path, entry, [data], model="no-such-model")
    with pytest.raises(UserError, match="error_threshold"):
        run(tmp_path, entry, [data], error_threshold=-2)
    with pytest.raises(UserError, match="append_row_file_name"):
        run(tmp_path, entry, [data], append_row_file_name="a/b.txt")


def test_a_canceled_job_kills_its_workers_and_publishes_nothing(tmp_path: Path, data: Path) -> None:
    """How the pipeline engine stops a ParallelRunStep when its run is canceled (SIGTERM)."""
    body = """
    def run(mini_batch):
        note("run", pid=os.getpid())
        time.sleep(30)
        return mini_batch[["instant"]]
    """
    started = {"at": None}

    def canceled() -> bool:  # once the first mini-batch is running
        if records(tmp_path, "run") and started["at"] is None:
            started["at"] = time.monotonic()
        return started["at"] is not None

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, script(tmp_path, body), [data], mini_batch_size="40KB", canceled=canceled)
    assert time.monotonic() - started["at"] < 10  # not after the 30 s mini-batch
    pids = {r["pid"] for r in records(tmp_path, "run")}
    assert pids and not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids
    )
    out = tmp_path / "out"
    assert not (out / "parallel_run_step.txt").exists()
    assert not list(out.glob(".parallel-run-staging-*"))


PARTITIONED = """
def run(mini_batch, mini_batch_context):
    note("run", key=mini_batch_context.partition_key_value, index=mini_batch_context.minibatch_index,
         seasons=sorted(set(mini_batch.season.tolist())), years=sorted(set(mini_batch.yr.tolist())),
         dataset=repr(mini_batch_context.dataset), n=len(mini_batch))
    return mini_batch[["instant", "season", "yr"]]
"""


def test_partition_keys_make_one_mini_batch_per_key_value(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    first = datagen.write_csv(folder / "a.csv", 500, seed=3)
    datagen.write_csv(folder / "b.csv", 300, seed=4)
    rows = pd.concat([pd.read_csv(first), pd.read_csv(folder / "b.csv")])
    result = run(tmp_path, script(tmp_path, PARTITIONED), [folder], partition_keys=("season", "yr"))
    assert result.succeeded and result.failed_items == 0
    groups = rows.groupby(["season", "yr"]).size()
    assert result.mini_batches == len(groups) >= 5 and result.items == result.result_rows == len(rows)
    calls = records(tmp_path, "run")
    assert len(calls) == len(groups)
    for call in calls:  # each call holds exactly one partition, named by its text in the files
        key = call["key"]
        assert call["seasons"] == [int(key["season"])] and call["years"] == [int(key["yr"])]
        assert call["n"] == groups[(int(key["season"]), int(key["yr"]))]
        assert call["dataset"] == "None"
    assert sorted(c["index"] for c in calls) == list(range(len(groups)))
    assert [r["source"] for r in processed(result)][0] == "season=1, yr=0"
    lines = result.output_file.read_text().splitlines()
    assert sorted(int(line.split(" ")[0]) for line in lines) == sorted(rows.instant)
    assert sorted(os.listdir(tmp_path / "out")) == [
        "parallel_run_step.txt"
    ]  # partitions were staged and removed


def test_a_one_argument_run_gets_partitions_too_and_a_two_argument_run_gets_a_context_without_them(
    tmp_path: Path, data: Path
) -> None:
    result = run(tmp_path, script(tmp_path, ECHO), [data], partition_keys=("season",))
    assert result.succeeded and result.mini_batches == 4
    assert sorted(r["n"] for r in records(tmp_path, "run")) == sorted(pd.read_csv(data).season.value_counts())
    other = tmp_path / "other"
    other.mkdir()
    result = run(other, script(other, PARTITIONED), [data], mini_batch_size="40KB")
    assert result.succeeded and result.mini_batches >= 3
    assert {str(c["key"]) for c in records(other, "run")} == {"None"}


def test_bad_partition_keys_are_user_errors_without_output(tmp_path: Path, data: Path) -> None:
    entry = script(tmp_path, PARTITIONED)
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.bin").write_bytes(b"x")
    cases = [
        ({"partition_keys": ("region",)}, [data], "not columns of the input"),
        ({"partition_keys": ("season",), "mini_batch_size": "1MB"}, [data], "mutually exclusive"),
        ({"partition_keys": ("season", "season")}, [data], "repeats a key"),
        ({"partition_keys": ("",)}, [data], "must be column names"),
        ({"partition_keys": ("season",)}, [files], "needs CSV input"),
    ]
    for options, inputs, match in cases:
        with pytest.raises(UserError, match=match):
            run(tmp_path, entry, inputs, **options)
        assert not (tmp_path / "out").exists()


def test_stray_and_hidden_files_do_not_change_what_a_folder_is(tmp_path: Path, data: Path) -> None:
    folder = tmp_path / "spark"
    folder.mkdir()
    (folder / "part-0.csv").write_bytes(data.read_bytes())
    (folder / "_SUCCESS").write_bytes(b"")  # as Spark writes it
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "part-0-checkpoint.csv").write_bytes(data.read_bytes())
    result = run(tmp_path, script(tmp_path, ECHO), [folder])
    assert result.succeeded and result.items == 2000  # the one CSV, read as tabular input, once
    (folder / "README.md").write_text("scores")
    with pytest.raises(UserError, match=r"mixes CSV files with other files \(README.md\)"):
        run(tmp_path, script(tmp_path, ECHO), [folder])


def test_outputs_may_not_be_written_where_the_input_is_read(tmp_path: Path, data: Path) -> None:
    entry = script(tmp_path, ECHO)
    opts = ParallelRunOptions(entry_script=str(entry), process_count_per_node=1)
    with pytest.raises(UserError, match="inside the input folder"):
        run_parallel(opts, [data.parent], data.parent / "out", progress=False)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        run_parallel(opts, [data], tmp_path / "a-file", progress=False)
    assert sorted(p.name for p in data.parent.iterdir()) == ["bike.csv"]


def test_headered_output_survives_columns_that_change_type_or_do_not_fit_a_table(
    tmp_path: Path, data: Path
) -> None:
    drifting = """
    def run(mini_batch):
        out = mini_batch[["instant"]].copy()
        out["station"] = out.instant if out.instant.iloc[0] == 1 else "S" + out.instant.astype(str)
        out["mixed"] = [1 if i % 2 else "one" for i in range(len(out))]  # an object column of numbers and text
        return out
    """
    result = run(
        tmp_path, script(tmp_path, drifting), [data], mini_batch_size="40KB", headered_output="parquet"
    )
    assert result.succeeded and result.failed_items == 0 and not result.headered_error
    frame = pd.read_parquet(result.headered_file)
    assert (
        len(frame) == 2000 and frame.station.tolist()[:2] == ["1", "2"] and frame.station.iloc[-1] == "S2000"
    )
    assert frame.mixed.tolist()[:2] == ["one", "1"]
    duplicated = """
    def run(mini_batch):
        return mini_batch[["instant", "temp"]].set_axis(["p", "p"], axis=1)
    """
    other = tmp_path / "dup"
    other.mkdir()
    result = run(other, script(other, duplicated), [data], mini_batch_size="40KB", headered_output="csv")
    assert result.succeeded and result.failed_items == 0 and result.headered_file is None
    assert "Duplicate column names" in result.headered_error
    assert len(result.output_file.read_text().splitlines()) == 2000  # the append_row output is whole
    assert not (other / "out" / "parallel_run_step.csv").exists()


def test_option_combinations_the_engine_cannot_honour_are_refused(tmp_path: Path, data: Path) -> None:
    entry = script(tmp_path, ECHO)
    with pytest.raises(UserError, match="also the headered csv file's name"):
        run(tmp_path, entry, [data], append_row_file_name="predictions.csv", headered_output="csv")
    with pytest.raises(UserError, match="run_invocation_timeout must be positive"):
        run(tmp_path, entry, [data], run_invocation_timeout=float("nan"))
    with pytest.raises(UserError, match="not a valid file name"):
        run(tmp_path, entry, [data], append_row_file_name="..")
    assert not (tmp_path / "out").exists()


def test_a_second_parameter_with_a_default_keeps_it(tmp_path: Path, data: Path) -> None:
    body = """
    def run(mini_batch, scale=2.0):
        note("run", scale=scale)
        return mini_batch[["instant"]]
    """
    result = run(tmp_path, script(tmp_path, body), [data], mini_batch_size="40KB")
    assert result.succeeded and {r["scale"] for r in records(tmp_path, "run")} == {2.0}


def test_an_abort_for_failed_items_names_the_mini_batches_and_why(tmp_path: Path, data: Path) -> None:
    body = """
    def run(mini_batch):
        return mini_batch[["instant"]].iloc[:-1] if mini_batch.instant.iloc[0] == 1 else None
    """
    entry = script(tmp_path, body)
    result = run(tmp_path, entry, [data], mini_batch_size="40KB", error_threshold=5, process_count_per_node=1)
    assert not result.succeeded
    summary = failure_summary(result)
    assert "items failed: run() returned None" in summary
    assert "1 of " in summary and "items failed: run() returned fewer results than items" in summary
    errors = (result.report_dir / "logs" / "job_error.txt").read_text()
    assert "bike.csv[" in errors and "run() returned None" in errors


def test_the_cli_passes_arguments_after_the_double_dash_unchanged_and_stops_its_workers_on_sigterm(
    tmp_path: Path, data: Path
) -> None:
    import signal
    import subprocess
    import sys

    from pipelines.local.parallel_run.cli import main

    body = """
    def run(mini_batch):
        note("run", pid=os.getpid(), argv=sys.argv[1:])
        if "--hang" in sys.argv:
            time.sleep(60)
        return mini_batch[["instant"]]
    """
    entry = script(tmp_path, body)
    (tmp_path / "rec").mkdir()
    args = [
        str(entry),
        "--input",
        str(data),
        "--output",
        str(tmp_path / "out"),
        "--process-count-per-node",
        "1",
    ]
    assert main([*args, "--", "--record", str(tmp_path / "rec"), "--debug", "--json"]) == 0
    argv = records(tmp_path, "run")[0]["argv"]
    assert argv[-4:] == ["--record", str(tmp_path / "rec"), "--debug", "--json"]
    # before them, the flags Azure's driver adds (a script must use parse_known_args, as on Azure)
    assert argv[:2] == ["--scoring_module_name", "entry.py"] and "--run_invocation_timeout" in argv

    hang = [*args, "--output", str(tmp_path / "out2"), "--", "--record", str(tmp_path / "rec"), "--hang"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.local.parallel_run", *hang], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while len(records(tmp_path, "run")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = records(tmp_path, "run")[-1]["pid"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert b"interrupted" in proc.stderr.read()
    time.sleep(0.5)
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "out2" / "parallel_run_step.txt").exists()


def test_partition_input_is_checked_before_an_earlier_output_is_touched(tmp_path: Path, data: Path) -> None:
    entry = script(tmp_path, ECHO)
    assert run(tmp_path, entry, [data], partition_keys=("season",)).succeeded
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("instant,season\n1,1\n2,1,extra\n")
    with pytest.raises(UserError, match="cannot be read as CSV"):
        run(tmp_path, entry, [ragged], partition_keys=("season",))
    assert len((tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()) == 2000
    # a UTF-8 BOM on one file's header and an empty file are no header mismatch
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.csv").write_bytes(b"\xef\xbb\xbfinstant,season\n1,1\n")
    (folder / "b.csv").write_bytes(b"instant,season\n2,2\n3,1\n")
    (folder / "c.csv").write_bytes(b"")
    body = """
    def run(mini_batch):
        return mini_batch[["instant", "season"]]
    """
    result = run(tmp_path, script(tmp_path, body, name="pairs.py"), [folder], partition_keys=("season",))
    assert result.succeeded and result.mini_batches == 2
    assert sorted(result.output_file.read_text().splitlines()) == ["1 1", "2 2", "3 1"]


def test_init_failing_in_a_replacement_worker_fails_the_job_with_its_report(
    tmp_path: Path, data: Path
) -> None:
    body = """
    import os

    def init():
        if "." in os.environ.get("AMLOPS_PRS_AGENT_NAME", ""):  # a replacement worker (process000.1)
            raise RuntimeError("cannot load the model again")

    def run(mini_batch):
        if int(mini_batch.instant.iloc[0]) != 1:
            os._exit(9)
        return mini_batch[["instant"]]
    """
    entry = script(tmp_path, body, prelude=False)
    result = run(
        tmp_path, entry, [data], mini_batch_size="40KB", process_count_per_node=1, error_threshold=-1
    )
    assert not result.succeeded
    assert "init() failed in a replacement worker" in result.message
    assert "cannot load the model again" in result.message
    assert (result.report_dir / "logs" / "job_result.txt").read_text().startswith("Failed: job aborted")
    assert not result.output_file


def test_each_input_is_partitioned_on_its_own(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("instant,season\n1,1\n2,2\n")
    second.write_text("instant,season\n3,1\n")
    body = """
    def run(mini_batch):
        return [" ".join(str(i) for i in mini_batch.instant)]
    """
    result = run(tmp_path, script(tmp_path, body), [first, second], partition_keys=("season",))
    assert result.succeeded and result.mini_batches == 3  # season 1 of a.csv and of b.csv stay apart
    assert result.output_file.read_text().splitlines() == ["1", "2", "3"]


def test_numbers_are_spelled_the_same_whichever_path_writes_the_rows() -> None:
    import io

    from pipelines.local.parallel_run.worker import _write_frame_rows

    def written(frame: pd.DataFrame) -> list[str]:
        out = io.BytesIO()
        _write_frame_rows(frame, out)
        return out.getvalue().decode().splitlines()

    values = [770.0, 6299.5, 1e-7, 0.00001, float("nan")]
    plain = written(pd.DataFrame({"p": values, "s": ["a", "b", "c", "d", "e"]}))  # pyarrow writes these rows
    spaced = written(
        pd.DataFrame({"p": values, "s": ["a b", "b", "c", "d", "e"]})
    )  # "a b" needs pandas' quoting
    assert [line.split(" ")[0] for line in plain] == ["770", "6299.5", "1e-7", "0.00001", ""]
    assert [line.split(" ")[0] for line in spaced] == [line.split(" ")[0] for line in plain]
    assert spaced[0] == '770 "a b"'
