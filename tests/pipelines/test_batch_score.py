"""The batch-inference pipeline end to end on the local engine: every input row back with its prediction."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pipelines import batch_score
from pipelines.datagen import write_csv
from pipelines.errors import UserError
from pipelines.settings import Settings
from tests.conftest import cli

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")


@pytest.fixture
def new_data(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "new-days.csv", 3000, seed=11)


def test_batch_run_scores_every_row(trained: tuple[Path, dict], new_data: Path, tmp_path: Path) -> None:
    home, _ = trained
    out = tmp_path / "predictions"
    done = cli("pipelines.batch_score", "run", "--input", str(new_data), "--model", "bike-demand:1",
               "--output", str(out), "--set", "mini_batch_size=64KB", "--json", home=home)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "Completed" and summary["predictions"] == str(out.resolve())
    predictions = pd.read_csv(out / "predictions.csv")
    source = pd.read_csv(new_data)
    assert list(predictions.columns) == ["instant", "date", "prediction"]
    assert sorted(predictions["instant"]) == sorted(source["instant"])  # each row exactly once
    assert predictions["prediction"].notna().all()
    assert pd.read_parquet(out / "predictions.parquet").shape == predictions.shape
    record = json.loads((Path(summary["folder"]) / "run.json").read_text())
    prs = record["parallel_run"]["batch-score"]
    assert prs["mini_batches"] > 1 and prs["failed_items"] == 0 and prs["result_rows"] == len(source)
    batch = summary["batch"]["batch-score"]  # the report's speed and failures summary
    assert batch["rows"] == len(source) and batch["failed_items"] == 0 and batch["first_failures"] == []
    assert batch["rows_per_second"] == pytest.approx(len(source) / batch["seconds"], rel=0.05)
    raw = Path(summary["folder"]) / "outputs" / "scores" / "parallel_run_step.txt"
    assert len(raw.read_text().splitlines()) == len(source)


def test_show_describes_the_parallel_run_step(amlops_home: Path) -> None:
    done = cli("pipelines.batch_score", "show", "--json", home=amlops_home)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert [s["sdk_type"] for s in info["steps"]] == ["ParallelRunStep", "PythonScriptStep"]
    assert info["steps"][0]["parallel_run"]["output_action"] == "append_row"
    assert set(info["parameters"]) >= {"model_name", "model_version", "mini_batch_size", "input_dataset"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model"], "no model named 'no-such-model' is registered"),
        (["--model", "bike-demand:99"], "model bike-demand:99 is not registered"),
        (["--set", "mini_batch_size=1XB"], "mini_batch_size '1XB' is not a size"),
        (["--set", "mini_batch_size=0"], "mini_batch_size must be more than 0"),
        (["--set", "process_count_per_node=0"], "process_count_per_node must be an integer greater than 0"),
        (["--set", "run_max_try=0"], "run_max_try must be an integer greater than 0"),
        (["--set", "run_invocation_timeout=0"], "run_invocation_timeout must be an integer greater than 0"),
        (
            ["--set", "error_threshold=-5"],
            "error_threshold '-5' is not an int value greater than or equal to -1",
        ),
        (["--set", "node_count=-1"], "node_count must be at least 1, got -1"),
        (
            ["--set", "key_columns=instant,nosuch"],
            "key column(s) nosuch not in new-days.csv (columns: instant, date",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    trained: tuple[Path, dict], new_data: Path, args: list[str], message: str
) -> None:
    home, _ = trained
    before = set((home / "runs").iterdir())
    done = cli("pipelines.batch_score", "run", "--input", str(new_data), *args, home=home)
    _assert_refused_before_running(done, home, before, message)


def _assert_refused_before_running(
    done: subprocess.CompletedProcess, home: Path, before: set[Path], message: str
) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    output = (done.stdout + done.stderr).strip().splitlines()
    assert [line for line in output if line.startswith("error:")] == output  # one line, no traceback
    assert len(output) == 1 and message in output[0]
    assert set((home / "runs").iterdir()) == before  # refused before any run started


def test_output_that_is_a_file_is_refused_before_running(
    trained: tuple[Path, dict], new_data: Path, tmp_path: Path
) -> None:
    home, _ = trained
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    before = set((home / "runs").iterdir())
    done = cli("pipelines.batch_score", "run", "--input", str(new_data), "--output", str(taken), home=home)
    _assert_refused_before_running(done, home, before, f"--output {taken} is a file, not a folder")
    assert taken.read_text() == "keep me"


def test_output_folder_check(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    batch_score.check_output_folder(folder / "new" / "deeper")  # created later, by the copy
    batch_score.check_output_folder(folder)
    assert list(folder.iterdir()) == []  # the check leaves nothing behind
    (folder / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        batch_score.check_output_folder(folder / "file")
    with pytest.raises(UserError, match=r"file is a file, not a folder"):
        batch_score.check_output_folder(folder / "file" / "sub")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("process_count_per_node", "0", "process_count_per_node must be an integer greater than 0"),
        ("run_max_try", "0", "run_max_try must be an integer greater than 0"),
        ("run_invocation_timeout", "0", "run_invocation_timeout must be an integer greater than 0"),
        ("error_threshold", "-5", "error_threshold '-5'"),
        ("node_count", "0", "node_count must be at least 1"),
    ],
)
def test_parallel_run_options_are_refused_when_built(name: str, value: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)) as info:
        batch_score.build(Settings().with_overrides({name: value}))
    assert f"--set {name}=" in info.value.hint


def test_error_threshold_minus_one_ignores_failures() -> None:
    definition = batch_score.build(Settings().with_overrides({"error_threshold": "-1"}))
    assert definition.steps[0]._parallel_run_config.error_threshold == -1


def test_missing_feature_columns_are_refused_before_running(
    trained: tuple[Path, dict], new_data: Path, tmp_path: Path
) -> None:
    home, _ = trained
    partial = tmp_path / "partial.csv"
    pd.read_csv(new_data).drop(columns=["temp", "hum"]).to_csv(partial, index=False)
    done = cli("pipelines.batch_score", "run", "--input", str(partial), home=home)
    assert done.returncode == 2
    assert "lacks the column(s) temp, hum" in done.stderr


def test_missing_input_file_is_refused(trained: tuple[Path, dict]) -> None:
    home, _ = trained
    done = cli("pipelines.batch_score", "run", "--input", "does-not-exist.csv", home=home)
    assert done.returncode == 2 and "neither a file nor a known dataset name" in done.stderr
