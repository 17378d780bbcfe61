"""The v1 -> v2 export: the files load with azure-ai-ml, and carry the v1 objects' settings field by field."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import batch_score, deploy, train
from pipelines.settings import Settings
from pipelines.v2 import verify

pytestmark = pytest.mark.slow  # services, the SDK's graph builder or the package index

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "v2" / "v1_samples" / "pipelines.py"


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def train_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v2") / "train"
    assert train.main(["export", "--sdk", "v2", "--out", str(out), "--set", "iterations=7"]) == 0
    return out


@pytest.fixture(scope="module")
def batch_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v2") / "batch"
    assert batch_score.main(["export", "--sdk", "v2", "--out", str(out)]) == 0
    return out


def test_train_export_maps_the_automl_config_field_by_field(train_export: Path) -> None:
    definition = train.build(Settings(iterations=7))
    user = definition.steps[1]._automl_config.user_settings
    job = _yaml(train_export / "amlops-train.pipeline.yml")
    node = job["jobs"]["automl"]
    assert node["type"] == "automl" and node["task"] == user["task_type"]
    assert node["primary_metric"] == user["primary_metric"]
    assert node["target_column_name"] == user["label_column_name"]
    assert node["n_cross_validations"] == user["n_cross_validations"]
    assert node["limits"] == {
        "enable_early_termination": user["enable_early_stopping"],
        "timeout_minutes": user["experiment_timeout_minutes"],
        "max_trials": 7,
    }
    assert node["featurization"] == {"mode": user["featurization"]}
    assert node["training_data"] == "${{parent.jobs.prep.outputs.train_data}}"
    assert node["outputs"] == {"best_model": {"type": "mlflow_model"}}
    register = job["jobs"]["register"]
    assert register["inputs"]["model_data"] == "${{parent.jobs.automl.outputs.best_model}}"
    assert _yaml(train_export / "components/register.yml")["inputs"]["model_data"] == {"type": "mlflow_model"}


def test_register_runs_in_the_curated_automl_environment_on_azure(
    train_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """As the v1 register step does on Azure: AutoML's best model carries the AutoML runtime in its own
    environment, which the curated AutoML environment has; the file says what the local engine does instead."""
    from pipelines.definitions import AZURE_AUTOML_ENVIRONMENT

    register = _yaml(train_export / "components/register.yml")
    reference = f"azureml://registries/azureml/environments/{AZURE_AUTOML_ENVIRONMENT}/labels/latest"
    assert register["environment"] == reference
    assert verify.load(train_export / "components/register.yml", "component").environment == reference
    assert "the local engine runs every step in this project's environment" in register["description"]
    assert (
        _yaml(train_export / "components/prep.yml")["environment"]["conda_file"]
        == "../environments/train.yml"
    )
    out = tmp_path_factory.mktemp("v2") / "printed"
    printed = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "export", "--sdk", "v2", "--out", str(out), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    import json

    [line] = [
        d for d in json.loads(printed.stdout)["differences"] if d.startswith("step register: reads AutoML")
    ]
    assert f"runs in the curated AutoML environment {reference}" in line and "not amlops-train" in line


def test_train_export_maps_parameters_steps_and_reuse(train_export: Path) -> None:
    definition = train.build(Settings())
    job = _yaml(train_export / "amlops-train.pipeline.yml")
    for name, param in definition.parameters.items():
        assert job["inputs"][name] == param.default_value
    assert job["inputs"]["training_dataset"]["type"] == "uri_file"
    assert job["inputs"]["training_dataset"]["path"].startswith("https://")
    prep = _yaml(train_export / "components/prep.yml")
    assert prep["is_deterministic"] is True  # allow_reuse=True
    assert _yaml(train_export / "components/register.yml")["is_deterministic"] is False
    assert prep["command"].startswith(
        "python prep.py --raw_data ${{inputs.raw_data}} --label ${{inputs.label}}"
    )
    # AutoML reads train_data as MLTable: the command writes the MLTable file after prep.py
    assert prep["outputs"]["train_data"] == {"type": "mltable"}
    assert "/MLTable" in prep["command"] and "${{outputs.train_data}}" in prep["command"].split("&&")[1]
    assert prep["environment"]["conda_file"] == "../environments/train.yml"
    assert (train_export / "environments/train.yml").read_text() == (
        ROOT / "environments/train.yml"
    ).read_text()
    assert (train_export / prep["code"].replace("../", "", 0)).parent  # relative, not absolute
    assert not Path(prep["code"]).is_absolute()
    assert (train_export / "components" / prep["code"]).resolve() == ROOT / "steps"


def test_the_mltable_line_writes_a_file_mltable_reads(train_export: Path, tmp_path: Path) -> None:
    """Run the line the translation adds to prep's command, and read the folder back as MLTable says."""
    import shlex

    command = _yaml(train_export / "components/prep.yml")["command"]
    tail = command.split("&&")[1].replace("${{outputs.train_data}}", shlex.quote(str(tmp_path)))
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    subprocess.run([sys.executable if w == "python" else w for w in shlex.split(tail)], check=True)
    spec = yaml.safe_load((tmp_path / "MLTable").read_text())
    pattern = spec["paths"][0]["pattern"]
    assert sorted(p.name for p in tmp_path.glob(pattern)) == ["data.csv"]
    assert spec["transformations"][0]["read_delimited"]["header"] == "all_files_same_headers"


def test_schedule_maps_the_recurrence_and_starts_later(train_export: Path) -> None:
    rec = train.build(Settings()).schedule
    schedule = _yaml(train_export / "amlops-train.schedule.yml")
    trigger = schedule["trigger"]
    assert trigger["type"] == "recurrence"
    assert trigger["frequency"] == rec.frequency.lower() and trigger["interval"] == rec.interval
    assert trigger["schedule"]["hours"] == rec.hours and trigger["schedule"]["minutes"] == rec.minutes
    assert trigger["schedule"]["week_days"] == [d.lower() for d in rec.week_days]
    start = dt.datetime.fromisoformat(trigger["start_time"]).replace(tzinfo=dt.UTC)
    assert start > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    assert schedule["create_job"] == "./amlops-train.pipeline.yml"  # referenced: an inline job does not load


def test_publish_maps_to_a_batch_endpoint_and_pipeline_component_deployment(train_export: Path) -> None:
    endpoint = verify.load(train_export / "amlops-train.batch-endpoint.yml", "batch_endpoint")
    deployment = verify.load(train_export / "amlops-train.batch-deployment.yml", "batch_deployment")
    assert endpoint.name == "amlops-train" and endpoint.auth_mode == "aad_token"
    assert type(deployment).__name__ == "PipelineComponentBatchDeployment"
    assert deployment.endpoint_name == "amlops-train"
    component = verify.load(train_export / "amlops-train.component.yml", "component")
    assert set(component.jobs) == {"prep", "automl", "register"}


def test_batch_export_maps_the_parallel_run_config(batch_export: Path) -> None:
    config = batch_score.build(Settings()).steps[0]._parallel_run_config
    component = _yaml(batch_export / "components/batch_score.yml")
    assert component["type"] == "parallel"
    assert component["error_threshold"] == config.error_threshold
    assert component["retry_settings"] == {
        "max_retries": config.run_max_try,
        "timeout": config.run_invocation_timeout,
    }
    assert component["resources"] == {"instance_count": config.node_count}
    assert component["max_concurrency_per_instance"] == config.process_count_per_node
    assert component["input_data"] == "${{inputs.batch_input}}"
    assert component["inputs"]["batch_input"] == {
        "type": "mltable"
    }  # a TabularDataset: DataFrames per mini-batch
    task = component["task"]
    assert task["entry_script"] == config.entry_script and task["append_row_to"] == "${{outputs.scores}}"
    # the entry script looks the model name up in the MLflow registry when it runs (v2 has no
    # Model.get_model_path); the SDK's own driver flags are not passed on
    arguments = task["program_arguments"]
    assert arguments.startswith(
        "--model_name ${{inputs.model_name}} --model_version ${{inputs.model_version}} "
    )
    assert arguments.endswith(" --model_registry mlflow") and "--client_sdk_version" not in arguments
    assert component["inputs"]["model_name"] == {"type": "string"}
    assert component["inputs"]["model_version"] == {"type": "integer"}
    job = _yaml(batch_export / "amlops-batch-score.pipeline.yml")
    params = batch_score.build(Settings()).parameters
    assert job["inputs"]["model_name"] == params["model_name"].default_value == Settings().model_name
    assert (
        job["inputs"]["model_version"] == params["model_version"].default_value == 0
    )  # 0: the latest at run time
    assert "model" not in job["inputs"]  # no model asset: nothing for azure-ai-ml to pin when a job is made
    assert job["jobs"]["batch_score"]["inputs"]["model_version"] == "${{parent.inputs.model_version}}"
    assert job["jobs"]["batch_score"]["mini_batch_size"] == "${{parent.inputs.mini_batch_size}}"
    assert job["inputs"]["mini_batch_size"] == Settings().mini_batch_size
    mltable = yaml.safe_load((batch_export / "data/batch_input/MLTable").read_text())
    assert mltable["paths"][0]["file"].endswith("bike-no.csv")


def test_batch_environment_is_exported_as_the_curated_registry_reference(tmp_path: Path) -> None:
    out = tmp_path / "v2"
    args = ["export", "--sdk", "v2", "--set", "batch_environment=AzureML-AutoML", "--out", str(out)]
    assert batch_score.main(args) == 0
    component = _yaml(out / "components/batch_score.yml")
    assert component["task"]["environment"] == (
        "azureml://registries/azureml/environments/AzureML-AutoML/labels/latest"
    )
    assert _yaml(out / "components/collect.yml")["environment"]["conda_file"] == "../environments/batch.yml"


def test_every_exported_file_loads_validates_and_round_trips(train_export: Path, batch_export: Path) -> None:
    for folder in (train_export, batch_export):
        files = [str(p.relative_to(folder)) for p in folder.rglob("*.yml") if "environments/" not in str(p.relative_to(folder)) or p.name.endswith(".environment.yml")]  # fmt: skip
        kinds = verify.verify_folder(folder, files)
        assert {"job", "component", "schedule", "batch_endpoint", "batch_deployment", "environment"} <= set(
            kinds.values()
        )


def test_deploy_export_maps_aci_to_a_key_authenticated_managed_endpoint(tmp_path: Path) -> None:
    out = tmp_path / "online"
    assert deploy.main(["export", "--sdk", "v2", "--out", str(out), "--model", "bike-demand:4",
                        "--name", "bike-svc", "--scoring-timeout-ms", "90000", "--cors-origins", "https://a.example"]) == 0  # fmt: skip
    endpoint = verify.load(out / "bike-svc.endpoint.yml", "online_endpoint")
    deployment = verify.load(out / "bike-svc.deployment.yml", "online_deployment")
    assert type(endpoint).__name__ == "ManagedOnlineEndpoint" and endpoint.auth_mode == "key"
    assert type(deployment).__name__ == "ManagedOnlineDeployment"
    assert deployment.model == "bike-demand:4"  # the loader drops the azureml: prefix
    assert deployment.code_configuration.scoring_script == "score.py"
    assert (out / deployment.code_configuration.code).resolve() == ROOT / "scoring"  # relative to the YAML
    assert deployment.request_settings.request_timeout_ms == 90000
    assert deployment.app_insights_enabled is True
    assert deployment.environment_variables["AML_CORS_ORIGINS"] == "https://a.example"


def test_deploy_export_maps_aks_to_a_kubernetes_endpoint(tmp_path: Path) -> None:
    out = tmp_path / "aks"
    assert deploy.main(["export", "--sdk", "v2", "--out", str(out), "--aks-cluster", "my-aks", "--name", "bike-aks",
                        "--cpu-cores", "2", "--memory-gb", "4"]) == 0  # fmt: skip
    endpoint = verify.load(out / "bike-aks.endpoint.yml", "online_endpoint")
    deployment = verify.load(out / "bike-aks.deployment.yml", "online_deployment")
    assert type(endpoint).__name__ == "KubernetesOnlineEndpoint" and endpoint.auth_mode == "key"
    assert endpoint.compute == "my-aks"  # written azureml:my-aks; the loader drops the prefix
    assert deployment.resources.requests.cpu == "2" and deployment.resources.requests.memory == "4Gi"


def test_exporter_maps_a_sample_style_automl_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.v2 import __main__ as v2

    assert v2.main(["export", f"{SAMPLES}:prep_and_automl", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "step automl_module (AutoMLStep) -> automl node" in printed
    assert "metrics_output (AutoML's Metrics TrainingOutput) has no v2 output" in printed
    job = _yaml(tmp_path / "o/pipelines.pipeline.yml")
    node = job["jobs"]["automl_module"]
    assert node["task"] == "classification" and node["primary_metric"] == "AUC_weighted"
    assert node["limits"] == {"enable_early_termination": False, "timeout_minutes": 20, "max_trials": 5}
    assert node["training"]["blocked_training_algorithms"] == ["KNN"]
    assert node["featurization"] == {"mode": "off"}
    assert job["inputs"]["raw_bikes"] == {"type": "mltable", "path": "./data/raw_bikes"}
    prep = _yaml(tmp_path / "o/components/prep_data.yml")
    assert prep["environment_variables"] == {"LOG_LEVEL": "debug"}
    assert prep["inputs"]["threshold"] == {"type": "integer"}
    register = _yaml(tmp_path / "o/components/register_model.yml")
    assert (
        "--metrics" not in register["command"]
        and "--model_path ${{inputs.model_output}}" in register["command"]
    )


def test_exporter_maps_a_sample_style_file_parallel_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.v2 import __main__ as v2

    assert v2.main(["export", f"{SAMPLES}:file_batch_inference", "--out", str(tmp_path / "o"), "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert any("mnist_outputs.txt" in d for d in result["differences"])
    component = _yaml(tmp_path / "o/components/predict_digits_mnist.yml")
    assert component["mini_batch_error_threshold"] == 3  # allowed_failed_count
    assert component["retry_settings"] == {"max_retries": 5, "timeout": 120}
    assert component["resources"] == {"instance_count": 2}
    assert component["inputs"]["mnist_sample_data"] == {"type": "uri_file"}
    assert component["task"]["program_arguments"] == "--model_name mnist-prs"
    job = _yaml(tmp_path / "o/pipelines.pipeline.yml")
    assert job["settings"]["default_compute"] == "azureml:gpu-cluster"  # the steps' one compute target


def test_exporter_maps_the_projects_own_tiny_pipeline(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "from pipelines.settings import Settings\nfrom tests import tiny_pipeline\n\n"
        "def steps():\n    return tiny_pipeline.build(Settings()).steps\n"
    )
    out = tmp_path / "o"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.v2", "export", f"{tmp_path / 'mine.py'}:steps", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    component = _yaml(out / "components/count.yml")
    assert component["inputs"]["seed"]["type"] == "integer" and component["is_deterministic"] is False


@pytest.mark.parametrize(
    ("callable_name", "message"),
    [
        ("missing", "has no callable 'missing'"),
        ("nothing", "returned no steps"),
        ("raises", "raises() raised RuntimeError: no workspace here"),
        ("command_step", "CommandStep has no SDK v2 translation"),
        ("two_batched_inputs", "cuts one input into mini-batches"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, callable_name: str, message: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.v2", "export", f"{SAMPLES}:{callable_name}", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists() and list(work.iterdir()) == []  # no output folder, no staging folder left


def test_an_output_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    target = work / "taken"
    target.write_text("keep me")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "export", "--sdk", "v2", "--out", str(target)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --out") and "is a file" in result.stderr
    assert target.read_text() == "keep me" and sorted(p.name for p in work.iterdir()) == ["taken"]


def test_a_failed_verification_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files are staged beside the output folder and moved in only after every one verified."""
    from pipelines.errors import UserError

    work = tmp_path / "work"
    out = work / "out"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("left alone")

    def broken(folder: Path, files: list[str]) -> dict[str, str]:
        raise verify.VerifyError("components/prep.yml: does not load")

    monkeypatch.setattr(verify, "verify_folder", broken)
    with pytest.raises(UserError, match="does not load"):
        from pipelines.v2.export import export_definition

        export_definition(train.build(Settings()), out)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in work.iterdir()) == ["out"]


def test_a_parallel_component_exports_into_a_folder_beside_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out v2`` inside the project: the parallel component's code is ``../../...`` from components/;
    azure-ai-ml 1.35.2 dumps it into the pipeline unchanged and reads it from the pipeline's folder."""
    import shutil

    from pipelines.v2 import __main__ as v2

    project = tmp_path / "project"
    shutil.copytree(Path(SAMPLES).parent, project / "tests/v2/v1_samples")
    shutil.copytree(ROOT / "environments", project / "environments")
    samples = project / "tests/v2/v1_samples/pipelines.py"
    assert v2.main(["export", f"{samples}:file_batch_inference", "--out", str(project / "v2")]) == 0
    component = _yaml(project / "v2/components/predict_digits_mnist.yml")
    assert component["task"]["code"] == "../../tests/v2/v1_samples/scripts"
