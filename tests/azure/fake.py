"""Azure ML faked where the SDK goes on the wire, so offline tests run the SDK's own code above that.

Real, as on Azure: ``Workspace`` (from ``pipelines.azure.workspace.get_workspace()``), ``ComputeTarget``
objects (built by the SDK from the compute resource's JSON), ``Environment``, ``Pipeline`` and its graph
builder (every step's ``create_node``: module and data-source definitions, the AutoML settings, the
graph's nodes, edges and parameters, the ``PipelineCreationInfo``), ``PublishedPipeline``,
``PipelineEndpoint``, ``Schedule`` and the SDK's ``_Aeva*Provider`` classes that turn them into request
bodies.

Replaced:
- the pipelines service's HTTP caller: ``_AevaWorkflowProvider.create_service_caller`` returns
  ``FakeAevaCaller``, the SDK's own in-memory ``DryRunServiceCaller`` recording every request body and
  answering as the service does (ids, URLs, 404s, a schedule's provisioning status);
- the snapshot upload (``_AevaModuleSnapshotUploader.upload``): records the folder;
- the other REST look-ups: the workspace (ARM GET), service discovery, AAD tokens, computes (GET, list,
  create, wait), the default datastore and ``Datastore.get``, saving a dataset definition (the body is
  recorded), an environment GET (404: none registered) and ``Environment.register``;
- sockets and DNS are blocked, so a call that was missed fails at once instead of hanging.

``service.calls`` holds ``(name, body)`` in order; names are listed in ``FakeAzureML.__init__``.
"""

from __future__ import annotations

import copy
import io
import json
import socket
from contextlib import redirect_stdout
from typing import Any

import pytest
import requests

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


def _quiet(method: Any) -> Any:
    """DryRunServiceCaller prints 'mock ...' on each call; keep stdout for the command under test."""

    def call(*args: Any, **kwargs: Any) -> Any:
        with redirect_stdout(io.StringIO()):
            return method(*args, **kwargs)

    return call


def _caller_class() -> type:
    from azureml.pipeline.core._aeva_provider import _AevaScheduleProvider
    from azureml.pipeline.core._restclients.aeva.dryrun_service_caller import DryRunServiceCaller
    from azureml.pipeline.core._restclients.aeva.models import (
        PipelineEndpointEntity,
        PipelineScheduleEntity,
        PipelineVersion,
    )

    class FakeAevaCaller(DryRunServiceCaller):
        """The pipelines service in memory: the SDK's dry-run caller, recording bodies, with Azure's ids."""

        def __init__(self, service: FakeAzureML) -> None:
            super().__init__()
            self.service = service
            self._service_endpoint = SERVICE
            self.endpoints: dict[str, Any] = {}
            self.schedules: dict[str, Any] = {}

        def record(self, name: str, body: Any) -> None:
            self.service.calls.append((name, body))

        # --- modules, data sources, published pipelines -----------------------------------------
        @_quiet
        def create_module_async(self, creation_info: Any) -> Any:
            self.record("module.create", creation_info)
            self.service.modules.append(creation_info)
            return DryRunServiceCaller.create_module_async(self, creation_info)

        @_quiet
        def create_datasource_async(self, creation_info: Any) -> Any:
            self.record("datasource.create", creation_info)
            return DryRunServiceCaller.create_datasource_async(self, creation_info)

        @_quiet
        def create_pipeline_async(self, pipeline_creation_info: Any) -> Any:
            info = pipeline_creation_info
            self.service.pipelines.append(info)
            self.record("pipeline.create", info)
            entity = DryRunServiceCaller.create_pipeline_async(self, info)
            del self._pipeline_entities[entity.id]
            entity.id = f"pp-{len(self.service.pipelines)}"
            entity.url = f"{BASE}/PipelineRuns/PipelineSubmit/{entity.id}"
            entity.total_run_steps = len(info.graph.module_nodes)
            self._pipeline_entities[entity.id] = entity
            return entity

        @_quiet
        def get_pipeline_async(self, pipeline_id: str) -> Any:
            self.record("pipeline.get", pipeline_id)
            if pipeline_id not in self._pipeline_entities:
                raise not_found(f"pipeline {pipeline_id}")
            return copy.deepcopy(self._pipeline_entities[pipeline_id])

        # --- pipeline endpoints --------------------------------------------------------------------
        def create_pipeline_endpoint_async(self, pipeline_endpoint_creation_info: Any) -> Any:
            info = pipeline_endpoint_creation_info
            self.record("endpoint.create", {"name": info.name, "pipeline_id": info.pipeline_id})
            endpoint_id = f"pe-{len(self.endpoints) + 1}"
            self.endpoints[endpoint_id] = PipelineEndpointEntity(
                id=endpoint_id, name=info.name, description=info.description, default_version="0",
                entity_status="0", pipeline_version_list=[PipelineVersion(pipeline_id=info.pipeline_id, version="0")],
                url=f"{BASE}/PipelineRuns/PipelineEndpointSubmit/Id/{endpoint_id}",
                swaggerurl=f"{BASE}/PipelineRuns/PipelineEndpointSubmit/Id/{endpoint_id}/swagger",
            )  # fmt: skip
            return copy.deepcopy(self.endpoints[endpoint_id])

        def get_pipeline_endpoint_by_name_async(self, name: str | None = None) -> Any:
            self.record("endpoint.get", {"id": None, "name": name})
            for entity in self.endpoints.values():
                if entity.name == name:
                    return copy.deepcopy(entity)
            raise not_found(f"pipeline endpoint {name}")

        def get_pipeline_endpoint_by_id_async(self, endpoint_id: str | None = None) -> Any:
            self.record("endpoint.get", {"id": endpoint_id, "name": None})
            if endpoint_id not in self.endpoints:
                raise not_found(f"pipeline endpoint {endpoint_id}")
            return copy.deepcopy(self.endpoints[endpoint_id])

        def update_pipeline_endpoint_async(self, endpoint_id: str, updated: Any) -> Any:
            versions = [(v.version, v.pipeline_id) for v in updated.pipeline_version_list]
            self.record(
                "endpoint.update",
                {"id": endpoint_id, "versions": versions, "default": updated.default_version},
            )
            self.endpoints[endpoint_id] = copy.deepcopy(updated)
            return copy.deepcopy(updated)

        # --- schedules -----------------------------------------------------------------------------
        def row(self, entity: Any) -> dict[str, Any]:
            """A schedule as the SDK reads it back, plus what its submission carries."""
            schedule = _AevaScheduleProvider.from_schedule_entity(entity, self.service.workspace_seen, None)
            submission = entity.pipeline_submission_info
            return {
                "id": entity.id, "name": entity.name, "experiment_name": submission.experiment_name,
                "pipeline_id": entity.pipeline_id, "pipeline_endpoint_id": entity.pipeline_endpoint_id,
                "recurrence": schedule.recurrence, "datastore_name": schedule.datastore_name,
                "description": schedule.description, "data_path_parameter_name": schedule.data_path_parameter_name,
                "polling_interval": schedule.polling_interval, "path_on_datastore": schedule.path_on_datastore,
                "pipeline_parameters": dict(submission.parameter_assignments or {}) or None,
                "status": schedule.status, "body": entity,
            }  # fmt: skip

        def create_schedule_async(self, schedule_creation_info: Any) -> Any:
            info = schedule_creation_info
            entity = PipelineScheduleEntity(
                name=info.name, pipeline_id=info.pipeline_id, pipeline_endpoint_id=info.pipeline_endpoint_id,
                provisioning_status=self.service.schedule_provisioning[0], id=f"sched-{len(self.schedules) + 1}",
                pipeline_submission_info=info.pipeline_submission_info, recurrence=info.recurrence,
                entity_status="0", schedule_type=info.schedule_type, data_store_trigger_info=info.data_store_trigger_info,
            )  # fmt: skip
            self.schedules[entity.id] = entity
            self.record("schedule.create", self.row(entity))
            return copy.deepcopy(entity)

        def get_schedule_async(self, schedule_id: str) -> Any:
            self.record("schedule.get", schedule_id)
            if schedule_id not in self.schedules:
                raise not_found(f"schedule {schedule_id}")
            entity = self.schedules[schedule_id]
            if len(self.service.schedule_provisioning) > 1:  # the next status the service reports
                self.service.schedule_provisioning.pop(0)
            entity.provisioning_status = self.service.schedule_provisioning[0]
            return copy.deepcopy(entity)

        def update_schedule_async(self, schedule_id: str, updated: Any) -> Any:
            updated = copy.deepcopy(updated)
            updated.provisioning_status = self.service.schedule_provisioning[0]
            self.schedules[schedule_id] = updated
            row = self.row(updated)
            self.record(
                "schedule.update",
                {"id": schedule_id, "status": row["status"], "recurrence": row["recurrence"]},
            )
            return copy.deepcopy(updated)

        def _listed(self, keep: Any, query: dict[str, Any]) -> list[Any]:
            self.record("schedule.list", query)
            return [copy.deepcopy(e) for e in self.schedules.values() if keep(e)]

        def get_all_schedules_async(self, active_only: bool = True) -> list[Any]:
            return self._listed(
                lambda e: e.entity_status == "0" or not active_only, {"active_only": active_only}
            )

        def get_schedules_by_pipeline_id_async(self, pipeline_id: str) -> list[Any]:
            return self._listed(lambda e: e.pipeline_id == pipeline_id, {"pipeline_id": pipeline_id})

        def get_schedules_by_pipeline_endpoint_id_async(self, pipeline_endpoint_id: str) -> list[Any]:
            return self._listed(
                lambda e: e.pipeline_endpoint_id == pipeline_endpoint_id,
                {"pipeline_endpoint_id": pipeline_endpoint_id},
            )

    for name in ("get_module_async", "update_module_async", "get_datasource_async", "try_get_module_by_hash_async",
                 "try_get_datasource_by_hash_async", "get_all_datatypes_async", "create_datatype_async"):  # fmt: skip
        setattr(FakeAevaCaller, name, _quiet(getattr(DryRunServiceCaller, name)))
    return FakeAevaCaller


def curated_automl_environment() -> dict[str, Any]:
    """An environment definition shaped as the service returns a curated one (AutoML's runtime inside)."""
    from azureml.core import Environment
    from azureml.core.conda_dependencies import CondaDependencies

    env = Environment("AzureML-AutoML")
    env.python.conda_dependencies = CondaDependencies.create(
        python_version="3.9", pip_packages=["azureml-train-automl-runtime==1.62.0", "azureml-mlflow==1.62.0"]
    )
    body = Environment._serialize_to_dict(env)
    body["version"] = "171"
    return body


class FakeAzureML:
    """The Azure ML service as the SDK sees it on the wire, in memory."""

    def __init__(self) -> None:
        # calls: workspace.get, compute.get/list/create/wait, environment.get/register, datastore.get,
        # dataset.save, snapshot.upload, module.create, datasource.create, pipeline.create/get,
        # endpoint.get/create/update, schedule.create/get/update/list
        self.calls: list[tuple[str, Any]] = []
        self.computes: dict[str, dict[str, Any]] = {}
        self.compute_created: list[tuple[str, Any]] = []
        self.registered: list[Any] = []
        self.modules: list[Any] = []  # ModuleCreationInfo bodies
        self.pipelines: list[Any] = []  # PipelineCreationInfo bodies
        self.saved_datasets: list[Any] = []  # SavedDatasetDto bodies
        self.snapshots: list[str] = []  # folders uploaded as snapshots
        self.datastores: dict[str, Any] = {}
        self.schedule_provisioning: list[str] = ["0"]  # '0' Completed, '1' Provisioning, '2' Failed
        self.workspace_seen: Any = None
        self.caller: Any = None
        self.curated_environments: dict[str, dict[str, Any]] = {
            "AzureML-AutoML": curated_automl_environment()
        }

    def compute_payload(self, name: str, vm_size: str, min_nodes: int, max_nodes: int,
                        state: str = "Succeeded") -> dict[str, Any]:  # fmt: skip
        """An AmlCompute GET response body, shaped as the resource provider returns it."""
        return {
            "id": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/"
            f"workspaces/{WS}/computes/{name}",
            "name": name, "location": "westeurope", "tags": None,
            "properties": {
                "computeType": "AmlCompute", "isAttachedCompute": False, "description": None,
                "resourceId": None, "provisioningState": state, "provisioningErrors": None,
                "properties": {
                    "vmSize": vm_size, "vmPriority": "Dedicated", "subnet": None,
                    "scaleSettings": {"minNodeCount": min_nodes, "maxNodeCount": max_nodes,
                                      "nodeIdleTimeBeforeScaleDown": "PT1800S"},
                },
            },
        }  # fmt: skip

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._block_network(monkeypatch)
        self._workspace(monkeypatch)
        self._computes(monkeypatch)
        self._data(monkeypatch)
        self._environments(monkeypatch)
        self._pipelines_service(monkeypatch)

    def _block_network(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def blocked(*args: Any, **kwargs: Any) -> Any:
            raise OSError("network access in an offline test")

        monkeypatch.setattr(socket.socket, "connect", blocked)
        monkeypatch.setattr(socket, "getaddrinfo", blocked)
        # a call refused that way is retried by urllib3 with growing sleeps (AutoMLStep's settings check
        # asks the service; it then goes on without it): the same refusals, without the waiting
        from urllib3.util.retry import Retry

        monkeypatch.setattr(Retry, "sleep", lambda self, response=None: None)

    def _workspace(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import azureml.core.workspace as workspace_module
        from azureml._base_sdk_common.workspace.models.workspace import Workspace as WorkspaceBody
        from azureml._restclient.service_context import ServiceContext, _ServiceKeys
        from azureml.core.authentication import ServicePrincipalAuthentication

        service = self

        def get_workspace_rest(auth, subscription_id, resource_group, workspace_name, *rest):
            service.calls.append(("workspace.get", {"auth": auth, "subscription_id": subscription_id,
                                                    "resource_group": resource_group, "name": workspace_name}))  # fmt: skip
            return WorkspaceBody.deserialize({
                "id": f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
                      f"Microsoft.MachineLearningServices/workspaces/{workspace_name}",
                "name": workspace_name, "location": "westeurope",
                "properties": {"workspaceId": "0000aaaa-ws00-0000-0000-000000000001",
                               "discoveryUrl": f"{SERVICE}/discovery"},
            })  # fmt: skip

        monkeypatch.setattr(workspace_module._commands, "get_workspace", get_workspace_rest)
        monkeypatch.setattr(
            ServiceContext,
            "_fetch_endpoints",
            lambda self: dict.fromkeys(_ServiceKeys.get_discovery_keys(), SERVICE),
        )
        monkeypatch.setattr(ServicePrincipalAuthentication, "_get_arm_token", lambda self: "aad-token")

    def _computes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from azureml.core.compute import AmlCompute, ComputeTarget

        service = self

        def compute_get(workspace, name):
            service.calls.append(("compute.get", name))
            return copy.deepcopy(service.computes.get(name))

        def compute_list(workspace):
            service.calls.append(("compute.list", None))
            return [ComputeTarget(workspace, name) for name in service.computes]

        def compute_create(workspace, name, provisioning_configuration):
            service.calls.append(("compute.create", name))
            service.compute_created.append((name, provisioning_configuration))
            cfg = provisioning_configuration
            scale = cfg.scale_settings
            service.computes[name] = service.compute_payload(
                name, cfg.vm_size, scale.minimum_node_count, scale.maximum_node_count
            )
            return ComputeTarget(workspace, name)

        monkeypatch.setattr(ComputeTarget, "_get", staticmethod(compute_get))
        monkeypatch.setattr(ComputeTarget, "list", staticmethod(compute_list))
        monkeypatch.setattr(ComputeTarget, "create", staticmethod(compute_create))
        monkeypatch.setattr(
            AmlCompute, "wait_for_completion",
            lambda self, show_output=False, **kw: service.calls.append(("compute.wait", self.name)),
        )  # fmt: skip

    def _data(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from azureml.core import Datastore
        from azureml.data._dataset import _DatasetRegistration
        from azureml.data._dataset_rest_helper import _dataset_to_saved_dataset_dto
        from azureml.data.abstract_dataset import AbstractDataset
        from azureml.data.azure_storage_datastore import AzureBlobDatastore
        from azureml.data.datastore_client import _DatastoreClient

        service = self

        def default_datastore(workspace):
            service.calls.append(("datastore.get", "workspaceblobstore"))
            return AzureBlobDatastore(
                workspace, "workspaceblobstore", "azureml-blobstore-0000", "wsstorage0000"
            )

        def datastore_get(workspace, datastore_name):
            service.calls.append(("datastore.get", datastore_name))
            return service.datastores[datastore_name]

        def ensure_saved(
            dataset, workspace
        ):  # the dataset service's "ensure saved": an id for the definition
            if not dataset._registration or not dataset._registration.saved_id:
                body = _dataset_to_saved_dataset_dto(dataset)
                service.saved_datasets.append(body)
                service.calls.append(("dataset.save", body))
                saved_id = f"saved-{len(service.saved_datasets)}"
                dataset._registration = _DatasetRegistration(workspace=workspace, saved_id=saved_id)
            return dataset._registration.saved_id

        monkeypatch.setattr(_DatastoreClient, "get_default", staticmethod(default_datastore))
        monkeypatch.setattr(Datastore, "get", staticmethod(datastore_get))
        monkeypatch.setattr(AbstractDataset, "_ensure_saved_internal", ensure_saved)

    def _environments(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from azureml._restclient.environment_client import EnvironmentClient
        from azureml.core import Environment

        service = self

        def register(env, workspace):
            registered = copy.deepcopy(env)
            registered.version = str(sum(e.name == env.name for e in service.registered) + 1)
            service.registered.append(registered)
            service.calls.append(("environment.register", env.name))
            return registered

        def environment_get(client, name, version=None):  # a curated one, else the service's 404
            service.calls.append(("environment.get", name))
            if name in service.curated_environments:
                return copy.deepcopy(service.curated_environments[name])
            raise Exception(
                "Error retrieving the environment definition. Code: 404\n: "
                + json.dumps({"error": {"code": "UserError", "message": f"Environment {name} NotFound"}})
            )

        monkeypatch.setattr(Environment, "register", register)
        monkeypatch.setattr(EnvironmentClient, "_get_environment_definition", environment_get)

    def _pipelines_service(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from azureml.pipeline.core._aeva_provider import _AevaModuleSnapshotUploader, _AevaWorkflowProvider

        service = self
        caller_class = _caller_class()

        def create_service_caller(workspace, experiment_name, service_endpoint=None):
            service.workspace_seen = workspace
            if service.caller is None:  # one service: every provider sees the same state
                service.caller = caller_class(service)
            return service.caller

        def upload(uploader, directory):
            service.snapshots.append(directory)
            service.calls.append(("snapshot.upload", directory))
            return f"snapshot-{len(service.snapshots)}"

        monkeypatch.setattr(
            _AevaWorkflowProvider, "create_service_caller", staticmethod(create_service_caller)
        )
        monkeypatch.setattr(_AevaModuleSnapshotUploader, "upload", upload)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def configured_fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> FakeAzureML:
    """A configured workspace (environment variables, service principal) and the fake service installed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AZUREML_SUBSCRIPTION_ID", SUB)
    monkeypatch.setenv("AZUREML_RESOURCE_GROUP", RG)
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", WS)
    monkeypatch.setenv("AZURE_TENANT_ID", "tenant-1")
    monkeypatch.setenv("AZURE_CLIENT_ID", "client-1")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-a-secret")
    service = FakeAzureML()
    service.install(monkeypatch)
    return service
