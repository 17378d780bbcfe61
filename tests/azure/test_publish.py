"""Azure publish and REST submit, offline: the installed SDK all the way down to its HTTP calls.

The service is faked where the SDK goes on the wire (``tests/azure/fake.py``): the SDK's own
``Pipeline`` graph builder, ``PipelineEndpoint`` and ``Schedule`` code and their ``_Aeva*Provider``s run,
and the request bodies they send are recorded; the compute, datastore, dataset, environment and
workspace REST look-ups answer from memory; sockets and DNS are blocked.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from pipelines.errors import UserError
from pipelines.settings import PROJECT_ROOT, Settings
from tests.azure.fake import BASE, RG, SUB, WS, FakeAzureML, configured_fake

pytestmark = pytest.mark.slow  # services, the SDK's graph builder or the package index


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeAzureML:
    """The fake Azure ML service behind a configured workspace."""
    return configured_fake(monkeypatch, tmp_path)


def train_definition(**overrides: Any) -> Any:
    from pipelines import train

    return train.build(Settings(**{"timeout_minutes": 15, **overrides}), None)  # Azure's AutoML minimum


def pip_pins(path: Path) -> list[str]:
    spec = yaml.safe_load(path.read_text())
    return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_first_publish_creates_scale_to_zero_compute_registers_env_and_makes_version_0_default(azure):
    from azureml.core import Workspace
    from azureml.core.authentication import ServicePrincipalAuthentication
    from azureml.core.compute.amlcompute import AmlComputeProvisioningConfiguration

    from pipelines.azure import publish

    definition = train_definition(compute_name="train-cluster", vm_size="STANDARD_D2_V2", max_nodes=3)
    result = publish.publish(definition, schedule=False)

    workspace_call = azure.calls[0]
    assert workspace_call[0] == "workspace.get"
    assert (workspace_call[1]["subscription_id"], workspace_call[1]["resource_group"], workspace_call[1]["name"]) == (
        SUB, RG, WS,
    )  # fmt: skip
    assert isinstance(workspace_call[1]["auth"], ServicePrincipalAuthentication)
    assert isinstance(azure.workspace_seen, Workspace) and azure.workspace_seen.name == WS

    [(name, config)] = azure.compute_created
    assert name == "train-cluster"
    assert isinstance(config, AmlComputeProvisioningConfiguration)
    scale = config.scale_settings
    assert (config.vm_size, scale.minimum_node_count, scale.maximum_node_count) == ("STANDARD_D2_V2", 0, 3)
    assert scale.idle_seconds_before_scaledown == publish.IDLE_SECONDS_BEFORE_SCALEDOWN
    assert result["compute"] == [{"name": "train-cluster", "action": "created", "type": "AmlCompute",
                                  "vm_size": "STANDARD_D2_V2", "min_nodes": 0, "max_nodes": 3}]  # fmt: skip

    [env] = azure.registered
    assert env.name == "amlops-train" and env.version == "1"
    assert list(env.python.conda_dependencies.pip_packages) == pip_pins(
        PROJECT_ROOT / "environments/train.yml"
    )
    assert "azureml-core==1.61.0.post4" in list(env.python.conda_dependencies.pip_packages)
    assert result["environments"] == [
        {"name": "amlops-train", "action": "registered", "version": "1"},
        {"name": "AzureML-AutoML", "action": "used as is", "version": None},  # the register step's
    ]

    # the SDK built the graph from these very steps, in this workspace, and published it
    [body] = azure.pipelines
    modules = {m.id: m.name for m in azure.caller._module_entities.values()}
    assert [modules[n.module_id] for n in body.graph.module_nodes] == [s.name for s in definition.steps]
    assert body.description == definition.description
    assert azure.workspace_seen is not None and azure.workspace_seen.name == WS
    assert body.name == "amlops-train" and body.version == publish.settings_version(definition.settings)
    assert body.version.startswith("settings-")
    assert body.continue_run_on_step_failure is False
    published = azure.caller._pipeline_entities["pp-1"]
    assert published.total_run_steps == 3 and published.url == result["pipeline_url"]
    # the AutoML step runs on the cluster object, not only its name
    automl = next(n for n in body.graph.module_nodes if modules[n.module_id] == "automl")
    assert {p.name: p.value for p in automl.module_parameters}["target"] == "train-cluster"

    names = azure.names()
    assert names[:7] == [
        "workspace.get", "compute.get", "compute.create", "compute.get", "compute.wait",
        "environment.get",  # the register step's curated AutoML environment, when the steps are rebuilt
        "environment.register",
    ]  # fmt: skip
    assert names.index("pipeline.create") < names.index("endpoint.create")
    assert [n for n in names if n.startswith("endpoint.")] == [
        "endpoint.get",
        "endpoint.get",
        "endpoint.create",
    ]
    # (PipelineEndpoint.publish checks for an existing endpoint itself, hence two gets)
    assert azure.calls[-1] == ("endpoint.create", {"name": "amlops-train", "pipeline_id": "pp-1"})
    assert (result["version"], result["default_version"], result["endpoint_action"]) == ("0", "0", "created")
    assert result["endpoint_url"] == f"{BASE}/PipelineRuns/PipelineEndpointSubmit/Id/pe-1"
    assert result["version_url"] == result["endpoint_url"] + "/0"
    assert result["pipeline_url"] == f"{BASE}/PipelineRuns/PipelineSubmit/pp-1"
    assert result["parameters"]["label"] == "cnt" and result["parameters"]["training_dataset"] == "bike-no"
    assert result["schedule"] is None
    local_keys = {"pipeline_id", "endpoint_name", "version", "default_version", "endpoint_url", "version_url",
                  "pipeline_url", "parameters", "schedule", "lines"}  # fmt: skip
    assert local_keys <= set(result)
    assert any(result["endpoint_url"] in line and "Authorization: Bearer" in line for line in result["lines"])


def test_later_versions_are_added_and_only_made_default_when_asked(azure):
    from pipelines.azure import publish

    definition = train_definition()
    first = publish.publish(definition, schedule=False)
    azure.calls.clear()
    second = publish.publish(train_definition(label="registered"), schedule=False)
    assert [c for c in azure.calls if c[0].startswith("endpoint.")] == [
        ("endpoint.get", {"id": None, "name": "amlops-train"}),
        ("endpoint.get", {"id": "pe-1", "name": None}),  # the SDK reads the endpoint before it adds a version
        ("endpoint.update", {"id": "pe-1", "versions": [("0", "pp-1"), ("1", "pp-2")], "default": "0"}),
    ]
    assert (second["version"], second["default_version"], second["endpoint_action"]) == ("1", "0", "added")
    assert second["endpoint_id"] == first["endpoint_id"] and second["pipeline_id"] != first["pipeline_id"]
    assert second["version_url"].endswith("/pe-1/1")
    # the existing cluster is found, not re-created
    assert "compute.create" not in azure.names()
    assert second["compute"][0]["action"] == "found"

    azure.calls.clear()
    third = publish.publish(definition, set_default=True, schedule=False)
    versions = [("0", "pp-1"), ("1", "pp-2"), ("2", "pp-3")]
    assert [c for c in azure.calls if c[0] == "endpoint.update"] == [
        ("endpoint.update", {"id": "pe-1", "versions": versions, "default": "0"}),
        ("endpoint.update", {"id": "pe-1", "versions": versions, "default": "2"}),
    ]
    assert (third["version"], third["default_version"]) == ("2", "2")
    assert azure.caller.endpoints["pe-1"].default_version == "2"


def test_existing_cluster_is_reported_with_its_own_scale_settings(azure):
    from pipelines.azure import publish

    azure.computes["cpu-cluster"] = azure.compute_payload("cpu-cluster", "STANDARD_NC6", 1, 4)
    result = publish.publish(train_definition(), schedule=False)
    assert azure.compute_created == []
    assert result["compute"] == [{"name": "cpu-cluster", "action": "found", "type": "AmlCompute",
                                  "vm_size": "STANDARD_NC6", "min_nodes": 1, "max_nodes": 4}]  # fmt: skip


def test_validation_errors_fail_with_a_user_error_and_nothing_is_published(azure, monkeypatch):
    """The SDK's graph validation answering errors (this project's pipelines give it none: the graph's
    own ``validate`` is replaced here, on the real graph the builder made), multi-line ones included."""
    from azureml.pipeline.core.graph import Graph

    from pipelines.azure import publish

    seen: list[Any] = []

    def validate(graph: Any) -> list[str]:
        seen.append(graph)
        return [
            "[prep][raw_data] MissingInputDef",
            "Exception boom\nTraceback (most recent call last):\n  ...",
        ]

    monkeypatch.setattr(Graph, "validate", validate)
    definition = train_definition()
    with pytest.raises(UserError) as err:
        publish.publish(definition, schedule=False)
    assert "failed Azure ML validation: [prep][raw_data] MissingInputDef; Exception boom" in err.value.message
    assert "\n" not in str(err.value)
    assert [n.name for n in seen[0].module_nodes] == ["prep", "automl", "register"]
    assert azure.pipelines == [] and "pipeline.create" not in azure.names()
    assert not any(name.startswith("endpoint.") for name in azure.names())


def test_publish_attaches_the_default_schedule_to_the_endpoint_without_an_immediate_run(azure):
    from pipelines.azure import publish

    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    result = publish.publish(train_definition(schedule_hours="4", schedule_minutes="30"), schedule=True)
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    [(_, row)] = [c for c in azure.calls if c[0] == "schedule.create"]
    assert row["name"] == "amlops-train-default"
    assert row["pipeline_endpoint_id"] == result["endpoint_id"] and row["pipeline_id"] is None
    assert row["experiment_name"] == "bike-demand-train"
    rec = row["recurrence"]
    assert (rec.frequency, rec.interval, rec.week_days, rec.hours, rec.minutes) == (
        "Week",
        1,
        ["Monday"],
        [4],
        [30],
    )
    assert rec.time_zone.name == "UTC"
    start = dt.datetime.strptime(rec.start_time, "%Y-%m-%dT%H:%M:%S")
    assert start.second == 0 and before < start <= after + dt.timedelta(minutes=1)
    assert row["datastore_name"] is None
    assert result["schedule"]["action"] == "created" and result["schedule"]["status"] == "Active"
    assert result["schedule"]["recurrence"]["start_time"] == rec.start_time
    assert any(line.startswith("schedule amlops-train-default (created") for line in result["lines"])
    # the definition's own recurrence is left as built (no start_time written into it)
    assert train_definition().schedule.start_time is None

    # publishing again with the same recurrence keeps the schedule (and its start time) as it is
    azure.calls.clear()
    same = publish.publish(train_definition(schedule_hours="4", schedule_minutes="30"), schedule=True)
    assert (
        same["schedule"]["action"] == "kept"
        and same["schedule"]["recurrence"]["start_time"] == rec.start_time
    )
    assert not any(c[0] in ("schedule.create", "schedule.update") for c in azure.calls)


def test_republishing_updates_a_changed_schedule_in_place_and_leaves_a_disabled_one_disabled(azure):
    from pipelines.azure import publish, schedules

    first = publish.publish(train_definition(), schedule=True)
    schedules.disable(azure.workspace_seen, first["schedule"]["id"])
    azure.calls.clear()
    again = publish.publish(train_definition(schedule_frequency="Day", schedule_week_days=""), schedule=True)
    assert "schedule.create" not in azure.names()
    [(_, update)] = [c for c in azure.calls if c[0] == "schedule.update"]
    assert update["status"] == "Disabled"  # the update leaves the schedule's status alone
    assert (update["recurrence"].frequency, update["recurrence"].week_days) == ("Day", None)
    assert update["recurrence"].start_time is not None
    assert len(azure.caller.schedules) == 1
    assert (again["schedule"]["action"], again["schedule"]["status"]) == ("updated", "Disabled")


def test_invalid_recurrence_fails_before_the_workspace_is_touched(azure):
    from azureml.pipeline.core import ScheduleRecurrence

    from pipelines.azure import publish

    definition = train_definition()
    definition.schedule = ScheduleRecurrence(frequency="Hourly", interval=1)
    with pytest.raises(UserError, match="invalid schedule: Invalid value for frequency"):
        publish.publish(definition, schedule=True)
    assert azure.calls == []
    # without a schedule the same definition publishes
    assert publish.publish(definition, schedule=False)["version"] == "0"


def test_publish_is_generic_over_definitions_computes_and_environments(azure, tmp_path):
    """Two script steps on two clusters, one with a project Environment and one with a curated one."""
    from azureml.core import Environment
    from azureml.core.runconfig import RunConfiguration
    from azureml.pipeline.steps import PythonScriptStep

    from pipelines.azure import publish
    from pipelines.core.definition import PipelineDefinition
    from pipelines.definitions import run_config

    (tmp_path / "a.py").write_text("print('a')\n")
    curated = RunConfiguration()
    curated.environment = Environment("AzureML-sklearn-1.5")
    steps = [
        PythonScriptStep(name="a", script_name="a.py", source_directory=str(tmp_path), compute_target="cpu-a",
                         runconfig=run_config("batch")),
        PythonScriptStep(name="b", script_name="a.py", source_directory=str(tmp_path), compute_target="cpu-b",
                         runconfig=curated),
    ]  # fmt: skip
    definition = PipelineDefinition(
        name="custom", description="two steps", steps=steps, parameters={}, experiment_name="custom-exp",
        schedule=None, settings=Settings(max_nodes=5), module="tests", dataset_param=None,
    )  # fmt: skip
    result = publish.publish(definition)
    nodes = [
        (n, c.scale_settings.minimum_node_count, c.scale_settings.maximum_node_count)
        for n, c in azure.compute_created
    ]
    assert nodes == [("cpu-a", 0, 5), ("cpu-b", 0, 5)]
    assert result["environments"] == [
        {"name": "amlops-batch", "action": "registered", "version": "1"},
        {"name": "AzureML-sklearn-1.5", "action": "used as is", "version": None},
    ]
    [env] = azure.registered
    assert list(env.python.conda_dependencies.pip_packages) == pip_pins(
        PROJECT_ROOT / "environments/batch.yml"
    )
    assert result["schedule"] is None and "schedule.create" not in azure.names()
    assert result["endpoint_name"] == "custom"


def test_a_step_without_compute_is_bad_input(azure, tmp_path):
    from azureml.pipeline.steps import PythonScriptStep

    from pipelines.azure import publish
    from pipelines.core.definition import PipelineDefinition

    (tmp_path / "a.py").write_text("print('a')\n")
    step = PythonScriptStep(name="lonely", script_name="a.py", source_directory=str(tmp_path))
    definition = PipelineDefinition(
        name="x", description="x", steps=[step], parameters={}, experiment_name="x", schedule=None,
        settings=Settings(), module="tests",
    )  # fmt: skip
    with pytest.raises(UserError, match="steps without a compute target: lonely"):
        publish.publish(definition)
    assert "compute.create" not in azure.names()


def test_an_automl_budget_under_azures_minimum_is_refused_before_anything_reaches_azure(azure, capsys):
    from pipelines import train

    assert train.main(["publish", "--target", "azure", "--no-schedule"]) == 2  # the default: 1 minute
    err = capsys.readouterr().err
    assert "Azure ML runs AutoML for at least 15 minutes, and timeout_minutes is 1" in err
    assert "--set timeout_minutes=15" in err and len(err.strip().splitlines()) == 1
    assert azure.calls == []


def test_cli_publish_to_azure_prints_json(azure, capsys):
    from pipelines import train

    assert (
        train.main(["publish", "--target", "azure", "--json", "--no-schedule", "--set", "timeout_minutes=15"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["target"] == "azure" and out["endpoint_name"] == "amlops-train" and out["version"] == "0"
    assert out["version_url"].endswith("/PipelineEndpointSubmit/Id/pe-1/0")


def test_cli_auto_target_publishes_to_azure_when_a_workspace_is_configured(azure, capsys):
    from pipelines import train

    assert train.main(["publish", "--no-schedule", "--set", "timeout_minutes=15"]) == 0
    out = capsys.readouterr().out
    assert "published amlops-train as pipeline pp-1 in workspace ws-ml" in out
    assert "endpoint amlops-train version 0 (default version 0)" in out


# --- REST submit -------------------------------------------------------------------------------------


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self._body = body
        self.text = body if isinstance(body, str) else json.dumps(body)
        self.reason = "reason"

    def json(self) -> Any:
        if isinstance(self._body, str):
            raise ValueError("not JSON")
        return self._body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code} error")


class Posts(list):
    """The recorded ``requests.post`` calls; ``answers`` holds the responses (or errors) to give, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[Any] = []


@pytest.fixture
def posts(monkeypatch: pytest.MonkeyPatch) -> Posts:
    """requests.post faked: records each call and answers with the next queued response."""
    calls = Posts()

    def post(url: str, **kwargs: Any) -> FakeResponse:
        calls.append({"url": url, **kwargs})
        answer = calls.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(requests, "post", post)
    return calls


def test_submit_posts_azures_body_with_an_aad_header_from_the_service_principal(azure, posts, monkeypatch):
    from azureml.core.authentication import ServicePrincipalAuthentication

    from pipelines.azure import publish, submit

    seen_auth: list[Any] = []

    def header(self):
        seen_auth.append((self._tenant_id, self._service_principal_id))
        return {"Authorization": "Bearer aad-token-123"}

    monkeypatch.setattr(ServicePrincipalAuthentication, "get_authentication_header", header)
    published = publish.publish(train_definition(), schedule=False)
    seen_auth.clear()  # publishing used the same identity for the SDK's own service calls
    posts.answers.append(FakeResponse(200, {"Id": "run-42", "Status": "NotStarted"}))

    run_id = submit.submit(
        published["endpoint_url"], "from-ci", {"cutoff_date": "2012-06-30"}, version=published["version"],
        datasets={"training_dataset": {"SavedDataSetReference": {"Id": "ds-1"}}},
    )  # fmt: skip
    assert run_id == "run-42"
    assert seen_auth == [("tenant-1", "client-1")]
    [call] = posts
    assert call["url"] == published["version_url"]
    assert call["params"] == {"pipelineVersion": "0"}
    assert call["json"] == {
        "ExperimentName": "from-ci",
        "ParameterAssignments": {"cutoff_date": "2012-06-30"},
        "DataSetDefinitionValueAssignments": {"training_dataset": {"SavedDataSetReference": {"Id": "ds-1"}}},
    }
    assert call["headers"] == {"Authorization": "Bearer aad-token-123", "Content-Type": "application/json"}
    assert call["timeout"] == submit.DEFAULT_TIMEOUT_SECONDS


def test_submit_to_the_default_version_sends_no_version(posts):
    from pipelines.azure import submit

    class Auth:
        def get_authentication_header(self) -> dict[str, str]:
            return {"Authorization": "Bearer t"}

    posts.answers.append(FakeResponse(200, {"Id": "run-1"}))
    url = f"{BASE}/PipelineRuns/PipelineEndpointSubmit/Id/pe-1"
    assert submit.submit(url + "/", "exp", auth=Auth()) == "run-1"
    assert posts[0]["url"] == url and posts[0]["params"] is None
    assert posts[0]["json"] == {"ExperimentName": "exp", "ParameterAssignments": {}}


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (FakeResponse(401, {"error": {"message": "token expired"}}), UserError, "refused the token (401): token expired"),
        (FakeResponse(400, {"error": {"message": "Unknown parameter 'lable'"}}), UserError, "Unknown parameter 'lable'"),
        (FakeResponse(404, "no such endpoint"), UserError, "rejected the request (404): no such endpoint"),
        (FakeResponse(200, {"Status": "NotStarted"}), RuntimeError, "without a run Id"),
        (FakeResponse(500, {"error": {"message": "boom"}}), requests.HTTPError, "500"),
        (requests.ConnectionError("down"), UserError, "cannot reach"),
    ],
)  # fmt: skip
def test_submit_errors_name_the_problem(posts, answer, error, text):
    from pipelines.azure import submit

    class Auth:
        def get_authentication_header(self) -> dict[str, str]:
            return {"Authorization": "Bearer t"}

    posts.answers.append(answer)
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        submit.submit(f"{BASE}/PipelineRuns/PipelineSubmit/pp-1", "exp", auth=Auth())


def test_submit_rejects_bad_input_before_any_request(posts):
    from pipelines.azure import submit

    with pytest.raises(UserError, match="not an Azure ML REST endpoint"):
        submit.submit("http://127.0.0.1:8765/pipelines/x", "exp", auth=object())
    with pytest.raises(UserError, match="experiment name is required"):
        submit.submit(f"{BASE}/x", "", auth=object())
    assert posts == []


def test_endpoint_url_looks_the_endpoint_up_by_name(azure):
    from pipelines.azure import publish, submit, workspace

    published = publish.publish(train_definition(), schedule=False)
    ws = workspace.get_workspace()
    assert submit.endpoint_url(ws, "amlops-train") == published["endpoint_url"]
    with pytest.raises(UserError, match="no pipeline endpoint 'nope'"):
        submit.endpoint_url(ws, "nope")
