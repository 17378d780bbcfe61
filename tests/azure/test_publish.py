"""Azure publish and REST submit, offline: real SDK objects; only the SDK's service calls are faked.

Faked (``FakeAzureML``), each recording what it was called with:
- ``Workspace`` construction's REST look-up (``azureml.core.workspace._commands.get_workspace``) and its
  service discovery (``Workspace.service_context``): the ``Workspace`` itself is real, built by
  ``pipelines.azure.workspace.get_workspace()``;
- ``_GraphContext.__init__``: where ``Pipeline``, ``PipelineEndpoint`` and ``Schedule`` open their
  connection to the service (an Experiment plus the REST client); it hands them a fake REST client
  (endpoint, schedule and published-pipeline providers), so the SDK's public methods
  (``PipelineEndpoint.publish/get/add/set_default``, ``Schedule.create*/list/get/update/enable/disable``)
  run their own code and argument checks;
- ``_PipelineGraphBuilder.build`` (resolves compute and datastores through the service): a graph that
  keeps the step objects, returns the configured ``validate()`` errors and publishes on ``_save``;
- ``ComputeTarget._get`` (the compute REST GET: None = 404), ``ComputeTarget.create``,
  ``AmlCompute.wait_for_completion``, ``Environment.register``, ``Datastore.get``;
- sockets and DNS are blocked, so any call that was missed fails at once instead of hanging.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from pipelines.errors import UserError
from pipelines.settings import PROJECT_ROOT, Settings

SERVICE = "https://westeurope.api.azureml.ms"
SUB, RG, WS = "00000000-1111-2222-3333-444444444444", "rg-ml", "ws-ml"
BASE = f"{SERVICE}/pipelines/v1.0/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"


def not_found(what: str) -> Exception:
    """The SDK's REST error for a 404, as the service caller raises it."""
    from azureml.pipeline.core._restclients.aeva.models.error_response import ErrorResponseException

    response = requests.Response()
    response.status_code = 404
    response.reason = "Not Found"
    response._content = json.dumps({"error": {"message": f"{what} not found"}}).encode()
    return ErrorResponseException(lambda *a: None, response)


class FakeEndpointProvider:
    """The pipeline-endpoint REST calls, on an in-memory table."""

    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.endpoints: dict[str, dict[str, Any]] = {}

    def _build(self, row: dict[str, Any]) -> Any:
        from azureml.pipeline.core import PipelineEndpoint
        from azureml.pipeline.core.pipeline_endpoint import PipelineIdVersion

        return PipelineEndpoint(
            workspace=self.service.workspace_seen,
            id=row["id"],
            name=row["name"],
            description=row["description"],
            status="Active",
            default_version=row["default"],
            endpoint=f"{BASE}/PipelineRuns/PipelineEndpointSubmit/Id/{row['id']}",
            pipeline_version_list=[PipelineIdVersion(v, p) for v, p in row["versions"]],
            _pipeline_endpoint_provider=self,
        )

    def get_pipeline_endpoint(self, endpoint_id: str | None = None, name: str | None = None) -> Any:
        self.service.calls.append(("endpoint.get", {"id": endpoint_id, "name": name}))
        for row in self.endpoints.values():
            if row["id"] == endpoint_id or row["name"] == name:
                return self._build(row)
        raise not_found(f"pipeline endpoint {name or endpoint_id}")

    def create_pipeline_endpoint(self, name: str, description: str, pipeline_id: str) -> Any:
        self.service.calls.append(("endpoint.create", {"name": name, "pipeline_id": pipeline_id}))
        row = {"id": f"pe-{len(self.endpoints) + 1}", "name": name, "description": description,
               "default": "0", "versions": [("0", pipeline_id)]}  # fmt: skip
        self.endpoints[row["id"]] = row
        return self._build(row)

    def update_pipeline_endpoint(self, endpoint_id: str, version: str | None = None, name: str | None = None,
                                 pipeline_id: str | None = None, description: str | None = None,
                                 status: str | None = None, add_default: bool = False) -> Any:  # fmt: skip
        self.service.calls.append(
            (
                "endpoint.update",
                {
                    "id": endpoint_id,
                    "pipeline_id": pipeline_id,
                    "version": version,
                    "add_default": add_default,
                },
            )  # fmt: skip
        )
        row = self.endpoints[endpoint_id]
        if pipeline_id is not None:
            row["versions"].append((str(len(row["versions"])), pipeline_id))
            if add_default:
                row["default"] = row["versions"][-1][0]
        if version is not None:
            row["default"] = version
        return self._build(row)


class FakeScheduleProvider:
    """The schedule REST calls, on an in-memory table; records what each create/update received."""

    def __init__(self, service: FakeAzureML) -> None:
        self.service = service
        self.rows: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)

    def _build(self, row: dict[str, Any]) -> Any:
        from azureml.pipeline.core import Schedule

        return Schedule(
            workspace=self.service.workspace_seen, id=row["id"], name=row["name"], description=row["description"],
            pipeline_id=row["pipeline_id"], status=row["status"], recurrence=row["recurrence"],
            datastore_name=row["datastore_name"], polling_interval=row["polling_interval"],
            data_path_parameter_name=row["data_path_parameter_name"], continue_on_step_failure=None,
            path_on_datastore=row["path_on_datastore"], _schedule_provider=self,
            pipeline_endpoint_id=row["pipeline_endpoint_id"],
        )  # fmt: skip

    def create_schedule(self, name: str, experiment_name: str, published_pipeline_id: str | None = None,
                        published_endpoint_id: str | None = None, recurrence: Any = None,
                        datastore_name: str | None = None, description: str | None = None,
                        data_path_parameter_name: str | None = None, polling_interval: int | None = None,
                        pipeline_parameters: dict | None = None, continue_on_step_failure: bool | None = None,
                        path_on_datastore: str | None = None) -> Any:  # fmt: skip
        row = {
            "id": f"sched-{next(self.ids)}", "name": name, "experiment_name": experiment_name,
            "pipeline_id": published_pipeline_id, "pipeline_endpoint_id": published_endpoint_id,
            "recurrence": copy.deepcopy(recurrence), "datastore_name": datastore_name, "description": description,
            "data_path_parameter_name": data_path_parameter_name, "polling_interval": polling_interval,
            "pipeline_parameters": pipeline_parameters, "path_on_datastore": path_on_datastore, "status": "Active",
        }  # fmt: skip
        self.rows[row["id"]] = row
        self.service.calls.append(("schedule.create", dict(row)))
        return self._build(row)

    def get_schedule(self, schedule_id: str) -> Any:
        self.service.calls.append(("schedule.get", schedule_id))
        if schedule_id not in self.rows:
            raise not_found(f"schedule {schedule_id}")
        return self._build(self.rows[schedule_id])

    def get_all_schedules(self, active_only: bool = True) -> list[Any]:
        self.service.calls.append(("schedule.list", {"active_only": active_only}))
        return [self._build(r) for r in self.rows.values() if r["status"] == "Active" or not active_only]

    def get_schedules_by_pipeline_id(self, pipeline_id: str) -> list[Any]:
        return [self._build(r) for r in self.rows.values() if r["pipeline_id"] == pipeline_id]

    def get_schedules_by_pipeline_endpoint_id(self, pipeline_endpoint_id: str) -> list[Any]:
        self.service.calls.append(("schedule.list", {"pipeline_endpoint_id": pipeline_endpoint_id}))
        return [
            self._build(r) for r in self.rows.values() if r["pipeline_endpoint_id"] == pipeline_endpoint_id
        ]

    def set_status(self, schedule_id: str, new_status: str) -> None:
        self.service.calls.append(("schedule.set_status", {"id": schedule_id, "status": new_status}))
        self.rows[schedule_id]["status"] = new_status

    def update_schedule(self, schedule_id: str, name: str | None = None, description: str | None = None,
                        status: str | None = None, recurrence: Any = None, **rest: Any) -> Any:  # fmt: skip
        row = self.rows[schedule_id]
        self.service.calls.append(
            (
                "schedule.update",
                {"id": schedule_id, "status": status, "recurrence": copy.deepcopy(recurrence)},
            )
        )
        for key, value in {"name": name, "description": description, "status": status,
                           "recurrence": copy.deepcopy(recurrence)}.items():  # fmt: skip
            if value is not None:
                row[key] = value
        return self._build(row)


class FakeGraph:
    """What the graph builder returns: the steps as given, validation errors, and publishing."""

    def __init__(self, service: FakeAzureML, name: str, steps: list[Any]) -> None:
        self.service, self.name, self.steps = service, name, steps

    def validate(self) -> list[str]:
        self.service.calls.append(("pipeline.validate", None))
        return list(self.service.validation_errors)

    def _save(self, name: str | None = None, description: str | None = None, version: str | None = None,
              continue_on_step_failure: bool | None = None, enable_email_notification: Any = None) -> Any:  # fmt: skip
        from azureml.pipeline.core import PublishedPipeline

        pipeline_id = f"pp-{len(self.service.published) + 1}"
        published = PublishedPipeline(
            name=name, graph_id=f"graph-{pipeline_id}", description=description, version=version,
            published_pipeline_id=pipeline_id, status="Active",
            endpoint=f"{BASE}/PipelineRuns/PipelineSubmit/{pipeline_id}", total_run_steps=len(self.steps),
            workspace=self.service.workspace_seen, continue_on_step_failure=continue_on_step_failure,
        )  # fmt: skip
        self.service.published.append(published)
        self.service.calls.append(("pipeline.publish", {"name": name, "version": version,
                                                        "continue_on_step_failure": continue_on_step_failure}))  # fmt: skip
        return published


class FakeAzureML:
    """The Azure ML service as the SDK sees it, in memory."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.computes: dict[str, dict[str, Any]] = {}
        self.compute_created: list[tuple[str, Any]] = []
        self.registered: list[Any] = []
        self.pipelines: list[dict[str, Any]] = []
        self.published: list[Any] = []
        self.validation_errors: list[str] = []
        self.datastores: dict[str, Any] = {}
        self.workspace_seen: Any = None
        self.endpoint_provider = FakeEndpointProvider(self)
        self.schedule_provider = FakeScheduleProvider(self)

    def compute_payload(self, name: str, vm_size: str, min_nodes: int, max_nodes: int) -> dict[str, Any]:
        """An AmlCompute GET response body, shaped as the resource provider returns it."""
        return {
            "id": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/"
            f"workspaces/{WS}/computes/{name}",
            "name": name, "location": "westeurope", "tags": None,
            "properties": {
                "computeType": "AmlCompute", "isAttachedCompute": False, "description": None,
                "resourceId": None, "provisioningState": "Succeeded", "provisioningErrors": None,
                "properties": {
                    "vmSize": vm_size, "vmPriority": "Dedicated", "subnet": None,
                    "scaleSettings": {"minNodeCount": min_nodes, "maxNodeCount": max_nodes,
                                      "nodeIdleTimeBeforeScaleDown": "PT1800S"},
                },
            },
        }  # fmt: skip

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import azureml.core.workspace as workspace_module
        from azureml.core import Datastore, Environment
        from azureml.core.compute import AmlCompute, ComputeTarget
        from azureml.pipeline.core._graph_context import _GraphContext
        from azureml.pipeline.core.builder import _PipelineGraphBuilder

        service = self

        def blocked(*args: Any, **kwargs: Any) -> Any:
            raise OSError("network access in an offline test")

        monkeypatch.setattr(socket.socket, "connect", blocked)
        monkeypatch.setattr(socket, "getaddrinfo", blocked)

        def get_workspace_rest(auth, subscription_id, resource_group, workspace_name, *rest):
            service.calls.append(("workspace.get", {"auth": auth, "subscription_id": subscription_id,
                                                    "resource_group": resource_group, "name": workspace_name}))  # fmt: skip
            return None

        monkeypatch.setattr(workspace_module._commands, "get_workspace", get_workspace_rest)

        class ServiceContext:  # the workspace's service discovery (ARM), used for portal links
            def _get_workspace_portal_url(self) -> str:
                return "https://ml.azure.com"

        monkeypatch.setattr(
            workspace_module.Workspace, "service_context", property(lambda self: ServiceContext())
        )

        class Caller:
            _service_endpoint = SERVICE

        class Provider:
            _service_caller = Caller()
            pipeline_endpoint_provider = service.endpoint_provider
            schedule_provider = service.schedule_provider

        def graph_context_init(self, experiment_name, workspace=None, default_source_directory=None,
                               service_endpoint=None, workflow_provider=None):  # fmt: skip
            service.workspace_seen = workspace
            self._targets = None
            self._experiment_name = experiment_name
            self._experiment = None
            self._workspace = workspace
            self._default_source_directory = default_source_directory
            self._workflow_provider = Provider()

        monkeypatch.setattr(_GraphContext, "__init__", graph_context_init)

        def build(self, name, steps, finalize=True, regenerate_outputs=False):
            service.pipelines.append(
                {"description": name, "steps": steps, "workspace": service.workspace_seen}
            )
            service.calls.append(("pipeline.build", {"description": name, "steps": [s.name for s in steps]}))
            return FakeGraph(service, name, steps)

        monkeypatch.setattr(_PipelineGraphBuilder, "build", build)

        def compute_get(workspace, name):
            service.calls.append(("compute.get", name))
            return service.computes.get(name)

        monkeypatch.setattr(ComputeTarget, "_get", staticmethod(compute_get))

        def compute_create(workspace, name, provisioning_configuration):
            service.calls.append(("compute.create", name))
            service.compute_created.append((name, provisioning_configuration))
            cfg = provisioning_configuration
            scale = cfg.scale_settings
            service.computes[name] = service.compute_payload(
                name, cfg.vm_size, scale.minimum_node_count, scale.maximum_node_count
            )
            return ComputeTarget(workspace, name)

        monkeypatch.setattr(ComputeTarget, "create", staticmethod(compute_create))
        monkeypatch.setattr(
            AmlCompute, "wait_for_completion",
            lambda self, show_output=False, **kw: service.calls.append(("compute.wait", self.name)),
        )  # fmt: skip

        def register(env, workspace):
            registered = copy.deepcopy(env)
            registered.version = str(sum(e.name == env.name for e in service.registered) + 1)
            service.registered.append(registered)
            service.calls.append(("environment.register", env.name))
            return registered

        monkeypatch.setattr(Environment, "register", register)

        def datastore_get(workspace, datastore_name):
            service.calls.append(("datastore.get", datastore_name))
            return service.datastores[datastore_name]

        monkeypatch.setattr(Datastore, "get", staticmethod(datastore_get))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def configured_fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeAzureML:
    """A configured workspace (environment variables, service principal) and the fake service installed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AZUREML_SUBSCRIPTION_ID", SUB)
    monkeypatch.setenv("AZUREML_RESOURCE_GROUP", RG)
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", WS)
    monkeypatch.setenv("AZURE_TENANT_ID", "tenant-1")
    monkeypatch.setenv("AZURE_CLIENT_ID", "client-1")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-a-secret")
    service = FakeAzureML()
    service.install(monkeypatch)
    return service


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
    assert result["environments"] == [{"name": "amlops-train", "action": "registered", "version": "1"}]

    [built] = azure.pipelines
    assert built["steps"] == definition.steps and all(
        a is b for a, b in zip(built["steps"], definition.steps, strict=True)
    )
    assert built["description"] == definition.description
    assert built["workspace"] is azure.workspace_seen

    [published] = azure.published
    assert published.name == "amlops-train" and published.description == definition.description
    assert published.version == publish.settings_version(definition.settings)
    assert published.version.startswith("settings-")
    assert published._continue_on_step_failure is False
    assert published.total_run_steps == 3

    assert azure.names() == [
        "workspace.get",
        "compute.get",
        "compute.create",
        "compute.get",
        "compute.wait",
        "environment.register",
        "pipeline.build",
        "pipeline.validate",
        "pipeline.publish",
        "endpoint.get",
        "endpoint.get",
        "endpoint.create",
    ]  # fmt: skip  (PipelineEndpoint.publish checks for an existing endpoint itself, hence two gets)
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
        ("endpoint.update", {"id": "pe-1", "pipeline_id": "pp-2", "version": None, "add_default": False}),
    ]
    assert (second["version"], second["default_version"], second["endpoint_action"]) == ("1", "0", "added")
    assert second["endpoint_id"] == first["endpoint_id"] and second["pipeline_id"] != first["pipeline_id"]
    assert second["version_url"].endswith("/pe-1/1")
    # the existing cluster is found, not re-created
    assert "compute.create" not in azure.names()
    assert second["compute"][0]["action"] == "found"

    azure.calls.clear()
    third = publish.publish(definition, set_default=True, schedule=False)
    assert [c for c in azure.calls if c[0] == "endpoint.update"] == [
        ("endpoint.update", {"id": "pe-1", "pipeline_id": "pp-3", "version": None, "add_default": False}),
        ("endpoint.update", {"id": "pe-1", "pipeline_id": None, "version": "2", "add_default": False}),
    ]
    assert (third["version"], third["default_version"]) == ("2", "2")
    assert azure.endpoint_provider.endpoints["pe-1"]["default"] == "2"


def test_existing_cluster_is_reported_with_its_own_scale_settings(azure):
    from pipelines.azure import publish

    azure.computes["cpu-cluster"] = azure.compute_payload("cpu-cluster", "STANDARD_NC6", 1, 4)
    result = publish.publish(train_definition(), schedule=False)
    assert azure.compute_created == []
    assert result["compute"] == [{"name": "cpu-cluster", "action": "found", "type": "AmlCompute",
                                  "vm_size": "STANDARD_NC6", "min_nodes": 1, "max_nodes": 4}]  # fmt: skip


def test_validation_errors_fail_with_a_user_error_and_nothing_is_published(azure):
    from pipelines.azure import publish

    azure.validation_errors = ["Input raw_data of step prep is not connected", "Step automl has no compute"]
    with pytest.raises(UserError) as err:
        publish.publish(train_definition(), schedule=False)
    assert "failed Azure ML validation" in err.value.message
    assert "Input raw_data of step prep is not connected; Step automl has no compute" in err.value.message
    assert "\n" not in str(err.value)
    assert azure.published == [] and "pipeline.publish" not in azure.names()
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
    assert "schedule.create" not in azure.names() and "schedule.set_status" not in azure.names()
    [(_, update)] = [c for c in azure.calls if c[0] == "schedule.update"]
    assert update["status"] is None
    assert (update["recurrence"].frequency, update["recurrence"].week_days) == ("Day", None)
    assert update["recurrence"].start_time is not None
    assert len(azure.schedule_provider.rows) == 1
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
