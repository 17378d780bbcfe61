"""scoring/score.py in-process, without a server: swagger schema, predictions, and 400s for bad input."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from benchmarks._model import LEAKING_COLUMNS, raw_rows, shared_model_home, using_env, using_home
from pipelines.datagen import COLUMNS
from pipelines.settings import PROJECT_ROOT

SCORE_PY = PROJECT_ROOT / "scoring" / "score.py"
RAW_COLUMNS = [c for c in COLUMNS if c not in (*LEAKING_COLUMNS, "cnt")]  # what the model takes


def load_score_module(env: dict[str, str]) -> ModuleType:
    """Import score.py the way azureml-inference-server-http does (spec_from_file_location)."""
    with using_env(env):
        spec = importlib.util.spec_from_file_location("entry_module", SCORE_PY)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.init()
    return module


@pytest.fixture(scope="module")
def scored(
    tmp_path_factory: pytest.TempPathFactory, bike_csv_path: Path
) -> tuple[ModuleType, dict[str, str]]:
    home = shared_model_home(tmp_path_factory.getbasetemp(), bike_csv_path)
    with using_home(home):
        from pipelines.local.workspace.registry import model_env

        env = model_env("bike-demand")
    return load_score_module(env), env


@pytest.fixture(scope="module")
def bike_csv_path() -> Path:
    from pipelines.datasets import resolve

    shared = PROJECT_ROOT.parent / "shared" / "data"
    if not os.environ.get("AMLOPS_DATA_DIR") and (shared / "bike-no.csv").is_file():
        os.environ["AMLOPS_DATA_DIR"] = str(shared)
    return resolve("bike-no")


@pytest.fixture
def score(scored: tuple[ModuleType, dict[str, str]]) -> ModuleType:
    return scored[0]


def rows(csv: Path, n: int = 2) -> list[dict]:
    return json.loads(raw_rows(csv).tail(n).to_json(orient="records"))


def test_run_returns_one_prediction_per_row_equal_to_the_models(scored: tuple, bike_csv_path: Path) -> None:
    import mlflow

    score, env = scored
    payload = rows(bike_csv_path, 3)
    answer = score.run(payload)
    model = mlflow.pyfunc.load_model(str(Path(env["AZUREML_MODEL_DIR"]) / "bike-demand"))
    expected = model.predict(raw_rows(bike_csv_path).tail(3))
    assert list(answer) == ["result"]
    assert len(answer["result"]) == 3
    assert np.allclose(answer["result"], np.asarray(expected))


def test_swagger_documents_every_raw_column_with_types_and_an_example(score: ModuleType) -> None:
    from inference_schema.schema_util import get_input_schema, get_output_schema

    schema = get_input_schema(score.run)
    data = schema["properties"]["data"]
    props = data["items"]["properties"]
    assert list(props) == RAW_COLUMNS
    assert props["instant"]["type"] == "integer" and props["temp"]["type"] == "number"
    assert props["date"]["type"] == "string"
    assert data["items"]["required"] == RAW_COLUMNS and data["items"]["additionalProperties"] is False
    assert schema["required"] == ["data"]
    example = schema["example"]["data"]
    assert len(example) == 2 and set(example[0]) == set(RAW_COLUMNS)
    assert not set(LEAKING_COLUMNS) & set(props) and "cnt" not in props
    assert get_output_schema(score.run)["properties"]["result"]["items"]["type"] == "number"


def test_swagger_example_is_accepted_by_run(score: ModuleType) -> None:
    from inference_schema.schema_util import get_input_schema

    example = get_input_schema(score.run)["example"]["data"]
    assert len(score.run(example)["result"]) == len(example)


def test_decode_builds_columns_typed_as_the_signature(score: ModuleType, bike_csv_path: Path) -> None:
    frame = score.decode(rows(bike_csv_path), score.SCHEMA)
    assert list(frame.columns) == RAW_COLUMNS
    assert frame["instant"].dtype == np.int64 and frame["temp"].dtype == np.float64
    assert frame["date"].tolist() == ["12/30/2012", "12/31/2012"]


def test_integral_floats_are_accepted_for_integer_columns(score: ModuleType, bike_csv_path: Path) -> None:
    payload = rows(bike_csv_path, 1)
    payload[0]["season"] = 1.0
    assert score.decode(payload, score.SCHEMA)["season"].tolist() == [1]


def _bad(payload_change, csv: Path) -> list[dict] | object:
    payload = rows(csv)
    return payload_change(payload)


BAD_INPUTS = {
    "empty list": (lambda p: [], "data: expected at least one row"),
    "not a list": (lambda p: {"instant": 1}, "data: expected a list"),
    "row not an object": (lambda p: [1, 2], "data[0]: expected an object"),
    "missing column": (
        lambda p: [{k: v for k, v in r.items() if k != "temp"} for r in p],
        "data[0]: missing column(s) 'temp'",
    ),  # fmt: skip
    "extra leaking column": (
        lambda p: [{**r, "casual": 3} for r in p],
        "data[0]: unknown column(s) 'casual'",
    ),
    "string for a number": (
        lambda p: [p[0], {**p[1], "hum": "wet"}],
        'data[1].hum: expected a number, got string "wet"',
    ),  # fmt: skip
    "boolean for an integer": (
        lambda p: [{**p[0], "yr": True}, p[1]],
        "data[0].yr: expected an integer, got boolean",
    ),
    "null value": (lambda p: [{**p[0], "windspeed": None}], "data[0].windspeed: expected a number, got null"),
    "number for a string": (lambda p: [{**p[0], "date": 20121230}], "data[0].date: expected a string"),
    "fractional integer": (lambda p: [{**p[0], "mnth": 1.5}], "data[0].mnth: expected an integer"),
    "non-finite number": (
        lambda p: [{**p[0], "temp": float("nan")}],
        "data[0].temp: expected a finite number",
    ),
    "text that is not a date": (
        lambda p: [p[0], {**p[1], "date": "notadate"}],
        "data[1].date: expected a date like '1/1/2011', got \"notadate\"",
    ),
    "a day that does not exist": (
        lambda p: [{**p[0], "date": "13/45/2012"}],
        "data[0].date: expected a date like '1/1/2011', got \"13/45/2012\"",
    ),
    "integer out of range": (
        lambda p: [{**p[0], "instant": 2**70}],
        "data[0].instant: expected a 64-bit integer",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_400_naming_the_field(score: ModuleType, bike_csv_path: Path, case: str) -> None:
    change, message = BAD_INPUTS[case]
    answer = score.run(_bad(change, bike_csv_path))
    assert answer.status_code == 400
    body = json.loads(answer.get_data())
    assert message in body["message"]


def test_model_name_falls_back_to_the_model_dir(score: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMLOPS_MODEL_NAME", raising=False)
    monkeypatch.setenv("AZUREML_MODEL_DIR", "/var/azureml-app/azureml-models/my-model/7")
    assert score.model_name() == "my-model"


def test_schema_falls_back_to_the_input_example_without_a_signature(
    score: ModuleType, tmp_path: Path
) -> None:
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
            return np.zeros(len(model_input))

    example = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5], "c": ["x", "y"]})
    mlflow.pyfunc.save_model(str(tmp_path / "m"), python_model=Echo(), pip_requirements=[])
    (tmp_path / "m" / "input_example.json").write_text(example.to_json(orient="split", index=False))
    meta = (tmp_path / "m" / "MLmodel").read_text()
    (tmp_path / "m" / "MLmodel").write_text(
        meta
        + "saved_input_example_info:\n  artifact_path: input_example.json\n  pandas_orient: split\n  type: dataframe\n"
    )
    schema = score.read_input_schema(tmp_path / "m")
    assert [(c.name, c.kind) for c in schema.columns] == [("a", "long"), ("b", "double"), ("c", "string")]
    assert schema.example[0] == {"a": 1, "b": 0.5, "c": "x"}


def test_predict_skips_mlflows_second_schema_check_with_the_same_answers(
    scored: tuple, bike_csv_path: Path
) -> None:
    score, _ = scored
    frame = score.decode(rows(bike_csv_path, 5), score.SCHEMA)
    assert score.predict != score.model.predict
    assert np.allclose(np.asarray(score.predict(frame)), np.asarray(score.model.predict(frame)))


class _Disagreeing:
    """A pyfunc stand-in whose PythonModel answers differently from its MLflow predict."""

    model_config: dict = {}

    def __init__(self, real: object) -> None:
        self.real = real

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.ones(len(frame))

    def unwrap_python_model(self) -> object:
        class Inner:
            def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
                return np.zeros(len(model_input))

        return Inner()


def test_predict_keeps_mlflows_predict_when_the_direct_call_disagrees(scored: tuple) -> None:
    score, env = scored
    fake = _Disagreeing(score.model)
    chosen = score.direct_predictor(fake, Path(env["AZUREML_MODEL_DIR"]) / "bike-demand", score.SCHEMA)
    assert chosen == fake.predict


def test_dates_follow_the_learned_format_which_the_swagger_documents(
    score: ModuleType, bike_csv_path: Path
) -> None:
    import re

    payload = rows(bike_csv_path, 1)
    assert payload[0]["date"] == "12/31/2012"
    padded = [{**payload[0], "date": "12/31/2012"}, {**payload[0], "date": "02/29/2012"}]
    assert score.run(padded)["result"][0] == score.run(payload)["result"][0]  # a leap day exists too
    iso = score.run([{**payload[0], "date": "2012-12-31"}])
    assert (
        iso.status_code == 400 and "expected a date like '1/1/2011'" in json.loads(iso.get_data())["message"]
    )
    swagger = score.get_input_schema(score.run)
    pattern = re.compile(swagger["properties"]["data"]["items"]["properties"]["date"]["pattern"])
    assert all(pattern.match(row["date"]) for row in swagger["example"]["data"])
    assert pattern.match("11/30/2011") and not any(
        pattern.match(d) for d in ("2/30/2012", "4/31/2011", "2012-12-31")
    )
