"""The exported SDK v2 pipelines against their SDK v1 definitions, on the local engine.

``train export --sdk v2`` and ``batch_score export --sdk v2`` write pipeline jobs; read back by the v2
reader they give the plan the v1 steps give (steps, order, bindings, options, parameters), and run with
``python -m pipelines.v2 run`` they register a model with the same test metrics and score a batch with
the same predictions, row for row, as the v1 pipelines on the same data, seed and iteration cap.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.conftest import cli

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")

# FLAML's max_iter. Two trials are quick and exactly reproducible: the second trial's learner is chosen
# from costs that all scale with the first trial's time; from the third on, measured times can tip it.
ITERATIONS = "2"
BATCH_ROWS = 40
MLTABLE = """paths:
  - pattern: ./*.csv
transformations:
  - read_delimited:
      delimiter: ","
      header: all_files_same_headers
      encoding: utf8
"""


# ---- the plans ----------------------------------------------------------------------------------
def _family(step: Any) -> str:
    return {"script": "command"}.get(step.kind, step.kind)  # a PythonScriptStep becomes a command node


def _ident(name: str) -> str:
    return name.replace("-", "_")  # v2 node names are identifiers: batch-score -> batch_score


def _origins(plan: Any) -> dict[str, tuple]:
    """Each data name -> where it comes from: ("input", pipeline input) or ("step", node, which output)."""
    out: dict[str, tuple] = {}
    for name in plan.datasets:  # a v1 dataset is bound to the PipelineParameter whose default names it
        param = next((p for p, v in plan.parameters.items() if v == f"dataset:{name}"), name)
        out[name] = ("input", param)
    for step in plan.steps:
        for index, data in enumerate(step.outputs):
            which = "model" if data == getattr(step, "model_output", None) else index
            out[data] = ("step", _ident(step.name), which)
    return out


def _token(arg: Any, origins: dict[str, tuple]) -> Any:
    from pipelines.core.plan import DataRef, ParamRef

    if isinstance(arg, DataRef):
        return ("data", *origins[arg.name])
    if isinstance(arg, ParamRef):
        return ("param", arg.name)
    return arg


def _argv(step: Any, origins: dict[str, tuple]) -> list[Any]:
    """The step's command line, every reference replaced by where its value comes from."""
    from pipelines.v2.documents import PRS_FLAGS, PRS_INDEXED_FLAG

    if step.kind == "script":
        return ["python", step.script_name, *(_token(a, origins) for a in step.arguments)]
    if step.kind == "parallel_run":  # v1 lists ParallelRunStep's own driver flags first; v2 has none
        args, out, skip = list(step.arguments), [], False
        for i, arg in enumerate(args):
            if skip:
                skip = False
            elif isinstance(arg, str) and (arg in PRS_FLAGS or PRS_INDEXED_FLAG.match(arg)):
                skip = i + 1 < len(args)
            else:
                out.append(_token(arg, origins))
        return out
    refs: dict[str, Any] = {}
    text = ""
    for part in step.command:
        if isinstance(part, str):
            text += part
        else:
            marker = f"@ref{len(refs)}@"
            refs[marker] = _token(part, origins)
            text += marker
    tokens = [refs.get(t, t) for t in shlex.split(text)]
    return tokens[: tokens.index("&&")] if "&&" in tokens else tokens


def _shape(plan: Any) -> list[dict]:
    origins = _origins(plan)
    return [
        {
            "kind": _family(step),
            "name": _ident(step.name),
            "argv": _argv(step, origins) if step.kind != "automl" else None,
            "inputs": sorted((origins[i] for i in step.inputs), key=repr),
            "outputs": len(step.outputs),
            "compute": step.compute_target,
        }
        for step in plan.steps
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("exported")
    home = tmp_path_factory.mktemp("export-home")
    files: dict[str, Any] = {}
    for module, folder in (("pipelines.train", "train"), ("pipelines.batch_score", "batch")):
        done = cli(module, "export", "--sdk", "v2", "--out", str(out / folder), "--set", f"iterations={ITERATIONS}",
                   home=home, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        (files[folder],) = (out / folder).glob("*.pipeline.yml")
        files[f"{folder}_printed"] = done.stdout
    return files


@pytest.fixture(scope="module")
def batch_input(tmp_path_factory: pytest.TempPathFactory, bike_csv_session: Path) -> Path:
    """The last BATCH_ROWS rows of the bike data: a CSV (v1's --input) in a folder with its MLTable (v2's)."""
    folder = tmp_path_factory.mktemp("batch-input")
    pd.read_csv(bike_csv_session).tail(BATCH_ROWS).to_csv(folder / "rows.csv", index=False)
    (folder / "MLTable").write_text(MLTABLE)
    return folder


def _plans(module: str, yml: Path, data: dict[str, str]) -> tuple[Any, Any]:
    from pipelines import batch_score, train
    from pipelines.core import v1_reader
    from pipelines.core.v2_reader import read_pipeline
    from pipelines.settings import Settings

    build = {"train": train.build, "batch": batch_score.build}[module]
    v1 = v1_reader.read_steps(build(Settings(iterations=int(ITERATIONS)), None).steps)
    return v1, read_pipeline(yml, data_paths=data).plan


def test_training_plan_matches_v1(exported: dict[str, Any], bike_csv_session: Path) -> None:
    from pipelines.core.plan import DataRef

    v1, v2 = _plans("train", exported["train"], {"training_dataset": str(bike_csv_session)})
    one, two = _shape(v1), _shape(v2)
    assert [(s["kind"], s["name"]) for s in two] == [
        ("command", "prep"),
        ("automl", "automl"),
        ("command", "register"),
    ]
    # the one difference the exporter reports: v2 AutoML has no Metrics output, so register loses --metrics_data
    register = one[2]
    metrics = register["argv"].index("--metrics_data")
    assert register["argv"][metrics + 1] == ("data", "step", "automl", 1)
    del register["argv"][metrics : metrics + 2]
    register["inputs"].remove(("step", "automl", 1))
    one[1]["outputs"] -= 1
    assert one == two  # same steps, order, command lines, and data flowing between the same steps
    assert one[0]["argv"][:4] == ["python", "prep.py", "--raw_data", ("data", "input", "training_dataset")]
    assert ("data", "step", "automl", "model") in one[2]["argv"] and ("data", "step", "prep", 1) in one[2][
        "argv"
    ]
    # v2 AutoML reads MLTable: the prep command writes the MLTable file into the output AutoML reads
    prep = v2.steps[0]
    mltable_line = "".join(p if isinstance(p, str) else "<ref>" for p in prep.command).split("&&", 1)[1]
    assert "MLTable" in mltable_line and prep.command[-2] == DataRef("prep.train_data")
    assert v2.steps[1].inputs == ["prep.train_data"]
    auto1, auto2 = v1.steps[1], v2.steps[1]
    assert (
        auto1.settings == auto2.settings
    )  # task, metric, label, limits, CV, models, ensembles, featurization
    assert auto2.settings.iterations == int(ITERATIONS)
    assert _origins(v1)[auto1.training_data] == _origins(v2)[auto2.training_data] == ("step", "prep", 0)
    assert (auto1.model_format, auto2.model_format) == ("pickle", "mlflow")  # best_model is an MLflow folder
    # parameters and defaults: v1's dataset parameter is v2's data input, whose default is the same URL
    assert {k: v for k, v in v1.parameters.items() if not str(v).startswith("dataset:")} == v2.parameters
    job = yaml.safe_load(exported["train"].read_text())
    assert job["inputs"]["training_dataset"]["path"] == v1.datasets["raw_data"].paths[0]
    assert [s.allow_reuse for s in v1.steps] == [True, False, False]
    # v2 AutoML nodes have no is_deterministic: the one setting not carried over, and the exporter says so
    assert [s.allow_reuse for s in v2.steps] == [True, True, False]
    assert "allow_reuse=False has no v2 counterpart" in exported["train_printed"]
    assert [s.source_directory for s in v1.steps if s.kind != "automl"] == [
        s.source_directory for s in v2.steps if s.kind != "automl"
    ]


def test_batch_plan_matches_v1(exported: dict[str, Any], batch_input: Path) -> None:
    v1, v2 = _plans("batch", exported["batch"], {"input_dataset": str(batch_input)})
    one, two = _shape(v1), _shape(v2)
    assert [(s["kind"], s["name"]) for s in two] == [("parallel_run", "batch_score"), ("command", "collect")]
    # the one difference the exporter reports: v2 has no Model.get_model_path, so the entry script is told to
    # look the same model_name/model_version parameters up in the MLflow registry when it runs
    score = one[0]["argv"]
    at = score.index("--model_name")
    assert score[at : at + 4] == [
        "--model_name",
        ("param", "model_name"),
        "--model_version",
        ("param", "model_version"),
    ]
    assert two[0]["argv"][-2:] == ["--model_registry", "mlflow"]
    del two[0]["argv"][-2:]
    assert one == two
    p1, p2 = v1.steps[0], v2.steps[0]
    assert (p1.entry_script, p1.source_directory) == (p2.entry_script, p2.source_directory)
    assert list(p1.input_kinds.values()) == list(p2.input_kinds.values()) == ["tabular"]
    # every ParallelRunConfig option, but the output file's name, which v2 cannot set: its default is v1's
    assert p1.options.pop("append_row_file_name") == "parallel_run_step.txt"
    assert p2.options.pop("append_row_file_name") is None
    assert p1.options == p2.options
    assert p1.options["error_threshold"] == 10 and p1.options["process_count_per_node"] == 2
    # the same parameters and defaults (model_version 0: the latest when the job runs); v1's input_dataset
    # parameter is v2's data input
    assert v2.parameters == {k: v for k, v in v1.parameters.items() if k != "input_dataset"}
    assert v2.parameters["model_version"] == 0 and v2.parameters["mini_batch_size"] == "1MB"
    assert set(v2.datasets) == {"input_dataset"}  # no model asset: nothing pinned when a job is made
    assert "is used by no v2 step" not in exported["batch_printed"]
    assert "looks model_name up in the MLflow model registry" in exported["batch_printed"]
    assert [s.allow_reuse for s in v1.steps] == [s.allow_reuse for s in v2.steps]


# ---- the runs -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    exported: dict[str, Any],
    batch_input: Path,
    bike_csv_session: Path,
) -> dict[str, Any]:
    """Train then batch-score, once with the v1 definitions and once with the exported v2 YAML."""
    results: dict[str, Any] = {}
    home = tmp_path_factory.mktemp("v1-home")
    done = cli("pipelines.train", "run", "--set", f"iterations={ITERATIONS}", "--data", str(bike_csv_session),
               "--json", home=home)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path_factory.mktemp("v1-predictions")
    batch = cli("pipelines.batch_score", "run", "--input", str(batch_input / "rows.csv"), "--model", "bike-demand:1",
                "--output", str(out), "--json", home=home)  # fmt: skip
    assert batch.returncode == 0, batch.stderr[-3000:]
    results["v1"] = (home, json.loads(done.stdout), json.loads(batch.stdout), out / "predictions.csv")

    home = tmp_path_factory.mktemp("v2-home")
    done = cli("pipelines.v2", "run", str(exported["train"]), "--set", f"training_dataset={bike_csv_session}",
               "--json", home=home)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    batch = cli("pipelines.v2", "run", str(exported["batch"]), "--set", f"input_dataset={batch_input}", "--json",
                home=home)  # fmt: skip
    assert batch.returncode == 0, batch.stderr[-3000:]
    scored = json.loads(batch.stdout)
    predictions = Path(scored["folder"]) / "outputs" / "collect.predictions" / "predictions.csv"
    results["v2"] = (home, json.loads(done.stdout), scored, predictions)
    return results


def _models(home: Path) -> list[dict]:
    done = cli("pipelines.train", "models", "--json", home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_both_run_to_completed(runs: dict[str, Any]) -> None:
    for sdk in ("v1", "v2"):
        _, trained, scored, _ = runs[sdk]
        assert trained["status"] == scored["status"] == "Completed", sdk
    assert {_ident(k): v for k, v in runs["v1"][1]["steps"].items()} == runs["v2"][1]["steps"]
    assert {_ident(k): v for k, v in runs["v1"][2]["steps"].items()} == runs["v2"][2]["steps"]
    assert set(runs["v2"][1]["steps"].values()) == set(runs["v2"][2]["steps"].values()) == {"Completed"}


def test_same_registered_model_test_metrics(runs: dict[str, Any]) -> None:
    (home1, trained1, _, _), (home2, trained2, _, _) = runs["v1"], runs["v2"]
    (model1,), (model2,) = _models(home1), _models(home2)
    assert (model1["name"], model1["version"]) == (model2["name"], model2["version"]) == ("bike-demand", 1)
    tests1 = {k: v for k, v in model1["tags"].items() if k.startswith("test_")}
    tests2 = {k: v for k, v in model2["tags"].items() if k.startswith("test_")}
    assert set(tests1) >= {"test_nrmse", "test_rmse", "test_mae", "test_r2"}
    assert tests1 == tests2  # exactly: the same data, seed and two trials give the same model
    for key in ("data_sha256", "primary_metric", "task", "label"):
        assert model1["tags"][key] == model2["tags"][key], key
    assert model2["tags"]["run_id"] == trained2["run_id"] != trained1["run_id"]
    for key, value in trained1["metrics"].items():  # AutoML's own best score and the test metrics
        assert trained2["metrics"][key] == value, key


def test_same_batch_predictions_row_for_row(runs: dict[str, Any], batch_input: Path) -> None:
    one = pd.read_csv(runs["v1"][3])
    two = pd.read_csv(runs["v2"][3])
    assert len(one) == BATCH_ROWS and list(one.columns) == ["instant", "date", "prediction"]
    assert one["instant"].tolist() == pd.read_csv(batch_input / "rows.csv")["instant"].tolist()
    assert one["prediction"].nunique() > 1  # a fitted model, not a constant
    pd.testing.assert_frame_equal(one, two, check_exact=True)
