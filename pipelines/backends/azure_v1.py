"""The Azure ML SDK v1 backend: publish, schedules and ACI/AKS web services through azureml-core."""

from __future__ import annotations

from typing import Any

from pipelines.backends import DeployRequest, ScheduleRequest
from pipelines.errors import UserError


class AzureV1Backend:
    name = "azure"

    def __init__(self, compute: str = "aci") -> None:
        self.compute = compute  # the deploy target: aci or aks

    def publish(self, definition: Any, *, set_default: bool, schedule: bool) -> dict[str, Any]:
        from pipelines.azure import publish

        return publish.publish(definition, set_default=set_default, schedule=schedule)

    def schedules(self) -> AzureV1Schedules:
        return AzureV1Schedules()

    def deployments(self) -> AzureV1Deployments:
        return AzureV1Deployments(self.compute)


def _workspace() -> Any:
    from pipelines.azure.workspace import get_workspace

    return get_workspace()


class AzureV1Schedules:
    def list(self, include_inactive: bool) -> list[dict[str, Any]]:
        from pipelines.azure import schedules

        return schedules.list_schedules(_workspace(), active_only=not include_inactive)

    def create(self, request: ScheduleRequest) -> dict[str, Any]:
        from pipelines.azure import schedules
        from pipelines.settings import load_settings

        ws = _workspace()
        endpoint_id = None
        if request.endpoint:
            if request.version is not None:
                raise UserError("--version is local only",
                                hint="on Azure, schedule that version's --pipeline-id instead")  # fmt: skip
            from azureml.pipeline.core import PipelineEndpoint

            endpoint_id = PipelineEndpoint.get(workspace=ws, name=request.endpoint).id
        schedule = schedules.create(
            ws, request.name, experiment_name=request.experiment_name or load_settings().experiment_name,
            pipeline_id=request.pipeline_id, pipeline_endpoint_id=endpoint_id, recurrence=request.recurrence,
            datastore=request.datastore, path_on_datastore=request.path_on_datastore,
            polling_interval=request.polling_interval or 5, data_path_parameter_name=request.data_path_parameter_name,
            pipeline_parameters=request.parameters or None, description=request.description or None,
        )  # fmt: skip
        return schedules.describe(schedule)

    def set_status(self, schedule_id: str, action: str) -> dict[str, Any]:
        from pipelines.azure import schedules

        return {"disable": schedules.disable, "enable": schedules.enable, "delete": schedules.delete}[action](
            _workspace(), schedule_id
        )

    def line(self, schedule: dict[str, Any]) -> str:
        rec_text = schedule.get("recurrence") or {"datastore": schedule.get("datastore")}
        return f"{schedule['id']}  {schedule['name']}  {schedule['status']}  {rec_text}"

    def done(self, action: str, schedule: dict[str, Any]) -> str:
        line = f"{action}: Azure schedule {schedule['id']} ({schedule['name']}) is {schedule['status']}"
        return line + (f"\n{schedule['note']}" if schedule.get("note") else "")


class AzureV1Deployments:
    def __init__(self, compute: str) -> None:
        self.compute = compute

    def deploy(self, request: DeployRequest) -> dict[str, Any]:
        from pipelines.azure import deploy

        if request.max_replicas is not None and self.compute != "aks":
            raise UserError("--max-replicas applies to AKS", hint="ACI runs one container; use --target aks")
        if request.progress:
            request.progress(f"deploying {request.model_name} to {self.compute.upper()} as {request.name!r} "
                             "(this takes minutes)...")  # fmt: skip
        sizes = {k: v for k, v in (("cpu_cores", request.cpu_cores), ("memory_gb", request.memory_gb),
                                   ("max_replicas", request.max_replicas)) if v is not None}  # fmt: skip
        service = deploy.deploy(
            _workspace(), request.model_name, request.model_version, request.name, target=self.compute,
            aks_cluster=request.aks_cluster, token_auth=request.token_auth, overwrite=request.overwrite,
            scoring_timeout_ms=request.scoring_timeout_ms, cors_origins=request.cors_origins,
            environment_name=request.environment_name(), **sizes,
        )  # fmt: skip
        return deploy.describe(service)

    def list(self) -> list[dict[str, Any]]:
        from pipelines.azure import deploy

        return [deploy.describe(s) for s in deploy.list_services(_workspace())]

    def _service(self, name: str) -> Any:
        from pipelines.azure import deploy

        return deploy.get_service(_workspace(), name)

    def show(self, name: str) -> dict[str, Any]:
        from pipelines.azure import deploy

        return deploy.describe(self._service(name))

    def logs(self, name: str, tail: int, requests: bool) -> dict[str, Any]:
        if requests:
            raise UserError("--requests reads a local service's request log",
                            hint="on Azure, query the service's Application Insights")  # fmt: skip
        return {"lines": str(self._service(name).get_logs()).splitlines()[-tail:]}

    def keys(self, name: str, regenerate: str | None = None) -> dict[str, str]:
        from pipelines.azure import deploy

        service = self._service(name)
        return deploy.regenerate_key(service, regenerate) if regenerate else deploy.keys(service)

    def update(self, name: str, model: tuple[str, int | None] | None, app_insights: bool | None,
               timeout: float) -> dict[str, Any]:  # fmt: skip
        from pipelines.azure import deploy

        workspace = _workspace()
        service = deploy.get_service(workspace, name)
        if model:
            deploy.update_model(workspace, service, model[0], model[1])
        if app_insights is not None:
            deploy.enable_app_insights(service, bool(app_insights))
        info = deploy.describe(service)
        if model:
            info["model"] = f"{model[0]}:{model[1]}" if model[1] else f"{model[0]} (latest version)"
        return info

    def invoke(self, name: str, body: str, timeout: float) -> tuple[int, str]:
        import json

        try:
            answer = self._service(name).run(input_data=body)
        except Exception as exc:  # WebserviceException: the service answered an error, or was not reachable
            raise UserError(
                f"{name} answered an error: {exc}", hint=f"see amlops deploy logs --name {name}"
            ) from None
        return 200, answer if isinstance(answer, str) else json.dumps(answer)

    def stop(self, name: str) -> bool:
        raise UserError(
            "stop applies to local services", hint="on Azure, delete the service and deploy it again"
        )

    def start(self, name: str, timeout: float) -> dict[str, Any]:
        raise UserError(
            "start applies to local services", hint="on Azure, delete the service and deploy it again"
        )

    def delete(self, name: str) -> None:
        self._service(name).delete()
