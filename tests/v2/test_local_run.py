"""SDK v2 pipeline job YAML on the local engine: the reader's plan, runs to Completed, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import cli

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")

EXAMPLES = Path(__file__).resolve().parent / "examples"
TRAIN_SCORE = EXAMPLES / "train_score"
AUTOML_BATCH = EXAMPLES / "automl_batch"


def test_reader_plan_of_command_components() -> None:
    from pipelines.core.plan import CommandStepPlan, DataRef, ParamRef
    from pipelines.core.v2_reader import read_pipeline

    pipe = read_pipeline(TRAIN_SCORE / "pipeline.yml")
    plan = pipe.plan
    assert [s.name for s in plan.steps] == ["prep_job", "train_job", "score_job"]
    assert all(isinstance(s, CommandStepPlan) for s in plan.steps)
    assert plan.parameters == {"test_fraction": 0.25, "label": "y"}
    assert plan.datasets["raw_data"].paths == (str(TRAIN_SCORE / "data"),)
    assert plan.datasets["raw_data"].asset_type == "uri_folder"
    prep, train, score = plan.steps
    assert prep.source_directory == TRAIN_SCORE / "src"
    assert DataRef("raw_data") in prep.command and ParamRef("test_fraction") in prep.command
    assert prep.outputs == ["prep_job.train_data", "prep_job.test_data"]
    # a literal node input is substituted as text; the unbound optional --seed block is left out
    text = "".join(p if isinstance(p, str) else "<>" for p in train.command)
    assert "--ridge 0.01" in text and "--seed" not in text
    assert train.inputs == ["prep_job.train_data"]
    assert train.variables["MODEL_NOTE"] == "fitted-by-v2-example"
    assert train.variables["AZURE_ML_OUTPUT_model_output"] == DataRef("train_job.model_output")
    assert train.allow_reuse is True and train.compute_target == "cpu-cluster"
    assert set(score.inputs) == {"train_job.model_output", "prep_job.test_data"}
    assert plan.outputs == {
        "trained_model": "train_job.model_output",
        "score_report": "score_job.score_report",
    }


def test_reader_maps_automl_and_parallel_nodes() -> None:
    from pipelines.core.plan import AutoMLStepPlan, DataRef, ParallelRunStepPlan
    from pipelines.core.v2_reader import read_pipeline

    plan = read_pipeline(AUTOML_BATCH / "pipeline.yml").plan
    automl, parallel = plan.steps
    assert isinstance(automl, AutoMLStepPlan) and isinstance(parallel, ParallelRunStepPlan)
    s = automl.settings
    assert (s.task, s.primary_metric, s.label_column_name) == ("regression", "r2_score", "y")
    assert (s.experiment_timeout_minutes, s.iterations, s.n_cross_validations) == (1, 2, 2)
    assert s.allowed_models == ["LightGBM", "RandomForest"] and s.enable_ensemble is False
    assert automl.model_format == "mlflow" and automl.outputs == ["train_node.best_model"]
    assert automl.training_data == "training_table"
    assert parallel.input_kinds == {"scoring_table": "tabular"}
    assert parallel.arguments[:2] == ["--model", DataRef("train_node.best_model")]
    o = parallel.options
    assert o["mini_batch_size"] == "256" and o["error_threshold"] == 5 and o["allowed_failed_count"] == 2
    assert o["allowed_failed_percent"] == 20.0 and o["run_max_try"] == 2 and o["run_invocation_timeout"] == 60
    assert o["process_count_per_node"] == 2 and o["node_count"] == 1 and o["output_action"] == "append_row"
    assert parallel.outputs == ["score_node.scored"] and plan.outputs == {"predictions": "score_node.scored"}


def test_train_score_pipeline_runs_to_completed(tmp_path: Path, amlops_home: Path) -> None:
    out = tmp_path / "out"
    done = cli("pipelines.v2", "run", str(TRAIN_SCORE / "pipeline.yml"), "--output", str(out), "--json",
               home=amlops_home)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "Completed"
    assert summary["steps"] == {"prep_job": "Completed", "train_job": "Completed", "score_job": "Completed"}
    report = json.loads((out / "score_report" / "metrics.json").read_text())
    assert report["rows"] == 10 and report["rmse"] < 2.0  # 40 rows, a quarter tested; noise sd 0.5
    assert report["note"] == "fitted-by-v2-example"  # the node's environment_variables reached the script
    model = json.loads((out / "trained_model" / "model.json").read_text())
    assert model["features"] == ["x1", "x2"] and model["seed"] is None
    assert abs(model["coef"][0] - 3) < 0.3 and abs(model["coef"][1] + 2) < 0.3
    assert summary["metrics"]["test_rmse"] == pytest.approx(report["rmse"])
    runs = cli("pipelines.workspace", "runs", "--json", home=amlops_home)
    listed = {r["run_id"]: r for r in json.loads(runs.stdout)}
    assert listed[summary["run_id"]]["status"] == "Completed"
    assert listed[summary["run_id"]]["pipeline"] == "train-score-v2"

    again = cli("pipelines.v2", "run", str(TRAIN_SCORE / "pipeline.yml"), "--set", "test_fraction=0.5", "--json",
                home=amlops_home)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    record = json.loads((Path(second["folder"]) / "run.json").read_text())
    assert record["parameters"]["test_fraction"] == 0.5
    assert not any(s.get("reused") for s in record["steps"])  # a new split: nothing to reuse
    metrics = json.loads(
        (Path(second["folder"]) / "outputs" / "score_job.score_report" / "metrics.json").read_text()
    )
    assert metrics["rows"] == 20
    third = cli("pipelines.v2", "run", str(TRAIN_SCORE / "pipeline.yml"), "--set", "test_fraction=0.5", "--json",
                home=amlops_home)  # fmt: skip
    record = json.loads((Path(json.loads(third.stdout)["folder"]) / "run.json").read_text())
    assert [s.get("reused") for s in record["steps"]] == [True, True, True]  # is_deterministic: reused


def test_automl_and_parallel_nodes_run_to_completed(tmp_path: Path, amlops_home: Path) -> None:
    out = tmp_path / "out"
    done = cli("pipelines.v2", "run", str(AUTOML_BATCH / "pipeline.yml"), "--output", str(out), "--json",
               home=amlops_home)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["steps"] == {"train_node": "Completed", "score_node": "Completed"}
    best = Path(summary["folder"]) / "outputs" / "train_node.best_model"
    assert (best / "MLmodel").is_file()
    import mlflow
    import pandas as pd

    table = pd.read_csv(AUTOML_BATCH / "data" / "score" / "score.csv")
    expected = mlflow.pyfunc.load_model(str(best)).predict(table)
    rows = (out / "predictions" / "parallel_run_step.txt").read_text().split("\n")
    got = {int(line.split()[0]): float(line.split()[1]) for line in rows if line}
    assert sorted(got) == table["id"].tolist()  # every row scored once
    for key, value in zip(table["id"], expected, strict=True):
        assert got[key] == pytest.approx(float(value))


def _example(tmp_path: Path) -> Path:
    target = tmp_path / "example"
    shutil.copytree(TRAIN_SCORE, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


BAD_INPUT = {
    "refused by azure-ai-ml": (
        ("pipeline.yml", "      ridge: 0.01", "      ridge: {type: uri_foldr, path: ./data}"),
        ("node train_job, field inputs.ridge", "uri_foldr"),
    ),
    "unbound required input": (
        ("pipeline.yml", "      ridge: 0.01\n", ""),
        ("node train_job, field inputs.ridge", "not provided"),
    ),
    "binding to a pipeline input that does not exist": (
        ("pipeline.yml", "      label: ${{parent.inputs.label}}\n      ridge", "      label: ${{parent.inputs.target}}\n      ridge"),
        ("node train_job, input label", "names no pipeline input"),
    ),
    "unknown ${{inputs.x}} in a command": (
        ("train.yml", "  --ridge ${{inputs.ridge}}", "  --ridge ${{inputs.ridge}} --alpha ${{inputs.alpha}}"),
        ("node train_job, field command", "${{inputs.alpha}}"),
    ),
    "missing local path": (
        ("pipeline.yml", "    path: ./data", "    path: ./no-such-folder"),
        ("pipeline input raw_data", "does not exist"),
    ),
    "literal of the wrong type": (
        ("pipeline.yml", "      ridge: 0.01", "      ridge: lots"),
        ("node train_job, input ridge", "expects number"),
    ),
    "remote data asset": (
        ("pipeline.yml", "    path: ./data", "    path: azureml:bike-data:1"),
        ("pipeline input raw_data", "remote data"),
    ),
    "unsupported node type (sweep)": (
        ("pipeline.yml", "  score_job:\n    type: command\n    component: ./score.yml\n",
         "  tune_job:\n    type: sweep\n    trial: ./train.yml\n    inputs:\n      train_data: ${{parent.jobs.prep_job.outputs.train_data}}\n"
         "      label: y\n    sampling_algorithm: random\n    search_space:\n      ridge: {type: choice, values: [0.1, 1]}\n"
         "    objective: {goal: minimize, primary_metric: test_rmse}\n    limits: {max_total_trials: 2}\n"
         "  score_job:\n    type: command\n    component: ./score.yml\n"),
        ("node tune_job, field type", "sweep"),
    ),
    "pipeline component nested in the pipeline": (
        ("pipeline.yml", "  score_job:\n    type: command\n    component: ./score.yml\n",
         "  inner:\n    type: pipeline\n    component: ./inner.yml\n"
         "  score_job:\n    type: command\n    component: ./score.yml\n"),
        ("node inner, field type", "nested"),
    ),
}  # fmt: skip

INNER = """$schema: https://azuremlschemas.azureedge.net/latest/pipelineComponent.schema.json
type: pipeline
name: inner
jobs:
  split:
    type: command
    component: ./prep.yml
    inputs:
      raw_data: {type: uri_folder, path: ./data}
"""


def _run_in_process(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    from pipelines.v2 import local_run

    code = local_run.run(argv)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def _no_runs(home: Path) -> bool:
    return not list((home / "runs").glob("*/run.json")) if (home / "runs").exists() else True


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_naming_node_and_field(
    case: str, tmp_path: Path, amlops_home: Path, capsys: pytest.CaptureFixture
) -> None:
    (file, old, new), expected = BAD_INPUT[case]
    example = _example(tmp_path)
    (example / "inner.yml").write_text(INNER)
    _edit(example / file, old, new)
    code, lines = _run_in_process([str(example / "pipeline.yml")], capsys)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    assert _no_runs(amlops_home)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "test_fractions=0.5"], "the pipeline has no input 'test_fractions'"),
        (["--set", "test_fraction=half"], "parameter 'test_fraction' expects a float"),
        (["--set", "raw_data=./no/such/folder"], "--set raw_data: ./no/such/folder does not exist"),
        (["--output", __file__], "is a file"),
    ],
)
def test_bad_arguments(
    args: list[str], expected: str, amlops_home: Path, capsys: pytest.CaptureFixture
) -> None:
    code, lines = _run_in_process([str(TRAIN_SCORE / "pipeline.yml"), *args], capsys)
    assert code == 2
    assert len(lines) == 1 and expected in lines[0], lines
    assert _no_runs(amlops_home)


def test_command_line_bad_input_exits_2_with_one_line(tmp_path: Path, amlops_home: Path) -> None:
    example = _example(tmp_path)
    _edit(example / "pipeline.yml", "      ridge: 0.01\n", "")
    done = cli("pipelines.v2", "run", str(example / "pipeline.yml"), home=amlops_home, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: node train_job, field inputs.ridge: Required input 'ridge' for component 'train_job' not provided."
    ]
    assert _no_runs(amlops_home)


def test_failing_step_ends_the_run_failed_not_running(tmp_path: Path, amlops_home: Path) -> None:
    example = _example(tmp_path)
    _edit(
        example / "src" / "score.py",
        "    model = json.loads(",
        '    raise SystemExit("score: no model")\n    model = json.loads(',
    )
    done = cli("pipelines.v2", "run", str(example / "pipeline.yml"), "--json", home=amlops_home)
    assert done.returncode == 1
    record = json.loads((Path(json.loads(done.stdout)["folder"]) / "run.json").read_text())
    assert record["status"] == "Failed"
    assert [s["status"] for s in record["steps"]] == ["Completed", "Completed", "Failed"]


def test_show_prints_the_plan() -> None:
    done = cli("pipelines.v2", "show", str(AUTOML_BATCH / "pipeline.yml"), "--json", home=Path("."))
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert [(s["name"], s["node_type"], s["kind"]) for s in info["steps"]] == [
        ("train_node", "automl", "automl"),
        ("score_node", "parallel", "parallel_run"),
    ]
    assert info["steps"][1]["parallel_run"]["arguments"].startswith("--model {train_node.best_model}")


def test_mltable_reader_honours_delimited_settings(tmp_path: Path) -> None:
    from pipelines.local.runtime import mltable

    folder = tmp_path / "table"
    folder.mkdir()
    (folder / "a.csv").write_text("k;v\n1;x\n2;\n", encoding="latin-1")
    (folder / "b.csv").write_text("3;é\n", encoding="latin-1")
    (folder / "MLTable").write_text(
        "paths:\n  - pattern: ./*.csv\ntransformations:\n  - read_delimited:\n      delimiter: ';'\n"
        "      encoding: latin1\n      header: from_first_file\n      empty_as_string: true\n"
        "  - keep_columns: [v]\n"
    )
    frame = mltable.read(folder)
    assert frame["v"].tolist() == ["x", "", "é"]
    assert mltable.plain_csv_files(folder) is None  # not plain CSV: the parallel engine gets a converted copy
    (folder / "MLTable").write_text("paths:\n  - file: https://example.com/x.csv\n")
    with pytest.raises(mltable.MLTableError, match="remote"):
        mltable.read(folder)


INLINE = """$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: inline-shell
inputs:
  word: hello
  table:
    type: uri_file
    path: ./table.csv
    mode: download
jobs:
  greet:
    type: command
    inputs:
      word: ${{parent.inputs.word}}
      table: ${{parent.inputs.table}}
      model:
        type: mlflow_model
        path: azureml:tiny-model:1
    outputs:
      out:
        type: uri_folder
    environment: azureml:some-env:3
    command: >-
      echo "$(head -1 ${{inputs.table}})-${{inputs.word}}" > ${{outputs.out}}/greeting.txt &&
      cp ${{inputs.model}}/MLmodel ${{outputs.out}}/MLmodel &&
      echo "$AZURE_ML_INPUT_table" > ${{outputs.out}}/input-env.txt
"""


def test_inline_shell_command_with_a_registered_model_input(
    tmp_path: Path, amlops_home: Path, capsys: pytest.CaptureFixture
) -> None:
    import mlflow
    from mlflow.pyfunc import PythonModel

    from pipelines.local.workspace import registry
    from pipelines.v2 import local_run

    class Constant(PythonModel):  # a model for the registry: what it predicts does not matter here
        def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
            return [1] * len(model_input)

    registry.configure_mlflow()
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=Constant(), registered_model_name="tiny-model")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "pipeline.yml").write_text(INLINE)
    code = local_run.run([str(tmp_path / "pipeline.yml"), "--set", "word=there", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    out = Path(summary["folder"]) / "outputs" / "greet.out"
    assert (out / "greeting.txt").read_text() == "a,b-there\n"  # the shell ran the command; --set reached it
    assert "python_function" in (out / "MLmodel").read_text()  # azureml:tiny-model:1 from the local registry
    copied = Path((out / "input-env.txt").read_text().strip())
    assert copied.name == "table.csv" and copied != tmp_path / "table.csv"  # mode: download gave a copy
    assert (tmp_path / "table.csv").is_file()


def test_automl_validation_data_is_the_holdout_set() -> None:
    import pandas as pd

    from pipelines.local.runtime import automl

    table = pd.read_csv(AUTOML_BATCH / "data" / "train" / "train.csv")
    settings = {"task": "regression", "primary_metric": "r2_score", "label_column_name": "y",
                "experiment_timeout_minutes": 1, "iterations": 2, "allowed_models": ["LightGBM"]}  # fmt: skip
    model, report = automl.train(table.iloc[:90], settings, validation=table.iloc[90:])
    assert report["validation_rows"] == 30
    assert len(model.predict(table.drop(columns=["y"]).head(3))) == 3
