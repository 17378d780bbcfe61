"""The training pipeline end to end on the local engine, its CLI, and its bad-input contract."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import train
from pipelines.core.definition import RunCheck, chosen_settings
from pipelines.datasets import KNOWN
from pipelines.errors import UserError
from pipelines.settings import Settings
from tests.conftest import cli

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")


def test_run_trains_registers_and_reports(trained: tuple[Path, dict], bike_csv_session: Path) -> None:
    home, summary = trained
    assert summary["status"] == "Completed"
    assert summary["steps"] == {"prep": "Completed", "automl": "Completed", "register": "Completed"}
    for key in ("test_nrmse", "test_rmse", "test_mae", "test_r2"):
        assert key in summary["metrics"]
    assert 0 < summary["metrics"]["test_nrmse"] < 0.5
    reg = summary["registration"]
    assert reg["registered"] is True and reg["version"] == 1 and "no model is registered yet" in reg["reason"]
    folder = Path(summary["folder"])
    assert json.loads((folder / "run.json").read_text())["status"] == "Completed"
    for step in ("prep", "automl", "register"):
        assert (folder / "logs" / f"{step}.log").stat().st_size > 0


def test_registered_model_predicts_from_raw_columns(trained: tuple[Path, dict], bike_csv_session: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    home, summary = trained
    monkeypatch.setenv("AMLOPS_HOME", str(home))
    import mlflow

    from pipelines.local.workspace import registry

    registry.configure_mlflow(home)
    model = mlflow.pyfunc.load_model("models:/bike-demand/1")
    raw = pd.read_csv(bike_csv_session).drop(columns=["cnt", "casual", "registered"]).tail(30)
    predictions = np.asarray(model.predict(raw))
    assert predictions.shape == (30,) and np.isfinite(predictions).all()
    tags = registry.get_model("bike-demand", 1).tags
    assert tags["data_sha256"] == KNOWN["bike-no"].sha256
    assert tags["run_id"] == summary["run_id"]
    assert float(tags["test_nrmse"]) == pytest.approx(summary["metrics"]["test_nrmse"], rel=1e-4)


def test_second_run_registers_only_if_better(trained: tuple[Path, dict]) -> None:
    home, first = trained
    done = cli("pipelines.train", "run", "--set", "iterations=2", "--json", home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads(done.stdout)
    better = second["metrics"]["test_nrmse"] < first["metrics"]["test_nrmse"]
    reg = second["registration"]
    assert reg["registered"] is better
    assert reg["version"] == (2 if better else 1)
    assert ("is better than" if better else "is not better than") in reg["reason"]


def test_any_tabular_csv_with_a_label_and_task(tmp_path: Path, amlops_home: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"width": rng.normal(size=240), "height": rng.normal(size=240),
                          "colour": rng.choice(["red", "blue"], 240)})  # fmt: skip
    frame["species"] = np.where(frame["width"] > frame["height"], "setosa", "virginica")
    path = tmp_path / "flowers.csv"
    frame.to_csv(path, index=False)
    done = cli("pipelines.train", "run", "--data", str(path), "--set", "label=species", "--set", "task=classification",
               "--set", "iterations=2", "--set", "model_name=flowers", "--json", home=amlops_home)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["registration"]["model_name"] == "flowers" and summary["registration"]["registered"]
    assert summary["metrics"]["test_accuracy"] > 0.7


def _assert_nothing_happened(home: Path) -> None:
    runs = list((home / "runs").glob("*/run.json")) if (home / "runs").exists() else []
    assert runs == [], "a bad-input run must not leave a run record"
    assert not (home / "mlartifacts").exists() or not any((home / "mlartifacts").rglob("MLmodel"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "label=nope"], "label column 'nope' is not in bike-no.csv"),
        (["--set", "nope=1"], "unknown setting 'nope'"),
        (["--set", "timeout_minutes=soon"], "timeout_minutes expects an integer"),
        (["--set", "task=clustering"], "task 'clustering' is not supported"),
        (["--data", "no-such-file.csv"], "neither a file nor a known dataset name"),
        (
            ["--set", "task=forecasting", "--set", "forecast_horizon=-4"],
            "forecast_horizon=-4: Value for argument",
        ),
        (["--set", "iterations=-3"], "iterations=-3: Value for argument [iterations] is out of range"),
        (
            ["--set", "time_column=nosuchcol"],
            "time_column 'nosuchcol' is not in bike-no.csv (columns: instant, date",
        ),
        (
            ["--set", "primary_metric=bogus"],
            "primary_metric 'bogus' does not fit task regression; use one of",
        ),
        (["--set", "allowed_models=nosuch"], "model(s) nosuch are not available on the local engine"),
        (["--set", "allowed_models=ElasticNet"], "model(s) ElasticNet are not available on the local engine"),
        (["--set", "label=date"], "label column 'date' is not numeric (e.g. '1/1/2011')"),
        (["--set", "task=forecasting", "--set", "time_column="], "forecasting needs a time column"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    args: list[str], message: str, amlops_home: Path
) -> None:
    done = cli("pipelines.train", "run", *args, home=amlops_home)
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    _assert_nothing_happened(amlops_home)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "iterations=-3"], "iterations=-3"),
        (
            ["--set", "primary_metric=bogus"],
            "Invalid argument(s) 'primary_metric' specified. Supported value(s)",
        ),
        (["--set", "allowed_models=nosuch"], "Invalid argument(s) 'allowed_models' specified"),
        (["--set", "task=forecasting", "--set", "forecast_horizon=0"], "forecast_horizon=0"),
    ],
)
def test_the_sdk_checks_automl_settings_when_the_pipeline_is_built(
    args: list[str], message: str, amlops_home: Path
) -> None:
    done = cli("pipelines.train", "show", *args, home=amlops_home)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: AutoML setting ") and message in done.stderr


def test_a_step_that_refuses_its_input_ends_with_one_error_line(amlops_home: Path) -> None:
    done = cli("pipelines.train", "run", "--set", "cutoff_date=2030-01-01", home=amlops_home)
    assert done.returncode == 2
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "step prep: cutoff_date 2030-01-01 leaves no test rows" in errors[0]
    assert "Traceback" not in done.stderr
    done = cli("pipelines.train", "run", "--set", "cutoff_date=2030-01-01", "--json", home=amlops_home)
    assert done.returncode == 2
    summary = json.loads(done.stdout)  # one JSON document: the summary, carrying the error
    assert summary["status"] == "Failed" and "leaves no test rows" in summary["error"]["message"]
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        f"error: step prep: {summary['error']['message']} (see {summary['folder']}/logs)"
    ]


def _check(settings: Settings, columns: list[str]) -> None:
    given = chosen_settings(settings)
    head = pd.DataFrame({c: [1.0] for c in columns})
    train.check_run(RunCheck(settings, given, Path("data.csv"), columns, head, argparse.Namespace()))


def test_time_column_must_be_in_the_data_only_when_asked_for() -> None:
    _check(Settings(label="y"), ["x", "y"])  # the default 'date' may be absent: prep splits at random
    _check(Settings(label="y", time_column=""), ["x", "y", "date"])  # empty: a random split, asked for
    _check(Settings(label="y", time_column="day"), ["day", "y"])
    with pytest.raises(UserError, match=r"time_column 'day' is not in data.csv \(columns: x, y\)") as info:
        _check(Settings(label="y", time_column="day"), ["x", "y"])
    assert "--set time_column= for a random 80/20 split" in info.value.hint
    with pytest.raises(UserError, match="time_column 'date' is not in data.csv"):
        _check(Settings(label="y", task="forecasting"), ["x", "y"])  # forecasting needs it, default or not


def test_empty_data_is_refused(tmp_path: Path, amlops_home: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b,cnt\n")
    done = cli("pipelines.train", "run", "--data", str(empty), home=amlops_home)
    assert done.returncode == 2 and "has no data rows" in done.stderr
    _assert_nothing_happened(amlops_home)


def test_show_prints_the_pipeline_offline(amlops_home: Path) -> None:
    done = cli("pipelines.train", "show", "--json", home=amlops_home)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert [(s["name"], s["sdk_type"]) for s in info["steps"]] == [
        ("prep", "PythonScriptStep"), ("automl", "AutoMLStep"), ("register", "PythonScriptStep")]  # fmt: skip
    assert info["parameters"]["label"] == "cnt" and info["schedule"]["frequency"] == "Week"
    assert info["steps"][0]["environment"] == "amlops-train"


def test_local_publish_adds_endpoint_versions(amlops_home: Path) -> None:
    first = json.loads(
        cli("pipelines.train", "publish", "--target", "local", "--json", home=amlops_home).stdout
    )
    second = json.loads(
        cli("pipelines.train", "publish", "--target", "local", "--json", home=amlops_home).stdout
    )
    assert (first["version"], second["version"]) == (0, 1)  # numbered from 0, as on Azure
    assert second["default_version"] == 0 and first["endpoint_id"] == second["endpoint_id"]
    assert second["version_url"].endswith(f"{second['endpoint_id']}/1")
    third = json.loads(
        cli(
            "pipelines.train", "publish", "--target", "local", "--set-default", "--json", home=amlops_home
        ).stdout
    )
    assert third["default_version"] == 2


def test_incomplete_workspace_config_is_refused(amlops_home: Path) -> None:
    done = cli("pipelines.train", "publish", home=amlops_home, env={"AZUREML_SUBSCRIPTION_ID": "x"})
    assert done.returncode == 2
    assert (
        "Azure workspace configuration is incomplete" in done.stderr
        and "AZUREML_RESOURCE_GROUP" in done.stderr
    )


def test_building_and_checking_the_automl_settings_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    train.build(Settings())
    with pytest.raises(UserError, match="iterations"):
        train.build(Settings(iterations=-3))
    assert list(cwd.iterdir()) == []  # the SDK's checks write automl.log unless told otherwise


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; AssertionError if the file is not a PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_a_run_shows_its_trials_records_them_and_logs_figures(
    trained: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    from pipelines.local.workspace import registry
    from steps import figures

    home, summary = trained
    monkeypatch.setenv("AMLOPS_HOME", str(home))
    log = (Path(summary["folder"]) / "logs" / "automl.log").read_text()
    rows = [x.split()[1:] for x in log.splitlines() if x.startswith("automl: ") and x.split()[1].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]  # iterations=4: one line per trial, in order
    assert "automl: summary (normalized_root_mean_squared_error" in log
    registry.configure_mlflow(home)
    automl_run = mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.`amlops.step` = 'automl' and tags.`amlops.run_id` = '{summary['run_id']}'",
    )[0]  # fmt: skip
    trials = mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{automl_run.info.run_id}'",
    )  # fmt: skip
    assert len(trials) == 4 and all("normalized_root_mean_squared_error" in t.data.metrics for t in trials)

    assert train.main(["models", "show", "bike-demand:1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["data_sha256"] == KNOWN["bike-no"].sha256
    assert shown["metrics"]["test_nrmse"] == pytest.approx(summary["metrics"]["test_nrmse"], rel=1e-4)
    assert set(shown["figures"]) == {"predicted_vs_actual", "residuals", "feature_importance"}
    for path in shown["figures"].values():
        assert png_size(path) == figures.SIZE
    assert train.main(["models", "show", "bike-demand"]) == 0
    assert "predicted_vs_actual: " in capsys.readouterr().out
    assert train.main(["models", "show", "bike-demand:9"]) == 2
