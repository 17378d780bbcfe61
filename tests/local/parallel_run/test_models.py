"""The standalone ParallelRunStep CLI finds every registered model, as inside a pipeline; --model is the default."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from pipelines.local.parallel_run.job import run_parallel
from pipelines.local.parallel_run.options import ParallelRunOptions

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")

ENTRY = """
import json, os
from pathlib import Path
from azureml.core.model import Model

def init():
    global found
    found = {
        "default": Model.get_model_path("main-model"),
        "main_v1": Model.get_model_path("main-model", version=1),
        "other": Model.get_model_path("other-model"),
    }
    Path(os.environ["RECORD"]).write_text(json.dumps(found))

def run(mini_batch):
    return mini_batch
"""


def _register(name: str, versions: int) -> None:
    import mlflow

    from pipelines.local.workspace import registry

    class Const(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # noqa: ANN001
            return model_input

    registry.configure_mlflow()
    for _ in range(versions):
        with mlflow.start_run():
            mlflow.pyfunc.log_model(name="model", python_model=Const(), registered_model_name=name,
                                    pip_requirements=[])  # fmt: skip


def _paths(tmp_path: Path, model: str) -> dict[str, str]:
    entry = tmp_path / "src" / "entry.py"
    entry.parent.mkdir(exist_ok=True)
    entry.write_text(textwrap.dedent(ENTRY))
    data = tmp_path / "in.csv"
    pd.DataFrame({"a": range(10)}).to_csv(data, index=False)
    record = tmp_path / f"found-{model.replace(':', '-')}.json"
    opts = ParallelRunOptions(entry_script=str(entry), model=model, process_count_per_node=1,
                              environment_variables={"RECORD": str(record)})  # fmt: skip
    result = run_parallel(opts, [data], tmp_path / f"out-{model.replace(':', '-')}")
    assert result.succeeded, result.message
    return json.loads(record.read_text())


def test_every_registered_model_is_found_and_model_picks_the_default(tmp_path: Path) -> None:
    _register("main-model", 2)
    _register("other-model", 1)
    latest = _paths(tmp_path, "main-model")
    assert Path(latest["default"]).parts[-3:] == ("main-model", "2", "main-model")
    assert Path(latest["main_v1"]).parts[-3:] == ("main-model", "1", "main-model")
    assert Path(latest["other"]).parts[-3:] == ("other-model", "1", "other-model")
    assert (Path(latest["other"]) / "MLmodel").is_file()
    older = _paths(tmp_path, "main-model:1")
    assert Path(older["default"]).parts[-3:] == ("main-model", "1", "main-model")
    assert (Path(older["default"]) / "MLmodel").is_file()
    assert Path(older["other"]).parts[-3:] == ("other-model", "1", "other-model")
    assert (Path(older["other"]) / "MLmodel").is_file()
