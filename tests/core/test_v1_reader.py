"""The SDK adapter, on real SDK v1 objects built by the pipeline builders (no Workspace, no Pipeline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines import batch_score, train
from pipelines.core import v1_reader as adapter
from pipelines.datasets import KNOWN
from pipelines.definitions import environment
from pipelines.local.runtime import engine, reuse, runs
from pipelines.settings import Settings

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")


def test_training_plan_orders_steps_and_resolves_arguments() -> None:
    plan = adapter.read_steps(train.build(Settings()).steps)
    assert [s.name for s in plan.steps] == ["prep", "automl", "register"]
    prep, automl, register = plan.steps
    assert isinstance(prep, adapter.ScriptStepPlan) and prep.script_name == "prep.py"
    assert prep.arguments[prep.arguments.index("--label") + 1] == adapter.ParamRef("label")
    assert prep.arguments[prep.arguments.index("--raw_data") + 1] == adapter.DataRef("raw_data")
    assert prep.outputs == ["train_data", "test_data"]
    assert prep.environment == "amlops-train" and prep.compute_target == "cpu-cluster"
    assert automl.inputs == ["train_data"] and automl.training_data == "train_data"
    assert (automl.model_output, automl.metrics_output) == ("model_data", "metrics_data")
    assert set(register.inputs) == {"model_data", "metrics_data", "test_data"}
    assert register.arguments[register.arguments.index("--test_data") + 1] == adapter.DataRef("test_data")
    assert plan.parameters["label"] == "cnt" and plan.parameters["cutoff_date"] == "2012-08-31"
    assert plan.datasets["raw_data"].paths == (KNOWN["bike-no"].url,)
    assert plan.datasets["raw_data"].mode == "download"


def test_automl_config_settings_are_mapped() -> None:
    settings = Settings().with_overrides(
        {"timeout_minutes": "7", "n_cross_validations": "4", "allowed_models": "LightGBM,RandomForest",
         "blocked_models": "RandomForest", "iterations": "12"}
    )  # fmt: skip
    automl = adapter.read_steps(train.build(settings).steps).steps[1]
    s = automl.settings
    assert (s.task, s.primary_metric, s.label_column_name) == (
        "regression",
        "normalized_root_mean_squared_error",
        "cnt",
    )
    assert (s.experiment_timeout_minutes, s.n_cross_validations, s.iterations) == (7, 4, 12)
    assert s.allowed_models == ["LightGBM", "RandomForest"] and s.blocked_models == ["RandomForest"]


def test_forecasting_parameters_are_mapped() -> None:
    settings = Settings().with_overrides({"task": "forecasting", "forecast_horizon": "14"})
    s = adapter.read_steps(train.build(settings).steps).steps[1].settings
    assert (s.task, s.time_column_name, s.forecast_horizon, s.freq) == ("forecasting", "date", 14, "D")


def test_batch_plan_reads_parallel_run_config() -> None:
    plan = adapter.read_steps(batch_score.build(Settings().with_overrides({"error_threshold": "5"})).steps)
    score, collect = plan.steps
    assert isinstance(score, adapter.ParallelRunStepPlan)
    assert score.entry_script == "scoring.py" and score.source_directory.name == "scoring"
    assert score.options["mini_batch_size"] == adapter.ParamRef("mini_batch_size")
    assert score.options["error_threshold"] == 5
    assert score.options["output_action"] == "append_row"
    assert score.options["append_row_file_name"] == "parallel_run_step.txt"
    assert (score.options["node_count"], score.options["process_count_per_node"]) == (1, 2)
    assert score.input_kinds == {"batch_input": "tabular"}
    assert score.arguments[score.arguments.index("--model_name") + 1] == adapter.ParamRef("model_name")
    assert collect.inputs == ["scores"] and plan.parameters["mini_batch_size"] == "1MB"


def test_unsupported_step_types_are_refused() -> None:
    with pytest.raises(adapter.PlanError, match="not supported locally"):
        adapter.read_steps([object()])


def test_dependency_cycle_is_detected() -> None:
    a = adapter.ScriptStepPlan("a", None, "a.py", [], ["y"], ["x"], False, None, None)  # type: ignore[arg-type]
    b = adapter.ScriptStepPlan("b", None, "b.py", [], ["x"], ["y"], False, None, None)  # type: ignore[arg-type]
    with pytest.raises(adapter.PlanError, match="cycle"):
        adapter._order(adapter.Plan(steps=[a, b]))


def _partitioned_step(source: Path, keys: Any) -> Any:
    """A user's own ParallelRunStep over a tabular dataset, its mini-batches made by ``partition_keys``."""
    from azureml.core import Dataset
    from azureml.data import OutputFileDatasetConfig
    from azureml.data.dataset_consumption_config import DatasetConsumptionConfig
    from azureml.pipeline.core import PipelineParameter
    from azureml.pipeline.steps import ParallelRunConfig, ParallelRunStep

    tabular = Dataset.Tabular.from_delimited_files(
        "https://example.invalid/data.csv", validate=False, infer_column_types=False
    )
    config = ParallelRunConfig(
        source_directory=str(source),
        entry_script="entry.py",
        environment=environment("batch"),
        compute_target="cpu-cluster",
        node_count=1,
        process_count_per_node=2,
        partition_keys=keys,
        error_threshold=0,
        output_action="append_row",
    )
    data = DatasetConsumptionConfig("shops", PipelineParameter("shops_data", default_value=tabular))
    return ParallelRunStep(
        name="per-shop", parallel_run_config=config, inputs=[data], output=OutputFileDatasetConfig(name="out")
    )


ENTRY = """
def init():
    pass

def run(mini_batch, mini_batch_context):
    out = mini_batch[["id"]].copy()
    out["shop"] = mini_batch_context.partition_key_value["shop"]
    out["rows"] = len(mini_batch)
    return out
"""


def test_partition_keys_of_a_users_parallel_run_step_run_locally(tmp_path: Path) -> None:
    from azureml.pipeline.core import PipelineParameter

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "entry.py").write_text(ENTRY)
    data = tmp_path / "shops.csv"
    data.write_text("id,shop,sales\n1,north,3\n2,south,4\n3,north,5\n4,east,1\n5,north,2\n")
    step = _partitioned_step(tmp_path / "src", PipelineParameter("keys", default_value='["shop"]'))
    plan = adapter.read_steps([step])
    assert plan.steps[0].options["partition_keys"] == adapter.ParamRef("keys")
    assert plan.steps[0].options["mini_batch_size"] is None and plan.parameters["keys"] == '["shop"]'
    request = engine.RunRequest(
        plan, "shops", "shops-exp", dataset_paths={name: data for name in plan.datasets}
    )
    record = engine.run_plan(request)
    assert record["status"] == "Completed"
    summary = record["parallel_run"]["per-shop"]
    assert (summary["mini_batches"], summary["items"]) == (3, 5)
    lines = (
        (runs.run_folder(record["run_id"]) / "outputs" / "out" / "parallel_run_step.txt")
        .read_text()
        .splitlines()
    )
    assert sorted(lines) == ["1 north 3", "2 south 1", "3 north 3", "4 east 1", "5 north 3"]


def test_partition_keys_given_as_a_list_and_refused_with_mini_batch_size(tmp_path: Path) -> None:
    from azureml.pipeline.steps import ParallelRunConfig

    (tmp_path / "entry.py").write_text(ENTRY)
    plan = adapter.read_steps([_partitioned_step(tmp_path, ["shop", "region"])])
    assert plan.steps[0].options["partition_keys"] == ["shop", "region"]
    with pytest.raises(ValueError, match="mutually exclusive"):  # the SDK's own check, before any run
        ParallelRunConfig(
            source_directory=str(tmp_path), entry_script="entry.py", environment=environment("batch"),
            compute_target="cpu-cluster", node_count=1, process_count_per_node=1, mini_batch_size="1MB",
            partition_keys=["shop"], error_threshold=0, output_action="append_row",
        )  # fmt: skip


def test_reuse_key_follows_the_script_and_the_parallel_run_options(tmp_path: Path) -> None:
    """allow_reuse: a step whose script or ParallelRunConfig changed is run again, not reused."""
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "b.py").write_text("print(2)\n")
    params = {"size": "1MB"}

    def key_of(step: Any) -> str:
        return reuse.reuse_key(step, params, lambda name: tmp_path / "data" / name)

    script_a = adapter.ScriptStepPlan("s", tmp_path, "a.py", ["--x", "1"], [], [], True, None, None)
    script_b = adapter.ScriptStepPlan("s", tmp_path, "b.py", ["--x", "1"], [], [], True, None, None)
    assert key_of(script_a) == key_of(script_a)
    assert key_of(script_a) != key_of(script_b)
    # the snapshot is the source directory less what its .gitignore (or .amlignore) excludes, as on Azure
    key = key_of(script_a)
    (tmp_path / ".gitignore").write_text("*.log\n")
    key = key_of(script_a)
    (tmp_path / "debug.log").write_text("noise")
    assert key_of(script_a) == key
    (tmp_path / ".amlignore").write_text("notes/\n")  # .amlignore, when present, is read instead
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    assert key_of(script_a) != key  # debug.log counts again
    key = key_of(script_a)
    (tmp_path / "notes" / "more.txt").write_text("y")
    assert key_of(script_a) == key
    (tmp_path / "helper.py").write_text("X = 1\n")
    assert key_of(script_a) != key

    def prs(**options: Any) -> adapter.ParallelRunStepPlan:
        base = {"mini_batch_size": adapter.ParamRef("size"), "output_action": "append_row"}
        return adapter.ParallelRunStepPlan(
            "p", tmp_path, "a.py", [], [], {}, [], {**base, **options}, True, None, None
        )

    key = key_of(prs())
    assert key == key_of(prs())
    assert key != key_of(prs(output_action="summary_only"))
    assert key != key_of(prs(partition_keys=["shop"]))
    params["size"] = "2MB"  # the same plan, another value of its PipelineParameter
    assert key != key_of(prs())


SIDE_ENTRY = """
import argparse
import json
from pathlib import Path

import pandas as pd

def init():
    global regions
    parser = argparse.ArgumentParser()
    parser.add_argument("--lookup")
    path = Path(parser.parse_known_args()[0].lookup)
    path = next(path.glob("*.csv")) if path.is_dir() else path  # a mounted folder on Azure, a file here
    regions = pd.read_csv(path).set_index("shop")["region"]

def run(mini_batch):
    return pd.DataFrame({"id": mini_batch["id"], "region": mini_batch["shop"].map(regions)})
"""


def test_a_side_input_reaches_the_entry_script_whole_and_is_not_cut_into_mini_batches(tmp_path: Path) -> None:
    from azureml.core import Dataset
    from azureml.data import OutputFileDatasetConfig
    from azureml.data.dataset_consumption_config import DatasetConsumptionConfig
    from azureml.pipeline.steps import ParallelRunConfig, ParallelRunStep

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "entry.py").write_text(SIDE_ENTRY)
    rows, lookup = tmp_path / "shops.csv", tmp_path / "regions.csv"
    rows.write_text("id,shop\n1,north\n2,south\n3,north\n")
    lookup.write_text("shop,region\nnorth,N\nsouth,S\n")
    tabular = Dataset.Tabular.from_delimited_files(
        "https://example.invalid/shops.csv", validate=False, infer_column_types=False
    )
    side = DatasetConsumptionConfig(
        "regions", Dataset.File.from_files("https://example.invalid/regions.csv", validate=False)
    ).as_mount()
    config = ParallelRunConfig(
        source_directory=str(tmp_path / "src"), entry_script="entry.py", environment=environment("batch"),
        compute_target="cpu-cluster", node_count=1, process_count_per_node=1, mini_batch_size="1MB",
        error_threshold=0, output_action="append_row",
    )  # fmt: skip
    step = ParallelRunStep(
        name="with-lookup",
        parallel_run_config=config,
        inputs=[DatasetConsumptionConfig("shops", tabular)],
        side_inputs=[side],
        output=OutputFileDatasetConfig(name="out"),
        arguments=["--lookup", side],
    )
    plan = adapter.read_steps([step])
    assert plan.steps[0].input_kinds == {"shops": "tabular"} and set(plan.steps[0].inputs) == {
        "shops",
        "regions",
    }
    bindings = {"shops": rows, "regions": lookup}
    record = engine.run_plan(engine.RunRequest(plan, "side", "side-exp", dataset_paths=bindings))
    assert record["status"] == "Completed", record
    assert record["parallel_run"]["with-lookup"]["items"] == 3
    out = runs.run_folder(record["run_id"]) / "outputs" / "out" / "parallel_run_step.txt"
    assert out.read_text().splitlines() == ["1 N", "2 S", "3 N"]


def _script_steps(source: Path, *names: str, **kwargs: Any) -> list[Any]:
    from azureml.pipeline.steps import PythonScriptStep

    (source / "step.py").write_text(
        "import os, sys\nfrom pathlib import Path\n"
        "log = Path(os.environ['ORDER_LOG'])\nlog.write_text(log.read_text() + sys.argv[1] + '\\n' if log.exists() else sys.argv[1] + '\\n')\n"
    )
    return [
        PythonScriptStep(
            name=name,
            script_name="step.py",
            source_directory=str(source),
            arguments=[name],
            compute_target="cpu-cluster",
            allow_reuse=False,
            **kwargs,
        )  # fmt: skip
        for name in names
    ]


def test_run_after_and_step_sequences_order_the_steps_as_on_azure(tmp_path: Path) -> None:
    from azureml.pipeline.core import StepSequence

    a, b, c = _script_steps(tmp_path, "a", "b", "c")
    assert [s.name for s in adapter.read_steps([a, b, c]).steps] == ["a", "b", "c"]  # listed order kept
    a, b, c = _script_steps(tmp_path, "a", "b", "c")
    a.run_after(c)
    assert [s.name for s in adapter.read_steps([a, b, c]).steps] == ["b", "c", "a"]
    a, b, c, d = _script_steps(tmp_path, "a", "b", "c", "d")
    assert [s.name for s in adapter.read_steps(StepSequence(steps=[d, [b, a], c])).steps] == [
        "d",
        "b",
        "a",
        "c",
    ]
    a, b = _script_steps(tmp_path, "a", "b")
    a.run_after(b)
    b.run_after(a)
    with pytest.raises(adapter.PlanError, match="form a cycle"):
        adapter.read_steps([a, b])
    a, b, outside = _script_steps(tmp_path, "a", "b", "outside")
    b.run_after(outside)
    with pytest.raises(adapter.PlanError, match="runs after 'outside', which is not in the pipeline"):
        adapter.read_steps([a, b])


def test_pipeline_data_bindings_reach_the_script_as_paths_and_a_step_without_outputs_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azureml.pipeline.core import PipelineData
    from azureml.pipeline.steps import PythonScriptStep

    (tmp_path / "produce.py").write_text(
        "import sys\nfrom pathlib import Path\nPath(sys.argv[1]).mkdir(parents=True, exist_ok=True)\n"
        "(Path(sys.argv[1]) / 'x.txt').write_text('hello')\n"
    )
    (tmp_path / "consume.py").write_text(
        "import sys\nfrom pathlib import Path\nprint('read', (Path(sys.argv[1]) / 'x.txt').read_text())\n"
    )
    (tmp_path / "notify.py").write_text("print('done')\n")
    middle = PipelineData("middle")
    produce = PythonScriptStep(name="produce", script_name="produce.py", source_directory=str(tmp_path),
                               arguments=[middle], outputs=[middle], compute_target="c", allow_reuse=False)  # fmt: skip
    binding = middle.as_input("middle_in")
    consume = PythonScriptStep(name="consume", script_name="consume.py", source_directory=str(tmp_path),
                               arguments=[binding], inputs=[binding], compute_target="c", allow_reuse=False)  # fmt: skip
    notify = PythonScriptStep(
        name="notify", script_name="notify.py", source_directory=str(tmp_path), compute_target="c"
    )  # fmt: skip  (the SDK's default: allow_reuse=True)
    notify.run_after(consume)
    plan = adapter.read_steps([notify, consume, produce])
    assert [s.name for s in plan.steps] == ["produce", "consume", "notify"]
    assert plan.steps[1].arguments == [adapter.DataRef("middle")]
    first = engine.run_plan(engine.RunRequest(plan, "binding", "binding-exp"))
    assert first["status"] == "Completed", first["error"]
    log = runs.run_folder(first["run_id"]) / "logs" / "consume.log"
    assert "read hello" in log.read_text()
    second = engine.run_plan(engine.RunRequest(plan, "binding", "binding-exp"))
    assert second["status"] == "Completed", second["error"]
    assert [s.get("reused") for s in second["steps"]] == [None, None, True]


def test_a_downloaded_dataset_is_the_steps_own_copy(tmp_path: Path) -> None:
    from azureml.pipeline.steps import PythonScriptStep

    from pipelines.definitions import dataset_input

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tidy.py").write_text(
        "import sys\nfrom pathlib import Path\nfolder = Path(sys.argv[1])\n"
        "print('got', sorted(p.name for p in folder.iterdir()))\n"
        "for p in folder.glob('*.tmp'):\n    p.unlink()\n(folder / 'extracted.csv').write_text('x')\n"
    )
    data = tmp_path / "user-data"
    data.mkdir()
    (data / "raw.csv").write_text("a\n1\n")
    (data / "notes.tmp").write_text("keep me")
    raw = dataset_input("raw_data", "https://example.invalid/raw.csv", "raw_param")
    step = PythonScriptStep(name="tidy", script_name="tidy.py", source_directory=str(tmp_path / "src"),
                            arguments=[raw], compute_target="c", allow_reuse=False)  # fmt: skip
    plan = adapter.read_steps([step])
    assert plan.datasets["raw_data"].mode == "download"
    record = engine.run_plan(engine.RunRequest(plan, "tidy", "tidy-exp", dataset_paths={"raw_data": data}))
    assert record["status"] == "Completed", record["error"]
    folder = runs.run_folder(record["run_id"])
    assert "got ['notes.tmp', 'raw.csv']" in (folder / "logs" / "tidy.log").read_text()
    # the user's folder is untouched
    assert sorted(p.name for p in data.iterdir()) == ["notes.tmp", "raw.csv"]
    assert not (folder / "inputs" / "tidy").exists()  # the copy is gone with the step


def test_a_script_step_gets_the_environment_variables_azure_sets(tmp_path: Path) -> None:
    from azureml.core.runconfig import RunConfiguration
    from azureml.pipeline.core import PipelineData, PipelineParameter
    from azureml.pipeline.steps import PythonScriptStep

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "show.py").write_text(
        "import json, os\nfrom pathlib import Path\n"
        "names = ['MY_SETTING', 'AML_PARAMETER_alpha', 'AML_PARAMETER_mode', 'AZUREML_DATAREFERENCE_scores']\n"
        "print('ENV', json.dumps({n: os.environ.get(n) for n in names}))\n"
        "Path(os.environ['AZUREML_DATAREFERENCE_scores']).mkdir(parents=True, exist_ok=True)\n"
    )
    config = RunConfiguration()
    config.environment_variables = {"MY_SETTING": "on"}
    scores = PipelineData("scores")
    step = PythonScriptStep(
        name="show", script_name="show.py", source_directory=str(tmp_path / "src"), outputs=[scores],
        params={"alpha": PipelineParameter("alpha", default_value=0.5), "mode": "fast"},
        runconfig=config, compute_target="c", allow_reuse=False,
    )  # fmt: skip
    plan = adapter.read_steps([step])
    assert plan.parameters == {"alpha": 0.5}  # params= registers its PipelineParameters, as on Azure
    request = engine.RunRequest(plan, "env", "env-exp", parameter_assignments={"alpha": 0.75})
    record = engine.run_plan(request)
    assert record["status"] == "Completed", record["error"]
    folder = runs.run_folder(record["run_id"])
    line = next(x for x in (folder / "logs" / "show.log").read_text().splitlines() if x.startswith("ENV "))
    assert json.loads(line[4:]) == {
        "MY_SETTING": "on", "AML_PARAMETER_alpha": "0.75", "AML_PARAMETER_mode": "fast",
        "AZUREML_DATAREFERENCE_scores": str(folder / "outputs" / "scores"),
    }  # fmt: skip


def test_outputs_uploaded_from_the_scripts_own_path_reach_the_next_step(tmp_path: Path) -> None:
    from azureml.data import OutputFileDatasetConfig
    from azureml.pipeline.core import PipelineData
    from azureml.pipeline.steps import PythonScriptStep

    src = tmp_path / "src"
    src.mkdir()
    kept = tmp_path / "scratch"  # an absolute source: copied, never removed
    (src / "write.py").write_text(
        "import sys\nfrom pathlib import Path\nPath('model_out').mkdir()\nPath('model_out/m.txt').write_text('m')\n"
        "Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)\n(Path(sys.argv[1]) / 'r.txt').write_text('r')\n"
    )
    (src / "read.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        "print('SEES', sorted(p.name for p in Path(sys.argv[1]).iterdir()), sorted(p.name for p in Path(sys.argv[2]).iterdir()))\n"
    )
    model = PipelineData("model", output_mode="upload", output_path_on_compute="model_out")
    report = OutputFileDatasetConfig(name="report", source=str(kept))
    write = PythonScriptStep(name="write", script_name="write.py", source_directory=str(src), arguments=[str(kept)],
                             outputs=[model, report], compute_target="c", allow_reuse=False)  # fmt: skip
    read = PythonScriptStep(name="read", script_name="read.py", source_directory=str(src),
                            arguments=[model, report.as_input("report_in")], inputs=[model],
                            compute_target="c", allow_reuse=False)  # fmt: skip
    plan = adapter.read_steps([write, read])
    assert plan.steps[0].upload_sources == {"model": "model_out", "report": str(kept)}
    record = engine.run_plan(engine.RunRequest(plan, "upload", "upload-exp"))
    assert record["status"] == "Completed", record["error"]
    log = (runs.run_folder(record["run_id"]) / "logs" / "read.log").read_text()
    assert "SEES ['m.txt'] ['r.txt']" in log
    assert not (src / "model_out").exists()  # the working copy left the source directory
    assert (kept / "r.txt").read_text() == "r"  # the absolute path is the user's: left as it was

    (src / "write.py").write_text("print('forgot to write')\n")
    record = engine.run_plan(engine.RunRequest(adapter.read_steps([write, read]), "upload", "upload-exp"))
    assert record["status"] == "Failed"
    assert (
        record["error"]["message"]
        == "output 'model' is uploaded from model_out, where the script wrote nothing"
    )


def test_plans_that_would_lose_data_or_crash_are_refused_with_what_to_do(tmp_path: Path) -> None:
    from azureml.data import OutputFileDatasetConfig
    from azureml.pipeline.steps import PythonScriptStep

    out = OutputFileDatasetConfig(name="prepared")
    write = PythonScriptStep(name="write", script_name="w.py", source_directory=str(tmp_path), arguments=[out],
                             compute_target="c")  # fmt: skip
    read = PythonScriptStep(
        name="read", script_name="r.py", source_directory=str(tmp_path), arguments=[out], compute_target="c"
    )  # fmt: skip  (out, not out.as_input(): a second writer)
    with pytest.raises(adapter.PlanError, match=r"both write the output 'prepared'.*prepared.as_input\(\)"):
        adapter.read_steps([write, read])
    nowhere = PythonScriptStep(name="nowhere", script_name="x.py", compute_target="c")
    with pytest.raises(adapter.PlanError, match="'nowhere' has no source_directory"):
        adapter.read_steps([nowhere])


def test_a_step_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    from azureml.pipeline.steps import PythonScriptStep

    (tmp_path / "die.py").write_text(
        "import os, signal\nprint('about to die', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    step = PythonScriptStep(name="die", script_name="die.py", source_directory=str(tmp_path), compute_target="c",
                            allow_reuse=False)  # fmt: skip
    record = engine.run_plan(engine.RunRequest(adapter.read_steps([step]), "die", "die-exp"))
    assert record["status"] == "Failed"
    assert record["error"]["message"] == "killed by signal SIGKILL (its last line: about to die)"


def test_a_reused_step_keeps_its_metrics(tmp_path: Path) -> None:
    from azureml.pipeline.steps import PythonScriptStep

    (tmp_path / "fit.py").write_text("import mlflow\nmlflow.log_metric('r2', 0.7)\n")
    step = PythonScriptStep(
        name="fit", script_name="fit.py", source_directory=str(tmp_path), compute_target="c"
    )
    plan = adapter.read_steps([step])
    first = engine.run_plan(engine.RunRequest(plan, "fit", "fit-exp"))
    second = engine.run_plan(engine.RunRequest(plan, "fit", "fit-exp"))
    assert first["metrics"] == {"r2": 0.7}
    assert second["steps"][0]["reused"] is True and second["metrics"] == {"r2": 0.7}


def test_an_upload_path_already_in_the_source_directory_is_never_moved(tmp_path: Path) -> None:
    from azureml.pipeline.core import PipelineData
    from azureml.pipeline.steps import PythonScriptStep

    (tmp_path / "write.py").write_text("print('hi')\n")
    (tmp_path / "model_out").mkdir()
    (tmp_path / "model_out" / "keep.txt").write_text("the user's")
    model = PipelineData("model", output_mode="upload", output_path_on_compute="model_out")
    step = PythonScriptStep(name="write", script_name="write.py", source_directory=str(tmp_path), outputs=[model],
                            compute_target="c", allow_reuse=False)  # fmt: skip
    record = engine.run_plan(engine.RunRequest(adapter.read_steps([step]), "upload", "upload-exp"))
    assert record["status"] == "Failed" and "already in the source directory" in record["error"]["message"]
    assert (tmp_path / "model_out" / "keep.txt").read_text() == "the user's"


def test_an_unsupported_input_kind_is_named_with_what_to_use_instead() -> None:
    class DataReference:  # stands for any SDK data object the local engine cannot bind
        pass

    with pytest.raises(
        adapter.PlanError, match="type DataReference is not supported locally .* use a Dataset input"
    ):
        adapter._data_name(DataReference(), adapter.Plan(steps=[]))
