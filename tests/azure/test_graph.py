"""Publishing to Azure builds the SDK's own pipeline graph: asserted on the request bodies it sends.

Everything above the wire is the installed SDK's (see tests/azure/fake.py): each step's ``create_node``,
the module and data-source definitions, the ``PipelineCreationInfo`` (graph nodes, edges, parameters,
dataset assignments), the AutoML settings it serializes, the snapshots it uploads, the endpoint and
schedule bodies. Settings the SDK refuses at publish time end as one line and exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.settings import PROJECT_ROOT, Settings
from tests.azure.fake import FakeAzureML, configured_fake

pytestmark = pytest.mark.slow  # services, the SDK's graph builder or the package index

STEPS_DIR = str(PROJECT_ROOT / "steps")
SCORING_DIR = str(PROJECT_ROOT / "scoring")
BIKE_URL = "https://raw.githubusercontent.com/Azure/MachineLearningNotebooks/master/how-to-use-azureml/automated-machine-learning/forecasting-bike-share/bike-no.csv"


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeAzureML:
    return configured_fake(monkeypatch, tmp_path)


def pip_pins(name: str) -> list[str]:
    spec = yaml.safe_load((PROJECT_ROOT / "environments" / f"{name}.yml").read_text())
    return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)


class Graph:
    """The published pipeline as the service received it (the last ``PipelineCreationInfo``)."""

    def __init__(self, azure: FakeAzureML) -> None:
        self.info = azure.pipelines[-1]
        graph = self.info.graph
        entities = azure.caller._module_entities
        self.nodes = {entities[n.module_id].name: n for n in graph.module_nodes}
        self.modules = {m.name: m for m in azure.modules}
        names = {n.id: name for name, n in self.nodes.items()}
        names.update({d.id: "dataset:" + d.data_set_definition.parameter_name for d in graph.dataset_nodes})
        self.edges = {
            (names[e.source_output_port.node_id], e.source_output_port.port_name,
             names[e.destination_input_port.node_id], e.destination_input_port.port_name)
            for e in graph.edges if e.destination_input_port.node_id
        }  # fmt: skip
        self.parameters = {p.name: p.default_value for p in self.info.graph_interface.parameters}
        self.dataset_parameters = [p.name for p in self.info.graph_interface.data_path_parameter_list]

    def params(self, step: str) -> dict[str, Any]:
        return {p.name: p.value for p in self.nodes[step].module_parameters}

    def runconfig(self, step: str) -> dict[str, Any]:
        return json.loads(self.nodes[step].runconfig)

    def pip(self, step: str) -> list[str]:
        deps = self.runconfig(step)["environment"]["python"]["condaDependencies"]["dependencies"]
        return next(d["pip"] for d in deps if isinstance(d, dict))

    def automl(self) -> dict[str, Any]:
        config = next(
            p.value for p in self.nodes["automl"].module_metadata_parameters if p.name == "AutoMLConfig"
        )
        return json.loads(json.loads(config)["aml_settings_json_string"])

    def batch_metadata(self) -> dict[str, Any]:
        meta = self.nodes["batch-score"].module_metadata_parameters
        return json.loads(next(p.value for p in meta if p.name == "BatchInferencingMetaData"))


def publish_train(**settings: Any) -> dict[str, Any]:
    from pipelines import train
    from pipelines.azure import publish

    return publish.publish(train.build(Settings(**{"timeout_minutes": 15, **settings})), schedule=False)


def test_training_pipeline_publishes_its_real_graph(azure, tmp_path):
    from pipelines.azure.publish import settings_version

    publish_train()
    g = Graph(azure)
    assert (g.info.name, g.info.version, g.info.continue_run_on_step_failure) == (
        "amlops-train", settings_version(Settings(timeout_minutes=15)), False,
    )  # fmt: skip
    assert {m.name: m.step_type for m in azure.modules} == {
        "prep": "PythonScriptStep", "automl": "AutoMLStep", "register": "PythonScriptStep",
    }  # fmt: skip
    assert g.edges == {
        ("dataset:training_dataset", "data", "prep", "raw_data"),
        ("prep", "train_data", "automl", "training_data"),
        ("automl", "model_data", "register", "model_data"),
        ("automl", "metrics_data", "register", "metrics_data"),
        ("prep", "test_data", "register", "test_data"),
    }
    assert g.parameters == {
        "label": "cnt",
        "time_column": "date",
        "cutoff_date": "2012-08-31",
        "model_name": "bike-demand",
    }
    assert g.dataset_parameters == ["training_dataset"]
    # the default dataset: its saved definition reads the public bike data, assigned by saved id
    [saved] = azure.saved_datasets
    assert BIKE_URL in saved.dataflow_json
    assigned = g.info.data_set_definition_value_assignments["training_dataset"]
    assert assigned.saved_data_set_reference.id == "saved-1"

    for step, script in (("prep", "prep.py"), ("register", "register.py")):
        params = g.params(step)
        assert (params["Script"], params["Target"], params["MLCComputeType"]) == (
            script,
            "cpu-cluster",
            "AmlCompute",
        )
    assert g.runconfig("prep")["environment"]["name"] == "amlops-train" and g.pip("prep") == pip_pins("train")
    # the register step loads Azure AutoML's model: it runs in AutoML's curated environment, as found
    register_env = g.runconfig("register")["environment"]
    assert (register_env["name"], register_env["version"]) == ("AzureML-AutoML", "171")
    assert "azureml-train-automl-runtime==1.62.0" in g.pip("register")
    assert (g.params("prep")["label"], g.params("register")["model_name"]) == ("label", "model_name")  # bound

    automl = g.automl()
    assert (automl["task_type"], automl["primary_metric"], automl["label_column_name"]) == (
        "regression", "normalized_root_mean_squared_error", "cnt",
    )  # fmt: skip
    assert automl["experiment_timeout_minutes"] >= 15 and automl["n_cross_validations"] == 3
    assert (automl["compute_target"], automl["path"], automl["is_timeseries"]) == ("cpu-cluster", None, False)
    assert automl["scenario"] == "AutoML"  # the released curated environment, not "non-prod"
    assert (g.params("automl")["MLCComputeType"], g.params("automl")["target"]) == (
        "AmlCompute",
        "cpu-cluster",
    )
    assert g.params("automl")["path"] == STEPS_DIR

    # three small snapshots (the steps folder), nothing from the folder publish ran in
    assert azure.snapshots == [STEPS_DIR] * 3
    assert not (tmp_path / "automl.log").exists()
    assert (tmp_path / "home" / "logs" / "automl-publish.log").is_file()
    # AutoML's released environment: no look-up of the non-production ones
    assert [c for c in azure.calls if c[0] == "environment.get"] == [("environment.get", "AzureML-AutoML")]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"task": "forecasting", "primary_metric": "normalized_root_mean_squared_error", "forecast_horizon": 14},
            {"task_type": "regression", "is_timeseries": True, "time_column_name": "date", "max_horizon": 14},
        ),
        (
            {"task": "classification", "label": "season", "primary_metric": "accuracy", "n_cross_validations": 5,
             "allowed_models": "LightGBM,RandomForest"},
            {"task_type": "classification", "primary_metric": "accuracy", "label_column_name": "season",
             "n_cross_validations": 5, "whitelist_models": ["LightGBM", "RandomForest"], "is_timeseries": False},
        ),
    ],
    ids=["forecasting", "classification"],
)  # fmt: skip
def test_forecasting_and_classification_settings_reach_the_automl_module(azure, settings, expected):
    result = publish_train(**settings)
    automl = Graph(azure).automl()
    # the SDK keeps allowed models in a set: their order on the wire follows string hashing, not the settings
    got = {k: sorted(automl[k]) if k == "whitelist_models" else automl[k] for k in expected}
    assert got == expected
    assert automl["experiment_timeout_minutes"] >= 15
    assert result["parameters"]["label"] == settings.get("label", "cnt")


def test_batch_pipeline_publishes_its_real_graph(azure):
    from pipelines import batch_score
    from pipelines.azure import publish

    publish.publish(batch_score.build(Settings(node_count=2, max_nodes=4)), schedule=False)
    g = Graph(azure)
    assert {m.name: m.step_type for m in azure.modules} == {
        "batch-score": "ParallelRunStep", "collect": "PythonScriptStep",
    }  # fmt: skip
    assert g.edges == {
        ("dataset:input_dataset", "data", "batch-score", "batch_input"),
        ("batch-score", "scores", "collect", "scores"),
    }
    assert g.parameters == {"mini_batch_size": "1MB", "model_name": "bike-demand", "model_version": 0}
    assert g.dataset_parameters == ["input_dataset"]
    [saved] = azure.saved_datasets
    assert BIKE_URL in saved.dataflow_json and "delimited" in saved.dataflow_json.lower()
    meta = g.batch_metadata()
    assert (meta["EntryScript"], meta["NodeCount"], meta["ProcessCountPerNode"], meta["OutputAction"]) == (
        "scoring.py", 2, 2, "append_row",
    )  # fmt: skip
    assert (meta["ComputeName"], meta["EnvironmentName"], meta["ErrorThreshold"]) == (
        "cpu-cluster",
        "amlops-batch",
        10,
    )
    assert g.params("batch-score")["Script"] == "driver/amlbi_main.py"  # Azure's ParallelRunStep driver
    for step in ("batch-score", "collect"):
        assert g.params(step)["Target"] == "cpu-cluster"
        assert g.runconfig(step)["environment"]["name"] == "amlops-batch" and g.pip(step) == pip_pins("batch")
    assert sorted(azure.snapshots) == [SCORING_DIR, STEPS_DIR]  # (modules are created concurrently)
    outputs = {s.name: s.data_store_name for s in g.nodes["batch-score"].module_output_settings}
    assert outputs == {"scores": "workspaceblobstore"}


def test_batch_scoring_of_an_azure_automl_model_runs_in_automl_s_environment(azure):
    from pipelines import batch_score
    from pipelines.azure import publish

    publish.publish(batch_score.build(Settings(batch_environment="AzureML-AutoML")), schedule=False)
    g = Graph(azure)
    assert g.batch_metadata()["EnvironmentName"] == "AzureML-AutoML"
    assert g.runconfig("batch-score")["environment"]["name"] == "AzureML-AutoML"
    assert "azureml-train-automl-runtime==1.62.0" in g.pip("batch-score")
    assert g.runconfig("collect")["environment"]["name"] == "amlops-batch"  # it loads no model


def test_cli_publishes_the_batch_pipeline_to_azure(azure, capsys):
    from pipelines import batch_score

    assert batch_score.main(["publish", "--target", "azure", "--json", "--no-schedule"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["endpoint_name"] == "amlops-batch-score" and out["pipeline_id"] == "pp-1"
    assert Graph(azure).info.name == "amlops-batch-score"


# --- what the SDK or Azure refuses at publish time: one line, exit status 2 ------------------------


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line (stderr may also hold the SDK's progress lines, such as "Created step ...")."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err
    return errors[0]


def test_a_local_data_file_is_refused_before_azure_is_reached(azure, capsys, tmp_path):
    from pipelines import batch_score, train

    (tmp_path / "mine.csv").write_text("a,b\n1,2\n")
    argv = ["publish", "--target", "azure", "--no-schedule", "--set", f"dataset={tmp_path / 'mine.csv'}"]
    assert train.main([*argv, "--set", "timeout_minutes=15"]) == 2
    assert "input raw_data is the local file mine.csv, which Azure ML cannot read" in one_line_error(capsys)
    assert batch_score.main(argv) == 2
    assert "input batch_input is the local file mine.csv" in one_line_error(capsys)
    assert azure.calls == []


def test_a_cluster_that_is_not_ready_is_refused_by_the_automl_step(azure, capsys):
    from pipelines import train

    azure.computes["cpu-cluster"] = azure.compute_payload(
        "cpu-cluster", "STANDARD_DS3_V2", 0, 2, state="Failed"
    )
    assert train.main(["publish", "--target", "azure", "--no-schedule", "--set", "timeout_minutes=15"]) == 2
    err = one_line_error(capsys)
    assert "Azure ML refused pipeline amlops-train: Compute not in 'Succeeded' state" in err
    assert azure.pipelines == []


def test_more_nodes_than_the_cluster_has_are_refused_by_the_parallel_run_config(azure, capsys):
    from pipelines import batch_score

    azure.computes["cpu-cluster"] = azure.compute_payload("cpu-cluster", "STANDARD_DS3_V2", 0, 2)
    assert batch_score.main(["publish", "--target", "azure", "--no-schedule", "--set", "node_count=3"]) == 2
    err = one_line_error(capsys)
    assert "node_count" in err and "3" in err
    assert azure.pipelines == []


def test_a_pipeline_the_service_rejects_is_one_line(capsys, monkeypatch, tmp_path):
    import requests
    from azureml.pipeline.core._restclients.aeva.models.error_response import ErrorResponseException

    from pipelines import batch_score

    def rejected(caller, pipeline_creation_info):
        response = requests.Response()
        response.status_code = 400
        response._content = json.dumps({"error": {"message": "Parameter name 'x y' is invalid"}}).encode()
        raise ErrorResponseException(lambda *a: None, response)

    import tests.azure.fake as fake

    monkeypatch.setattr(
        fake, "_caller_class", _wrapped(fake._caller_class, "create_pipeline_async", rejected)
    )
    azure = fake.configured_fake(monkeypatch, tmp_path)
    assert batch_score.main(["publish", "--target", "azure", "--no-schedule"]) == 2
    err = one_line_error(capsys)
    assert "Azure ML rejected pipeline amlops-batch-score (400): Parameter name 'x y' is invalid" in err
    assert azure.pipelines == []


def _wrapped(factory: Any, method: str, replacement: Any) -> Any:
    def make() -> type:
        cls = factory()
        return type(cls.__name__, (cls,), {method: replacement})

    return make


# --- schedules report provisioning ------------------------------------------------------------------


def test_publish_waits_for_the_schedule_to_be_provisioned(azure, monkeypatch):
    import azureml.pipeline.core.schedule as schedule_module

    from pipelines import train
    from pipelines.azure import publish

    monkeypatch.setattr(schedule_module.time, "sleep", lambda s: None)
    azure.schedule_provisioning[:] = ["1", "1", "0"]  # Provisioning, Provisioning, Completed
    result = publish.publish(train.build(Settings(timeout_minutes=15)), schedule=True)
    assert result["schedule"]["action"] == "created"
    assert [n for n in azure.names() if n.startswith("schedule.")] == [
        "schedule.list", "schedule.create", "schedule.get", "schedule.get",
    ]  # fmt: skip
    [(_, row)] = [c for c in azure.calls if c[0] == "schedule.create"]
    body = row["body"]
    assert body.pipeline_endpoint_id == result["endpoint_id"] and body.pipeline_id is None
    assert body.pipeline_submission_info.experiment_name == "bike-demand-train"
    assert (body.recurrence.frequency, body.recurrence.interval) in (("Week", 1), ("3", 1))


@pytest.mark.parametrize("statuses", [["2"], ["1", "2"]], ids=["at-once", "after-waiting"])
def test_a_schedule_whose_provisioning_fails_is_a_one_line_error(azure, capsys, monkeypatch, statuses):
    import azureml.pipeline.core.schedule as schedule_module

    from pipelines import train

    monkeypatch.setattr(schedule_module.time, "sleep", lambda s: None)
    azure.schedule_provisioning[:] = statuses
    assert train.main(["publish", "--target", "azure", "--set", "timeout_minutes=15"]) == 2
    err = one_line_error(capsys)
    assert "Azure ML could not provision schedule 'amlops-train-default' (provisioning status Failed)" in err
