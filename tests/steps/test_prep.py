"""The prep step: schema checks, target-leak detection by checking, time split, and its CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steps import prep

STEPS = Path(prep.__file__).parent


def test_bike_leaks_are_found_by_their_values(bike_csv: Path) -> None:
    frame = pd.read_csv(bike_csv)
    leaks = prep.find_leaking_columns(frame, "cnt")
    assert set(leaks) == {"casual", "registered"}
    assert "sums with" in leaks["casual"]


def test_leak_detection_does_not_depend_on_column_names() -> None:
    rng = np.random.default_rng(0)
    a, b, c = rng.integers(0, 100, 200), rng.integers(0, 100, 200), rng.integers(0, 100, 200)
    frame = pd.DataFrame({"x1": a, "x2": b, "x3": c, "noise": rng.normal(size=200), "copy": a + b + c + 0})
    frame["y"] = a + b + c
    leaks = prep.find_leaking_columns(frame, "y")
    assert set(leaks) >= {"x1", "x2", "x3", "copy"}
    assert "noise" not in leaks


def test_honest_features_are_kept() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    frame = pd.DataFrame({"x": x, "z": rng.normal(size=300), "y": 3 * x + rng.normal(scale=2, size=300)})
    assert prep.find_leaking_columns(frame, "y") == {}


def test_split_by_cutoff_is_inclusive_and_ordered(bike_csv: Path) -> None:
    frame = pd.read_csv(bike_csv)
    train, test, how = prep.split_by_time(frame, "date", "2012-08-31")
    train_dates = pd.to_datetime(train["date"], format="mixed")
    test_dates = pd.to_datetime(test["date"], format="mixed")
    assert train_dates.max() == pd.Timestamp("2012-08-31")
    assert test_dates.min() == pd.Timestamp("2012-09-01")
    assert len(train) + len(test) == len(frame)
    assert "2012-08-31" in how


def test_split_without_cutoff_puts_the_last_fifth_in_test(bike_csv: Path) -> None:
    frame = pd.read_csv(bike_csv)
    train, test, _ = prep.split_by_time(frame, "date", "")
    assert abs(len(test) - 0.2 * len(frame)) <= 2
    assert (
        pd.to_datetime(train["date"], format="mixed").max()
        < pd.to_datetime(test["date"], format="mixed").min()
    )


def test_split_without_time_column_is_random_and_seeded() -> None:
    frame = pd.DataFrame({"a": range(100), "y": range(100)})
    first = prep.split_by_time(frame, "date", "2012-01-01")
    again = prep.split_by_time(frame, "date", "2012-01-01")
    assert len(first[1]) == 20
    assert first[1]["a"].tolist() == again[1]["a"].tolist()
    assert "random" in first[2]


def test_cutoff_outside_the_data_says_what_to_do(bike_csv: Path) -> None:
    frame = pd.read_csv(bike_csv)
    with pytest.raises(prep.PrepError, match="cutoff_date 2030-01-01 leaves no test rows"):
        prep.split_by_time(frame, "date", "2030-01-01")


@pytest.mark.parametrize(
    ("frame", "label", "task", "message"),
    [
        (pd.DataFrame({"a": [1, 2]}), "cnt", "regression", "label column 'cnt' not in the data"),
        (pd.DataFrame({"a": [1, 2], "y": ["x", "z"]}), "y", "regression", "is not numeric"),
        (pd.DataFrame({"a": [1, 2], "y": [1, 1]}), "y", "classification", "fewer than two classes"),
        (pd.DataFrame({"a": [1, 2], "y": [None, None]}), "y", "regression", "has no values"),
    ],
)
def test_schema_errors_name_the_problem(frame: pd.DataFrame, label: str, task: str, message: str) -> None:
    with pytest.raises(prep.PrepError, match=message):
        prep.validate_schema(frame, label, task)


def test_step_script_writes_train_test_and_report(bike_csv: Path, tmp_path: Path) -> None:
    args = ["--raw_data", str(bike_csv), "--label", "cnt", "--time_column", "date", "--cutoff_date", "2012-08-31",
            "--train_data", str(tmp_path / "train"), "--test_data", str(tmp_path / "test"),
            "--AZUREML_INJECTED", "ignored"]  # fmt: skip
    done = subprocess.run([sys.executable, "prep.py", *args], cwd=STEPS, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    train = pd.read_csv(tmp_path / "train" / "data.csv")
    report = json.loads((tmp_path / "test" / "prep_report.json").read_text())
    assert "casual" not in train.columns and "registered" not in train.columns
    assert report["train_rows"] == 609 and report["test_rows"] == 122
    assert report["label_max"] - report["label_min"] == 8692
    assert len(report["data_sha256"]) == 64


def test_step_script_fails_with_exit_2_and_writes_nothing(bike_csv: Path, tmp_path: Path) -> None:
    args = ["--raw_data", str(bike_csv), "--label", "nope", "--train_data", str(tmp_path / "train"),
            "--test_data", str(tmp_path / "test")]  # fmt: skip
    done = subprocess.run([sys.executable, "prep.py", *args], cwd=STEPS, capture_output=True, text=True)
    assert done.returncode == 2
    assert "label column 'nope' not in the data" in done.stderr
    assert not (tmp_path / "train").exists()
