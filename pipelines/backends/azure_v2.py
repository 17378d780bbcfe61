"""The Azure ML SDK v2 backend (azure-ai-ml): pipeline jobs, batch endpoints, JobSchedules, online endpoints.

Everything it sends is what ``export --sdk v2`` writes (the same translation, verified the same way),
loaded with azure-ai-ml's loaders and sent with an ``MLClient`` that authenticates with azure-identity's
``DefaultAzureCredential``:

    publish    pipeline component (a new version) + batch endpoint + PipelineComponentBatchDeployment per
               version; the first version, or --set-default, becomes the endpoint's default deployment; a
               failed publish takes back what it created (``azure_v2_publish``)
    schedules  JobSchedule with a RecurrenceTrigger whose start time is the next minute (never runs at once)
    deploy     ManagedOnlineEndpoint(auth_mode="key") or KubernetesOnlineEndpoint + a deployment serving
               scoring/score.py; keys, regenerate, update (another model version), logs, delete
    submit     a pipeline job (``train run`` / ``batch_score run`` with ``--target azure-v2``)
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.backends import DeployRequest, ScheduleRequest
from pipelines.backends.azure_v2_publish import Publisher, PublishFailed, exported, value_of
from pipelines.errors import UserError


def ml_client(**kwargs: Any) -> Any:
    """An MLClient for the configured workspace (config.json or AZUREML_* variables), DefaultAzureCredential."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    from pipelines.azure.workspace import ENV_KEYS, workspace_details
    from pipelines.v2.verify import quiet_sdk

    quiet_sdk()
    details = workspace_details()
    if details is None:
        raise UserError(
            "no Azure ML workspace is configured", hint="set " + ", ".join(ENV_KEYS) + " or add config.json"
        )
    credential = kwargs.pop("credential", None) or DefaultAzureCredential()
    kwargs.setdefault("show_progress", False)  # upload progress bars would corrupt --json output
    return MLClient(credential, details["subscription_id"], details["resource_group"], details["workspace_name"],
                    **kwargs)  # fmt: skip


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def service_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """What the workspace or azure-ai-ml refuses becomes one line (a UserError), not a traceback."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from azure.ai.ml.exceptions import MlException
        from azure.core.exceptions import AzureError

        try:
            return method(*args, **kwargs)
        except (MlException, AzureError) as exc:
            raise UserError(
                f"Azure ML: {_first_line(exc)}", hint="see the workspace in Azure ML studio"
            ) from None

    return wrapper


def _first_line(exc: Exception) -> str:
    """The line that says what went wrong: azure-ai-ml's ``(x) ...`` detail, else the first line, no colours."""
    lines = [line.strip() for line in ANSI.sub("", str(exc)).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("(x)")), None)
    return (detail or (lines[0] if lines else type(exc).__name__)).removeprefix("(x)").strip()


class AzureV2Backend:
    name = "azure-v2"

    def __init__(self, compute: str = "managed", client: Any = None) -> None:
        self.compute = compute
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = ml_client()
        return self._client

    @service_errors
    def publish(self, definition: Any, *, set_default: bool, schedule: bool) -> dict[str, Any]:
        """Register, deploy and schedule (``azure_v2_publish``); when a step fails, what this publish created is
        taken back (never what existed before) and the failure is one line saying what was undone."""
        self.client  # noqa: B018 - a missing workspace fails here, before any work
        notes = self._model_notes(definition)
        try:
            published = Publisher(self, describe=_first_line).run(
                definition, set_default=set_default, schedule=schedule and definition.schedule is not None
            )
        except PublishFailed as failed:
            cause = failed.cause
            own = isinstance(cause, UserError)
            message = cause.message if own else f"Azure ML: {_first_line(cause)}"
            undone = "undone: " + (", ".join(failed.undone) or "nothing was left to undo")
            raise UserError(
                message, hint=f"{cause.hint}; {undone}" if own and cause.hint else undone
            ) from None
        lines = [
            *published["lines"],
            *notes,
            "invoke it with a Microsoft Entra token (batch endpoints have no keys)",
        ]
        return {"target": self.name, **published, "lines": lines}

    def _model_notes(self, definition: Any) -> list[str]:
        """A batch scoring pipeline looks its model up when it runs: say so if none is registered yet (publishing
        does not need it)."""
        if definition.module != "pipelines.batch_score":
            return []
        name = definition.settings.model_name
        if self._model_registered(name, None):
            return []
        return [
            f"model {name} has no version in the workspace yet: scheduled and invoked runs fail until one is registered"
        ]

    def _model_registered(self, name: str, version: int | None) -> bool:
        from azure.ai.ml.exceptions import MlException
        from azure.core.exceptions import ResourceNotFoundError

        try:
            if version:
                self.client.models.get(name, version=str(version))
            else:
                self.client.models.get(name, label="latest")
        except (ResourceNotFoundError, MlException):
            return False
        return True

    def _create_schedule(self, job_schedule: Any) -> dict[str, Any]:
        created = self.client.schedules.begin_create_or_update(job_schedule).result()
        return _schedule_row(created)

    @service_errors
    def submit(self, definition: Any, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Submit the pipeline as a v2 pipeline job; its id and studio URL. A batch scoring job's model (the
        ``model_name``/``model_version`` inputs, looked up when it runs) must be registered now."""
        from pipelines.v2 import verify

        client = self.client  # a missing workspace fails here, before any work
        parameters = parameters or {}
        if definition.module == "pipelines.batch_score":
            name = parameters.get("model_name", definition.settings.model_name)
            version = parameters.get("model_version")
            if not self._model_registered(name, version):
                which = f"version {version} of model {name}" if version else f"model {name}"
                raise UserError(f"{which} is not registered in the workspace",
                                hint="register it first, or pass --model NAME[:VERSION]")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="amlops-v2-") as tmp:
            folder = Path(tmp) / "v2"
            exported(definition, folder)
            job = verify.load(folder / f"{definition.name}.pipeline.yml", "job")
            _set_inputs(job, parameters)
            submitted = client.jobs.create_or_update(job, experiment_name=definition.experiment_name)
        status = getattr(submitted.status, "value", submitted.status)  # JobStatus is an enum, print its value
        return {"run_id": submitted.name, "status": str(status), "url": submitted.studio_url}

    def schedules(self) -> AzureV2Schedules:
        return AzureV2Schedules(self)

    def deployments(self) -> AzureV2Deployments:
        return AzureV2Deployments(self)


DATA_TYPES = ("uri_file", "uri_folder", "mltable", "mlflow_model", "custom_model")


def _job_inputs(component: Any, parameters: dict[str, str]) -> dict[str, Any]:
    """``--param`` values as the component's inputs: data inputs as ``Input(type, path)``; every data input
    without a default needs one (the scheduled job would otherwise fail when it fires)."""
    from azure.ai.ml import Input

    inputs: dict[str, Any] = {}
    for name, value in parameters.items():
        if name not in component.inputs:
            raise UserError(
                f"unknown pipeline input {name!r}", hint="use one of " + ", ".join(component.inputs)
            )
        kind = component.inputs[name].type
        inputs[name] = Input(type=kind, path=value) if kind in DATA_TYPES else value
    for name, meta in component.inputs.items():
        if meta.type in DATA_TYPES and name not in inputs and not meta.optional and meta.default is None:
            raise UserError(f"the pipeline's {meta.type} input {name!r} has no value",
                            hint=f"pass --param {name}=URL (a datastore or https URL, or azureml:NAME:VERSION)")  # fmt: skip
    return inputs


def _set_inputs(job: Any, parameters: dict[str, Any]) -> None:
    """``parameters`` on the pipeline job; a data input's value is its path (a local file is uploaded to the
    workspace's default datastore by azure-ai-ml). A local file left as the translation's placeholder is
    refused: Azure cannot reach it."""
    from azure.ai.ml import Input

    from pipelines.definitions import LOCAL_PLACEHOLDER

    for key, value in job.inputs.items():
        path = str(getattr(value_of(value), "path", "") or "")
        if path.startswith(LOCAL_PLACEHOLDER) and key not in parameters:
            raise UserError(f"input {key} is a local file Azure cannot reach: {path.removeprefix(LOCAL_PLACEHOLDER)}",
                            hint="pass --data PATH to an existing file, an https URL or a dataset name")  # fmt: skip
    for key, value in parameters.items():
        if key not in job.inputs:
            raise UserError(f"unknown pipeline input {key!r}", hint="use one of " + ", ".join(job.inputs))
        current = value_of(job.inputs[key])
        setattr(
            job.inputs,
            key,
            Input(type=current.type, path=str(value)) if isinstance(current, Input) else value,
        )


def _schedule_row(schedule: Any) -> dict[str, Any]:
    trigger = schedule.trigger
    return {
        "id": schedule.name,
        "name": schedule.name,
        "status": "Active" if schedule.is_enabled else "Disabled",
        "frequency": getattr(trigger, "frequency", None),
        "interval": getattr(trigger, "interval", None),
        "start_time": str(getattr(trigger, "start_time", "") or ""),
        "time_zone": str(getattr(trigger, "time_zone", "") or ""),
    }


class AzureV2Schedules:
    def __init__(self, backend: AzureV2Backend) -> None:
        self.backend = backend

    @service_errors
    def list(self, include_inactive: bool) -> list[dict[str, Any]]:
        from azure.ai.ml.constants import ScheduleListViewType

        view = ScheduleListViewType.ALL if include_inactive else ScheduleListViewType.ENABLED_ONLY
        return [_schedule_row(s) for s in self.backend.client.schedules.list(list_view_type=view)]

    @service_errors
    def create(self, request: ScheduleRequest) -> dict[str, Any]:
        """A JobSchedule for a published version: it invokes the endpoint's pipeline component as a job."""
        from azure.ai.ml.entities import JobSchedule, PipelineJob, RecurrencePattern, RecurrenceTrigger

        from pipelines.settings import load_settings
        from pipelines.v2.translate import FREQUENCIES

        if request.datastore:
            raise UserError(
                "a datastore trigger has no SDK v2 schedule equivalent", hint="use --frequency (a recurrence)"
            )
        rec = request.recurrence
        start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        pattern = None
        if rec.hours or rec.minutes or rec.week_days:
            pattern = RecurrencePattern(hours=rec.hours or [0], minutes=rec.minutes or [0],
                                        week_days=[d.lower() for d in rec.week_days] if rec.week_days else None)  # fmt: skip
        zone = getattr(rec, "time_zone", None)
        trigger = RecurrenceTrigger(
            frequency=FREQUENCIES[rec.frequency], interval=rec.interval, schedule=pattern,
            start_time=rec.start_time or start.strftime("%Y-%m-%dT%H:%M:%S"), time_zone=getattr(zone, "value", "UTC"),
        )  # fmt: skip
        from pipelines.v2.translate import component_name

        if not request.endpoint:
            raise UserError("a v2 schedule runs a published pipeline", hint="name it with --endpoint NAME")
        version = str(request.version) if request.version is not None else None
        component = self.backend.client.components.get(
            component_name(request.endpoint, "pipeline"), version=version, label=None if version else "latest"
        )
        job = PipelineJob(
            component=component, inputs=_job_inputs(component, request.parameters),
            settings={"default_compute": load_settings().compute_name}, experiment_name=request.experiment_name,
        )  # fmt: skip
        schedule = JobSchedule(
            name=request.name, trigger=trigger, create_job=job, description=request.description
        )
        return self.backend._create_schedule(schedule)

    @service_errors
    def set_status(self, schedule_id: str, action: str) -> dict[str, Any]:
        ops = self.backend.client.schedules
        if action == "delete":
            ops.begin_delete(schedule_id).result()
            return {"id": schedule_id, "name": schedule_id, "status": "Deleted"}
        poller = ops.begin_disable(schedule_id) if action == "disable" else ops.begin_enable(schedule_id)
        return _schedule_row(poller.result())

    def line(self, schedule: dict[str, Any]) -> str:
        return (f"{schedule['name']}  {schedule['status']}  every {schedule['interval']} {schedule['frequency']}"
                f"  from {schedule['start_time']} {schedule['time_zone']}")  # fmt: skip

    def done(self, action: str, schedule: dict[str, Any]) -> str:
        return f"{action}d schedule {schedule['name']} ({schedule['status']})"


def _kind(endpoint: Any) -> str:
    return "Kubernetes" if "Kubernetes" in type(endpoint).__name__ else "managed"


class AzureV2Deployments:
    """Online endpoints with key authentication: one endpoint per service, its deployment named ``blue``."""

    def __init__(self, backend: AzureV2Backend) -> None:
        self.backend = backend

    @property
    def ops(self) -> Any:
        return self.backend.client.online_endpoints

    @service_errors
    def deploy(self, request: DeployRequest) -> dict[str, Any]:
        from pipelines.definitions import ENVIRONMENTS_DIR, SCORING_DIR
        from pipelines.v2 import verify
        from pipelines.v2.export import write_verified
        from pipelines.v2.online import OnlineSpec, online_translation

        self.backend.client  # noqa: B018 - a missing workspace fails here, before any work
        with tempfile.TemporaryDirectory(prefix="amlops-v2-") as tmp:
            folder = Path(tmp) / "online"
            spec = OnlineSpec(
                request.name, request.model_name, request.model_version, SCORING_DIR, ENVIRONMENTS_DIR, folder,
                aks_cluster=request.aks_cluster, scoring_timeout_ms=request.scoring_timeout_ms,
                app_insights=request.app_insights, cors_origins=request.cors_origins or "",
                cpu_cores=request.cpu_cores, memory_gb=request.memory_gb, instance_type=request.instance_type,
                instance_count=request.instance_count, environment=request.environment_name(),
            )  # fmt: skip
            write_verified(folder, online_translation(spec))
            endpoint = verify.load(folder / f"{request.name}.endpoint.yml", "online_endpoint")
            deployment = verify.load(folder / f"{request.name}.deployment.yml", "online_deployment")
            existing = self._existing(request, endpoint)
            if existing is not None:  # updated in place: what it serves keeps its traffic meanwhile
                endpoint.traffic = dict(existing.traffic or {})
            verb = "updating" if existing is not None else "creating"
            self._progress(request, f"{verb} online endpoint {request.name} (auth_mode key)")
            self.ops.begin_create_or_update(endpoint).result()
            self._progress(request, f"{verb} deployment {deployment.name} of {deployment.model}")
            self.backend.client.online_deployments.begin_create_or_update(deployment).result()
            endpoint.traffic = {deployment.name: 100}
            self.ops.begin_create_or_update(endpoint).result()
        return self.show(request.name)

    def _existing(self, request: DeployRequest, endpoint: Any) -> Any:
        """The endpoint of that name if there is one (None if not); refused without --overwrite, as v1 and
        local deploy refuse an existing service, and refused if it is of the other kind (managed/Kubernetes)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            existing = self.ops.get(request.name)
        except ResourceNotFoundError:
            return None
        if not request.overwrite:
            raise UserError(f"online endpoint {request.name!r} already exists",
                            hint="pass --overwrite to update it in place, or delete it first")  # fmt: skip
        if type(existing).__name__ != type(endpoint).__name__:
            raise UserError(
                f"online endpoint {request.name!r} is a {_kind(existing)} endpoint, not a {_kind(endpoint)} one",
                hint=f"delete it first (amlops deploy delete --target azure-v2 --name {request.name}), or deploy"
                " under another --name",
            )
        return existing

    @staticmethod
    def _progress(request: DeployRequest, message: str) -> None:
        if request.progress is not None:
            request.progress(message)

    @service_errors
    def list(self) -> list[dict[str, Any]]:
        return [self._row(e) for e in self.ops.list()]

    @service_errors
    def show(self, name: str) -> dict[str, Any]:
        return self._row(self.ops.get(name))

    @staticmethod
    def _row(endpoint: Any) -> dict[str, Any]:
        return {"name": endpoint.name, "state": endpoint.provisioning_state, "auth_mode": endpoint.auth_mode,
                "scoring_uri": endpoint.scoring_uri, "swagger_uri": endpoint.openapi_uri,
                "traffic": dict(endpoint.traffic or {}), "target": "azure-v2"}  # fmt: skip

    @service_errors
    def logs(self, name: str, tail: int, requests: bool) -> dict[str, Any]:
        """The last ``tail`` lines of the inference server's container log (the service's ``getLogs``)."""
        from azure.ai.ml._restclient.arm_ml_service.models import DeploymentLogsRequest

        if requests:
            raise UserError("--requests reads a local service's request log",
                            hint="on Azure, query the endpoint's Application Insights")  # fmt: skip
        ops = self.backend.client.online_deployments
        # azure-ai-ml's get_logs prints "None" for an empty log; the service answers {"content": null} then
        answer = ops._online_deployment.get_logs(
            resource_group_name=ops._resource_group_name, workspace_name=ops._workspace_name,
            endpoint_name=name, deployment_name="blue", body=DeploymentLogsRequest(tail=tail), **ops._init_kwargs,
        )  # fmt: skip
        return {"lines": (answer.content or "").splitlines()[-tail:] if tail else [], "log": None}

    @service_errors
    def keys(self, name: str, regenerate: str | None = None) -> dict[str, str]:
        if regenerate:
            self._regenerate(name, regenerate)
        keys = self.ops.get_keys(name)
        return {"primary": keys.primary_key, "secondary": keys.secondary_key}

    def _regenerate(self, name: str, which: str) -> None:
        """Ask the service for a new key of that type.

        azure-ai-ml 1.35.2's ``begin_regenerate_keys`` sends the key's current value as ``keyValue``, which the
        REST API documents as "the value the key is set to"; this request names only the key type, so the
        service generates the new value (tests/backends/test_azure_v2.py asserts the body).
        """
        from azure.ai.ml._restclient.arm_ml_service.models import KeyType, RegenerateEndpointKeysRequest

        ops = self.ops
        body = RegenerateEndpointKeysRequest(
            key_type=KeyType.PRIMARY if which == "primary" else KeyType.SECONDARY
        )
        ops._online_operation.begin_regenerate_keys(
            resource_group_name=ops._resource_group_name, workspace_name=ops._workspace_name,
            endpoint_name=name, body=body, **ops._init_kwargs,
        ).result()  # fmt: skip

    @service_errors
    def update(self, name: str, model: tuple[str, int | None] | None, app_insights: bool | None,
               timeout: float) -> dict[str, Any]:  # fmt: skip
        deployment = self.backend.client.online_deployments.get(name="blue", endpoint_name=name)
        if model is not None:
            model_name, version = model
            if version is None:
                version = self.backend.client.models.get(model_name, label="latest").version
            deployment.model = f"azureml:{model_name}:{version}"
        if app_insights is not None:
            deployment.app_insights_enabled = app_insights
        self.backend.client.online_deployments.begin_create_or_update(deployment).result()
        return {
            **self.show(name),
            "model": str(deployment.model),
            "app_insights": deployment.app_insights_enabled,
        }

    @service_errors
    def invoke(self, name: str, body: str, timeout: float) -> tuple[int, str]:
        """POST the body to the endpoint's scoring URI with its primary key, once, through azure-ai-ml's own
        HTTP pipeline (its transport and proxy settings); the answer's status and text, whatever the status.

        azure-ai-ml's ``invoke`` is not used: it raises on any status but 200, re-encodes the body, retries
        a 500 (a failing ``run()``) and keeps the key in a module-level header dict."""
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        endpoint = self.ops.get(name)
        key = self.ops.get_keys(name).primary_key
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        try:
            resp = self.ops._requests_pipeline.post(
                endpoint.scoring_uri, content=body.encode(), headers=headers, retry_total=0,
                connection_timeout=timeout, read_timeout=timeout,
            )  # fmt: skip
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise UserError(f"cannot reach {name} at {endpoint.scoring_uri}: {_first_line(exc)}",
                            hint=f"see amlops deploy show --target azure-v2 --name {name}") from None  # fmt: skip
        return resp.status_code, resp.text()

    def stop(self, name: str) -> bool:
        raise UserError(
            "an online endpoint cannot be stopped", hint="delete it, or update it to another model"
        )

    def start(self, name: str, timeout: float) -> dict[str, Any]:
        raise UserError("an online endpoint cannot be stopped or started", hint="deploy it again")

    @service_errors
    def delete(self, name: str) -> None:
        self.ops.begin_delete(name=name).result()
