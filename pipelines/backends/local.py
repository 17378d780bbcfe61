"""The local backend: the local workspace (publishing, schedules) and local deployments on this machine."""

from __future__ import annotations

from typing import Any

from pipelines.backends import DeployRequest, ScheduleRequest
from pipelines.errors import UserError


class LocalBackend:
    name = "local"

    def publish(self, definition: Any, *, set_default: bool, schedule: bool) -> dict[str, Any]:
        from pipelines.local.workspace import publishing, schedules

        result = publishing.publish(definition, set_default=set_default)
        if schedule and definition.schedule is not None:
            result["schedule"] = schedules.ensure_default_schedule(definition, result)
            result["lines"] = publishing.publish_lines(result)
        return result

    def schedules(self) -> LocalSchedules:
        return LocalSchedules()

    def deployments(self) -> LocalDeployments:
        return LocalDeployments()


class LocalSchedules:
    def list(self, include_inactive: bool) -> list[dict[str, Any]]:
        from pipelines.local.workspace import schedules

        return schedules.list_schedules(include_deleted=include_inactive)

    def create(self, request: ScheduleRequest) -> dict[str, Any]:
        from pipelines.local.workspace import schedules

        if request.datastore or request.path_on_datastore or request.data_path_parameter_name:
            raise UserError(
                "the local workspace has no datastores, so no schedule can watch one",
                hint="a datastore trigger needs --target azure; locally, use a recurrence (--frequency ...)",
            )
        return schedules.create(
            request.name, request.recurrence, endpoint=request.endpoint, version=request.version,
            pipeline_id=request.pipeline_id, experiment_name=request.experiment_name,
            parameters=request.parameters, description=request.description,
        )  # fmt: skip

    def set_status(self, schedule_id: str, action: str) -> dict[str, Any]:
        from pipelines.local.workspace import schedules

        return schedules.set_status(
            schedule_id, {"disable": "Disabled", "enable": "Active", "delete": "Deleted"}[action]
        )

    def line(self, schedule: dict[str, Any]) -> str:
        from pipelines.local.workspace import schedules

        return schedules.status_line(schedule)

    def done(self, action: str, schedule: dict[str, Any]) -> str:
        verb = {"create": "created", "disable": "disabled", "enable": "enabled", "delete": "deleted"}[action]
        return f"{verb} schedule {schedule['id']}\n{self.line(schedule)}"


class LocalDeployments:
    def deploy(self, request: DeployRequest) -> dict[str, Any]:
        from pipelines.local.serving import deployments

        for flag, value in (("--cpu-cores", request.cpu_cores), ("--memory-gb", request.memory_gb),
                            ("--max-replicas", request.max_replicas)):  # fmt: skip
            if value is not None:
                raise UserError(
                    f"{flag} applies to ACI and AKS", hint="locally, size the service with --workers"
                )
        if request.environment:  # the deploy_environment setting is Azure's; the option given here is refused
            raise UserError("--environment names an Azure ML Environment",
                            hint="locally, score.py runs in this project's environment; leave --environment out")  # fmt: skip
        service = deployments.deploy(
            request.model_name,
            request.model_version,
            request.name,
            workers=request.workers,
            port=request.port,
            entry_script=request.entry_script,
            max_body_bytes=request.max_body_bytes,
            app_insights=request.app_insights,
            scoring_timeout_ms=request.scoring_timeout_ms,
            cors_origins=request.cors_origins,
            overwrite=request.overwrite,
            timeout=request.timeout,
            progress=request.progress,
        )
        return service.describe()

    def list(self) -> list[dict[str, Any]]:
        from pipelines.local.serving import deployments

        return [s.describe() for s in deployments.list_services()]

    def show(self, name: str) -> dict[str, Any]:
        from pipelines.local.serving import deployments

        return deployments.load(name).describe()

    def logs(self, name: str, tail: int, requests: bool) -> dict[str, Any]:
        from pipelines.local.serving import deployments

        service = deployments.load(name)
        log = service.folder / ("requests.log" if requests else "server.log")
        if requests and not service.app_insights and not log.exists():
            raise UserError("request logging is off for this service",
                            hint=f"turn it on: python -m pipelines.deploy update --name {name} --enable-app-insights")  # fmt: skip
        return {"log": str(log), "lines": deployments.tail_lines(log, tail)}

    def keys(self, name: str, regenerate: str | None = None) -> dict[str, str]:
        from pipelines.local.serving import deployments

        return deployments.regenerate_key(name, regenerate) if regenerate else deployments.keys(name)

    def update(self, name: str, model: tuple[str, int | None] | None, app_insights: bool | None,
               timeout: float) -> dict[str, Any]:  # fmt: skip
        from pipelines.local.serving import deployments

        deployments.load(name)  # an unknown service is the first thing to say
        model_name, version = model or (None, None)
        service = deployments.update(
            name, app_insights=app_insights, model_name=model_name, model_version=version, timeout=timeout
        )
        return service.describe()

    def invoke(self, name: str, body: str, timeout: float) -> tuple[int, str]:
        import requests

        from clients.endpoint import check_uri, service_endpoint

        uri, key = service_endpoint(name)
        check_uri(uri)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        try:
            resp = requests.post(uri, data=body, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            raise UserError(f"cannot reach {name} at {uri}: {exc}",
                            hint=f"is it running? amlops deploy show --name {name}") from None  # fmt: skip
        return resp.status_code, resp.text

    def stop(self, name: str) -> bool:
        from pipelines.local.serving import deployments

        return deployments.stop(name)

    def start(self, name: str, timeout: float) -> dict[str, Any]:
        from pipelines.local.serving import deployments

        return deployments.start(name, timeout=timeout).describe()

    def delete(self, name: str) -> None:
        from pipelines.local.serving import deployments

        deployments.delete(name)
