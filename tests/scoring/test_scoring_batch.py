"""scoring/scoring.py, the ParallelRunStep entry script: unit tests on mini-batches made here, and end to
end through the local engine (API and CLI) with a tiny registered LightGBM model."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmarks._model import using_env
from pipelines import datagen
from pipelines.local.parallel_run.cli import main
from pipelines.local.parallel_run.job import run_parallel
from pipelines.local.parallel_run.options import ParallelRunOptions
from pipelines.settings import PROJECT_ROOT
from scoring import scoring

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")

ENTRY = PROJECT_ROOT / "scoring" / "scoring.py"
FEATURES = ["season", "yr", "mnth", "weekday", "weathersit", "temp", "atemp", "hum", "windspeed"]
MODEL_NAME = "tiny-bike"


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local workspace holding a tiny LightGBM registered as ``tiny-bike`` (version 1), shared by this module."""
    import lightgbm
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    from pipelines.local.workspace import registry

    home = tmp_path_factory.mktemp("model-home")
    with using_env({"AMLOPS_HOME": str(home), **registry.mlflow_env(home)}):
        train = datagen.generate(3000, seed=21)
        model = lightgbm.LGBMRegressor(n_estimators=15, num_leaves=7, n_jobs=1, verbose=-1)
        model.fit(train[FEATURES], train.cnt)
        registry.configure_mlflow(home)
        mlflow.set_experiment(experiment_id=registry.ensure_experiment("scoring-tests"))
        sample = train[FEATURES].head(5)
        with mlflow.start_run():
            mlflow.lightgbm.log_model(
                model,
                name="model",
                signature=infer_signature(sample, model.predict(sample)),
                registered_model_name=MODEL_NAME,
            )
        yield home


@pytest.fixture
def registered(model_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Use the module's workspace (with the registered model) in this test."""
    from pipelines.local.workspace import registry

    monkeypatch.setenv("AMLOPS_HOME", str(model_home))
    registry.configure_mlflow(model_home)
    return model_home


@pytest.fixture
def loaded(registered: Path) -> tuple[Any, scoring.ScoringConfig]:
    """The registered model loaded as init() loads it, and the config init() builds."""
    import mlflow.pyfunc

    from pipelines.local.workspace import registry

    path = Path(registry.model_env(MODEL_NAME)["AZUREML_MODEL_DIR"]) / MODEL_NAME
    model = mlflow.pyfunc.load_model(str(path))
    config = scoring.ScoringConfig(
        features=scoring.model_features(model), keys=None, columns=scoring.signature_columns(model)
    )
    return model, config


def test_scores_every_row_with_keys_then_prediction(loaded: tuple[Any, scoring.ScoringConfig]) -> None:
    model, config = loaded
    batch = datagen.generate(200, seed=3).iloc[50:150]  # a slice: index not starting at 0
    out = scoring.score(model, batch, config)
    assert list(out.columns) == ["instant", "date", "prediction"]
    assert out.instant.tolist() == batch.instant.tolist() and out.date.tolist() == batch.date.tolist()
    np.testing.assert_allclose(out.prediction, model.predict(batch[FEATURES]))
    assert out.prediction.between(0, 20_000).all()


def test_features_come_from_the_model_signature(loaded: tuple[Any, scoring.ScoringConfig]) -> None:
    model, config = loaded
    assert config.features == tuple(FEATURES)
    whole = {c.name for c in config.columns if c.kind in ("integer", "long")}
    assert whole == {"season", "yr", "mnth", "weekday", "weathersit"}
    extra = datagen.generate(10).assign(unrelated="x")  # extra columns (label, leaks, others) are ignored
    assert len(scoring.score(model, extra, config)) == 10


def test_empty_mini_batch_gives_an_empty_result(loaded: tuple[Any, scoring.ScoringConfig]) -> None:
    model, config = loaded
    out = scoring.score(model, datagen.generate(0), config)
    assert out.empty and list(out.columns) == ["instant", "date", "prediction"]


def test_missing_feature_columns_raise_a_clear_error(loaded: tuple[Any, scoring.ScoringConfig]) -> None:
    model, config = loaded
    batch = datagen.generate(5).drop(columns=["temp", "hum"])
    with pytest.raises(ValueError, match="missing feature column\\(s\\) temp, hum"):
        scoring.score(model, batch, config)


def test_rows_with_values_of_the_wrong_type_are_left_out(loaded: tuple[Any, scoring.ScoringConfig]) -> None:
    model, config = loaded
    batch = datagen.generate(5, seed=4)
    # one text cell makes a CSV reader read the whole column as text
    batch["temp"] = batch.temp.astype(str).astype(object)
    batch.loc[3, "temp"] = "warm"
    refused: list = []
    out = scoring.score(model, batch, config, refused)
    assert out.instant.tolist() == [1, 2, 3, 5]
    assert [(r.row, r.column, r.problem) for r in refused] == [(3, "temp", 'expected a number, got "warm"')]
    clean = datagen.generate(5, seed=4).drop(index=[3])
    np.testing.assert_allclose(out.prediction, model.predict(clean[FEATURES]))


def test_rows_with_nulls_are_left_out_for_prs_to_count(loaded: tuple[Any, scoring.ScoringConfig]) -> None:
    model, config = loaded
    batch = datagen.generate(20, seed=8)
    batch["season"] = batch.season.astype("float64")
    batch.loc[[2, 5], "season"] = np.nan  # nulls turn an integer column float, as read_csv does
    batch.loc[7, "temp"] = np.nan
    batch.loc[9, "date"] = None  # a null key is kept: only features decide
    out = scoring.score(model, batch, config)
    assert out.instant.tolist() == [i for i in batch.instant if i not in (3, 6, 8)]
    clean = datagen.generate(20, seed=8).drop(index=[2, 5, 7])
    np.testing.assert_allclose(out.prediction, model.predict(clean[FEATURES]))
    all_null = batch.assign(hum=np.nan)
    assert scoring.score(model, all_null, config).empty


def test_explicit_key_columns_and_prediction_name(loaded: tuple[Any, scoring.ScoringConfig]) -> None:
    model, config = loaded
    custom = scoring.ScoringConfig(features=config.features, keys=("date",), prediction_column="cnt_pred")
    out = scoring.score(model, datagen.generate(3), custom)
    assert list(out.columns) == ["date", "cnt_pred"]
    with pytest.raises(ValueError, match="no key column"):
        scoring.score(model, datagen.generate(3).drop(columns=["date"]), custom)


def test_args_are_parsed_with_parse_known_args() -> None:
    args = scoring.parse_args(["--model_name", "m", "--key_columns", "a,b", "--azureml_injected", "1"])
    assert (args.model_name, args.key_columns, args.model_version) == ("m", "a,b", None)


def test_run_without_init_raises() -> None:
    with pytest.raises(RuntimeError, match="init"):
        scoring.run(datagen.generate(1))


def test_batch_scoring_end_to_end_on_the_local_engine(registered: Path, tmp_path: Path) -> None:
    data = datagen.write_csv(tmp_path / "new.csv", 3000, seed=99)
    options = ParallelRunOptions(
        entry_script=str(ENTRY),
        mini_batch_size="64KB",
        process_count_per_node=1,
        model=MODEL_NAME,
        arguments=("--model_name", MODEL_NAME),
        headered_output="csv",
    )
    result = run_parallel(options, [data], tmp_path / "out", progress=False)
    assert result.succeeded and result.failed_items == 0 and result.mini_batches > 2
    raw = pd.read_csv(result.output_file, sep=" ", header=None, names=["instant", "date", "prediction"])
    assert raw.instant.tolist() == list(range(1, 3001))  # every input row exactly once, in order
    headered = pd.read_csv(result.headered_file)
    assert list(headered.columns) == ["instant", "date", "prediction"]
    np.testing.assert_allclose(headered.prediction, raw.prediction, rtol=1e-9)


def test_cli_scores_and_reports(registered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = datagen.write_csv(tmp_path / "new.csv", 500, seed=5)
    frame = pd.read_csv(data)
    frame.loc[[10, 20], "temp"] = np.nan
    frame.to_csv(data, index=False)
    out = tmp_path / "out"
    argv = [str(ENTRY), "--input", str(data), "--output", str(out), "--model", MODEL_NAME,
            "--process-count-per-node", "1", "--error-threshold", "1", "--", "--model_name", MODEL_NAME]  # fmt: skip
    assert main(argv) == 1  # 2 null rows > error_threshold 1
    err = capsys.readouterr().err
    assert "2 failed items exceed error_threshold=1" in err
    assert not (out / "parallel_run_step.txt").exists()
    argv[argv.index("--error-threshold") + 1] = "2"
    assert main(argv) == 0
    assert len((out / "parallel_run_step.txt").read_text().splitlines()) == 498
    assert "rows/s" in capsys.readouterr().err


def test_cli_bad_input_exits_2_with_one_line(registered: Path, tmp_path: Path) -> None:
    data = datagen.write_csv(tmp_path / "new.csv", 50)
    base = [sys.executable, "-m", "pipelines.local.parallel_run", str(ENTRY), "--output", str(tmp_path / "o")]
    cases = {
        "missing input": [*base, "--input", str(tmp_path / "nope.csv")],
        "bad size": [*base, "--input", str(data), "--mini-batch-size", "1XB"],
        "unregistered model": [
            *base,
            "--input",
            str(data),
            "--model",
            "nobody",
            "--",
            "--model_name",
            "nobody",
        ],
    }
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    for case, argv in cases.items():
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, case
        assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, case
        assert not (tmp_path / "o" / "parallel_run_step.txt").exists()


def test_cli_missing_model_argument_is_an_init_error(registered: Path, tmp_path: Path) -> None:
    data = datagen.write_csv(tmp_path / "new.csv", 50)
    argv = [
        str(ENTRY),
        "--input",
        str(data),
        "--output",
        str(tmp_path / "o"),
        "--process-count-per-node",
        "1",
    ]
    assert main(argv) == 2  # no --model_name and no AZUREML_MODEL_DIR: init() fails, said in one line


def test_init_takes_the_model_folder_as_a_v2_model_input(
    registered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--model PATH (a v2 parallel job's mlflow_model input) loads that folder; no lookup by name is made."""
    import mlflow.pyfunc

    from pipelines.local.workspace import registry

    folder = Path(registry.model_env(MODEL_NAME)["AZUREML_MODEL_DIR"]) / MODEL_NAME
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    monkeypatch.setattr(sys, "argv", ["scoring.py", "--model", str(folder), "--key_columns", "instant"])
    monkeypatch.setattr(scoring, "_MODEL", None)
    scoring.init()
    batch = datagen.generate(40, seed=5)
    result = scoring.run(batch)
    expected = mlflow.pyfunc.load_model(str(folder)).predict(batch[FEATURES])
    assert list(result.columns) == ["instant", "prediction"]
    np.testing.assert_allclose(result["prediction"].to_numpy(), np.asarray(expected))


def test_a_model_input_that_is_not_an_mlflow_model_is_refused(tmp_path: Path) -> None:
    args = scoring.parse_args(["--model", str(tmp_path)])
    with pytest.raises(ValueError, match="not an MLflow model folder"):
        scoring.model_location(args)


def test_the_mlflow_lookup_takes_the_version_latest_when_the_worker_starts(
    amlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model_registry mlflow`` (an SDK v2 parallel job's lookup): the same arguments name version 1, then,
    once more versions are registered, the newest; ``--model_version`` pins one; ``init()`` loads what it names."""
    import mlflow
    from mlflow.pyfunc import PythonModel

    from pipelines.local.workspace import registry

    class Numbered(PythonModel):  # predicts its own version number, so a score shows which version loaded
        def __init__(self, number: int) -> None:
            self.number = number

        def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
            return [float(self.number)] * len(model_input)

    def register(number: int) -> None:
        with mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="model", python_model=Numbered(number), registered_model_name="lookup"
            )

    registry.configure_mlflow()
    args = ["--model_name", "lookup", "--model_registry", "mlflow", "--key_columns", "instant"]
    register(1)
    assert scoring.model_location(scoring.parse_args(args)) == ("lookup", "models:/lookup/1")
    register(2)
    register(3)
    assert scoring.model_location(scoring.parse_args(args)) == ("lookup", "models:/lookup/3")
    pinned = scoring.parse_args([*args, "--model_version", "2"])
    assert scoring.model_location(pinned) == ("lookup", "models:/lookup/2")
    latest = scoring.parse_args([*args, "--model_version", "0"])  # a v2 job's default: 0 is the latest
    assert scoring.model_location(latest) == ("lookup", "models:/lookup/3")

    monkeypatch.setattr(sys, "argv", ["scoring.py", *args])
    monkeypatch.setattr(scoring, "_MODEL", None)
    scoring.init()
    result = scoring.run(pd.DataFrame({"instant": [7, 8], "temp": [0.2, 0.3]}))
    assert result["instant"].tolist() == [7, 8] and result["prediction"].tolist() == [3.0, 3.0]

    with pytest.raises(ValueError, match="nobody has no version in the MLflow model registry"):
        scoring.model_location(scoring.parse_args(["--model_name", "nobody", "--model_registry", "mlflow"]))
