"""Bad batch and training data, as a careless user or an attacker sends it: each probe is refused before a
run starts with one line (exit 2), or, where the user allows failed rows, scored without those rows and
a report that lists them. Batch scoring and ``/score`` refuse the same rows."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmarks._model import shared_model_home, using_env, using_home
from pipelines.datagen import write_csv
from tests.conftest import cli

pytestmark = pytest.mark.slow  # services, the SDK's graph builder or the package index

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = "bike-demand"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, bike_csv_session: Path) -> Path:
    """A workspace with a small raw-columns model registered (dates learned as ``1/1/2011``)."""
    return shared_model_home(tmp_path_factory.getbasetemp(), bike_csv_session, name=MODEL)


@pytest.fixture
def new_data(tmp_path: Path) -> Path:
    folder = tmp_path / "input"
    folder.mkdir()
    return write_csv(folder / "new-days.csv", 400, seed=5)


def _set_cells(csv_path: Path, cells: dict[tuple[int, str], str]) -> None:
    """Write text into cells (data row position, column) of a CSV, keeping every other byte as it is."""
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    for (row, column), value in cells.items():
        frame.loc[row, column] = value
    frame.to_csv(csv_path, index=False)


def _runs(home: Path) -> set[Path]:
    runs = home / "runs"
    return set(runs.iterdir()) if runs.is_dir() else set()


def _assert_one_line_exit_2(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines  # one line, no traceback
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _batch(home: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    return cli(
        "pipelines.batch_score", "run", "--input", str(data), "--model", f"{MODEL}:1", *args, home=home
    )


# -- 10: input checked against the model's signature before any worker starts --------------------


def test_text_in_a_number_column_is_refused_before_running(home: Path, new_data: Path) -> None:
    _set_cells(new_data, {(6, "temp"): "warm"})
    before = _runs(home)
    done = _batch(home, new_data, "--set", "error_threshold=0")
    line = _assert_one_line_exit_2(done, "new-days.csv row 7, column 'temp'", 'expected a number, got "warm"')
    assert "error_threshold is 0" in line
    assert _runs(home) == before  # no run was started, so no worker


def test_failed_rows_allowed_by_error_threshold_are_listed(
    home: Path, new_data: Path, tmp_path: Path
) -> None:
    _set_cells(new_data, {(6, "temp"): "warm", (20, "season"): "1.5", (30, "date"): "2/30/2012"})
    out = tmp_path / "predictions"
    done = _batch(home, new_data, "--output", str(out), "--set", "error_threshold=3", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["failed_rows"] == {"count": 3, "report": str(out.resolve() / "failed_rows.csv")}
    with open(out / "failed_rows.csv", newline="") as fh:
        listed = list(csv.DictReader(fh))
    assert [(r["file"], r["row"], r["column"]) for r in listed] == [
        ("new-days.csv", "7", "temp"),
        ("new-days.csv", "21", "season"),
        ("new-days.csv", "31", "date"),
    ]
    assert listed[1]["problem"] == "expected an integer, got 1.5"
    assert listed[2]["problem"] == "expected a date like '1/1/2011', got \"2/30/2012\""
    predictions = pd.read_csv(out / "predictions.csv")
    source = pd.read_csv(new_data, dtype=str)
    assert sorted(predictions["instant"]) == sorted(
        int(i) for n, i in enumerate(source["instant"]) if n not in (6, 20, 30)
    )
    record = json.loads((Path(summary["folder"]) / "run.json").read_text())
    assert record["parallel_run"]["batch-score"]["failed_items"] == 3  # ParallelRunStep counted the same rows


def test_more_bad_rows_than_error_threshold_are_refused(home: Path, new_data: Path) -> None:
    _set_cells(new_data, {(row, "hum"): "n/a?" for row in (3, 4, 5)})
    before = _runs(home)
    done = _batch(home, new_data, "--set", "error_threshold=2")
    _assert_one_line_exit_2(done, "row 4, column 'hum'", "at least 3 rows", "error_threshold is 2")
    assert _runs(home) == before


def test_duplicate_columns_in_batch_input_are_refused(home: Path, new_data: Path) -> None:
    text = new_data.read_text().splitlines()
    text[0] = text[0].replace("atemp", "temp")
    new_data.write_text("\n".join(text) + "\n")
    before = _runs(home)
    done = _batch(home, new_data)
    _assert_one_line_exit_2(done, "new-days.csv repeats the column name(s) temp")
    assert _runs(home) == before


# -- 11: one rule for dates and types on both paths -----------------------------------------------


def _load_score(env: dict[str, str]) -> ModuleType:
    """scoring/score.py loaded as azureml-inference-server-http loads it (spec_from_file_location)."""
    with using_env(env):
        spec = importlib.util.spec_from_file_location(
            "entry_module_adversarial", PROJECT_ROOT / "scoring" / "score.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.init()
    return module


@pytest.fixture(scope="module")
def both_paths(home: Path) -> tuple[ModuleType, Any, Any]:
    """The online script (init()ed) and, for batch scoring, the loaded model and scoring.py's config."""
    import mlflow.pyfunc

    from scoring import scoring

    with using_home(home):
        from pipelines.local.workspace.registry import model_env

        env = model_env(MODEL)
    online = _load_score({**env, "AMLOPS_MODEL_NAME": MODEL})
    model = mlflow.pyfunc.load_model(str(Path(env["AZUREML_MODEL_DIR"]) / MODEL))
    config = scoring.ScoringConfig(
        features=scoring.model_features(model), keys=("instant",), columns=scoring.signature_columns(model)
    )
    return online, model, config


PROBES = [
    ("date", "2/30/2012"),  # a day that does not exist
    ("date", "2/29/2011"),
    ("date", "2012-01-05"),  # a date, but not written as the model learned them
    ("date", "notadate"),
    ("date", "4/12/2262"),  # past pandas' dates
    ("date", "2/29/2012"),  # exists: accepted on both paths
    ("date", "12/31/2012"),
    ("temp", "warm"),
    ("season", 1.5),
    ("season", 2.0),  # a whole number: accepted on both paths
    ("hum", None),
]


@pytest.mark.parametrize(("column", "value"), PROBES)
def test_the_recorded_rule_refuses_what_the_loaded_model_refuses(
    home: Path, bike_csv_session: Path, column: str, value: Any
) -> None:
    """batch_score's pre-check reads the rule from the MLmodel file (no MLflow import, no model load):
    the same columns and types, and the same dates refused, as the loaded model's own rule."""
    from pipelines import batch_score
    from pipelines.local.workspace import registry
    from scoring.input_rules import check_frame

    with using_home(home):
        model = registry.get_model(MODEL)
        recorded = batch_score._recorded_rule(model)
        loaded = batch_score._loaded_rule(model)
    assert recorded is not None and recorded[0] == loaded[0]
    batch = pd.read_csv(bike_csv_session).drop(columns=["cnt", "casual", "registered"]).tail(3).astype(object)
    batch = batch.reset_index(drop=True)
    batch.loc[1, column] = value
    assert recorded[1](batch) == loaded[1](batch)
    found = [
        [(b.row, b.column, b.problem) for b in check_frame(batch, rule[0], rule[1])[2]]
        for rule in (recorded, loaded)
    ]
    assert found[0] == found[1]


def test_the_batch_pre_check_imports_no_mlflow(home: Path, new_data: Path) -> None:
    _set_cells(new_data, {(3, "date"): "2/30/2012"})
    code = (
        "import sys; from pathlib import Path; from pipelines import batch_score; "
        "from pipelines.local.workspace import registry; "
        f"refused = batch_score.check_rows(Path(sys.argv[1]), registry.get_model({MODEL!r}), -1); "
        "print([(r.row, r.column) for r in refused], 'mlflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(new_data)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "AMLOPS_HOME": str(home)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[(4,", "'date')]", "False"]


@pytest.mark.parametrize(("column", "value"), PROBES)
def test_batch_and_online_scoring_refuse_the_same_rows(
    both_paths: tuple[ModuleType, Any, Any], bike_csv_session: Path, column: str, value: Any
) -> None:
    from scoring import scoring

    online, model, config = both_paths
    rows = pd.read_csv(bike_csv_session).drop(columns=["cnt", "casual", "registered"]).tail(3)
    payload = json.loads(rows.to_json(orient="records"))
    payload[1][column] = value
    answer = online.run(payload)
    online_refuses = not isinstance(answer, dict)
    if online_refuses:
        assert answer.status_code == 400 and f"data[1].{column}" in json.loads(answer.get_data())["message"]

    batch = rows.astype(object).reset_index(drop=True)  # as a CSV reader gives a column with a text cell
    batch.loc[1, column] = value
    refused: list = []
    out = scoring.score(model, batch, config, refused)
    assert [(r.row, r.column) for r in refused] == ([(1, column)] if online_refuses else [])
    assert len(out) == (2 if online_refuses else 3)
    if not online_refuses:
        np.testing.assert_allclose(out["prediction"], answer["result"])


def test_entry_script_fails_a_mini_batch_with_repeated_columns(
    both_paths: tuple[ModuleType, Any, Any], bike_csv_session: Path
) -> None:
    """On Azure nothing checks before the run: the entry script names the repeated column itself."""
    from scoring import scoring

    _, model, config = both_paths
    rows = pd.read_csv(bike_csv_session).head(4)
    repeated = pd.concat([rows, rows[["temp"]]], axis=1)
    with pytest.raises(ValueError, match=r"mini-batch has duplicate column name\(s\) 'temp'"):
        scoring.score(model, repeated, config)


# -- 12: --output inside or equal to the input folder ---------------------------------------------


@pytest.mark.parametrize("where", ["equal", "inside"])
def test_output_in_the_input_folder_is_refused(home: Path, new_data: Path, where: str) -> None:
    folder = new_data.parent
    target = folder if where == "equal" else folder / "predictions"
    before, files = _runs(home), sorted(folder.rglob("*"))
    done = _batch(home, folder, "--output", str(target))
    _assert_one_line_exit_2(done, f"--output {target} is inside the input folder {folder}")
    assert _runs(home) == before and sorted(folder.rglob("*")) == files  # the input is untouched


# -- 13: duplicate column names in training data ---------------------------------------------------


def test_duplicate_columns_in_training_data_are_refused(tmp_path: Path, amlops_home: Path) -> None:
    data = write_csv(tmp_path / "train.csv", 200, seed=3)
    lines = data.read_text().splitlines()
    lines[0] = lines[0].replace("atemp", "temp").replace("casual", "cnt")
    data.write_text("\n".join(lines) + "\n")
    done = cli("pipelines.train", "run", "--data", str(data), "--set", "iterations=2", home=amlops_home)
    _assert_one_line_exit_2(done, "train.csv repeats the column name(s) temp, cnt")
    assert _runs(amlops_home) == set()


def test_prep_step_refuses_duplicate_columns(tmp_path: Path) -> None:
    """The prep step itself (it runs on Azure without the CLI's check) exits 2 naming them."""
    data = write_csv(tmp_path / "train.csv", 50, seed=3)
    lines = data.read_text().splitlines()
    lines[0] = lines[0].replace("casual", "cnt")
    data.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [sys.executable, "prep.py", "--raw_data", str(data), "--label", "cnt", "--train_data", str(tmp_path / "a"),
         "--test_data", str(tmp_path / "b")],
        cwd=PROJECT_ROOT / "steps", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "error: train.csv repeats the column name(s) cnt; give each column its own name"
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
