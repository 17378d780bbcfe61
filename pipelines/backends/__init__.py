"""The backend seam: one small protocol that every engine a pipeline can be sent to implements.

A CLI picks a backend with ``load_backend(target)`` and calls the protocol; it never branches on the
target. Adding a backend is one module implementing ``Backend`` and one row in ``BACKENDS``.

    local     this machine: the local engine, the local workspace service and local deployments
    azure     Azure ML through SDK v1 (azureml-core / azureml-pipeline-*), ACI or AKS web services
    azure-v2  Azure ML through SDK v2 (azure-ai-ml): pipeline jobs, batch and online endpoints
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipelines.errors import UserError

# target -> (module, class, keyword arguments); the deploy targets aci/aks are the SDK v1 backend's
BACKENDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "local": ("pipelines.backends.local", "LocalBackend", {}),
    "azure": ("pipelines.backends.azure_v1", "AzureV1Backend", {}),
    "aci": ("pipelines.backends.azure_v1", "AzureV1Backend", {"compute": "aci"}),
    "aks": ("pipelines.backends.azure_v1", "AzureV1Backend", {"compute": "aks"}),
    "azure-v2": ("pipelines.backends.azure_v2", "AzureV2Backend", {}),
}


@dataclass
class DeployRequest:
    """Everything ``deploy`` may be asked; each backend uses the options that apply to it."""

    model_name: str
    model_version: int | None
    name: str
    overwrite: bool = False
    scoring_timeout_ms: int | None = None
    cors_origins: str | None = None
    app_insights: bool = True
    timeout: float = 180.0
    # local
    workers: int | None = None
    port: int | None = None
    entry_script: str | None = None
    max_body_bytes: int | None = None
    # Azure
    cpu_cores: float | None = None
    memory_gb: float | None = None
    max_replicas: int | None = None
    aks_cluster: str = ""
    token_auth: bool = False
    instance_type: str | None = (
        None  # azure-v2: a managed VM size (default Standard_DS3_v2) or a Kubernetes instance type
    )
    instance_count: int = 1  # azure-v2
    environment: str | None = None  # --environment: a workspace or curated Environment for score.py
    progress: Any = None  # a callable taking one message, or None

    def environment_name(self) -> str:
        """``--environment``, else the ``deploy_environment`` setting; empty: ``environments/inference.yml``."""
        if self.environment is not None:
            return self.environment
        from pipelines.settings import load_settings

        return load_settings().deploy_environment


@dataclass
class ScheduleRequest:
    """A schedule to create: a recurrence (SDK ``ScheduleRecurrence``) or, on Azure, a datastore trigger."""

    name: str
    recurrence: Any = None
    endpoint: str | None = None
    version: int | None = None
    pipeline_id: str | None = None
    experiment_name: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    datastore: str | None = None
    path_on_datastore: str | None = None
    polling_interval: int | None = None
    data_path_parameter_name: str | None = None


class Deployments(Protocol):
    """Real-time services: each method returns plain data the CLI prints or dumps as JSON."""

    def deploy(self, request: DeployRequest) -> dict[str, Any]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def show(self, name: str) -> dict[str, Any]: ...
    def logs(self, name: str, tail: int, requests: bool) -> dict[str, Any]: ...
    def keys(self, name: str, regenerate: str | None = None) -> dict[str, str]: ...
    def update(self, name: str, model: tuple[str, int | None] | None, app_insights: bool | None,
               timeout: float) -> dict[str, Any]: ...  # fmt: skip
    def invoke(self, name: str, body: str, timeout: float) -> tuple[int, str]: ...  # (HTTP status, answer)
    def stop(self, name: str) -> bool: ...
    def start(self, name: str, timeout: float) -> dict[str, Any]: ...
    def delete(self, name: str) -> None: ...


class Schedules(Protocol):
    def list(self, include_inactive: bool) -> list[dict[str, Any]]: ...
    def create(self, request: ScheduleRequest) -> dict[str, Any]: ...
    def set_status(self, schedule_id: str, action: str) -> dict[str, Any]: ...  # disable | enable | delete
    def line(self, schedule: dict[str, Any]) -> str: ...  # one schedule, as ``list`` prints it
    def done(self, action: str, schedule: dict[str, Any]) -> str: ...  # what create/enable/... did


class Backend(Protocol):
    """What a target can do with a pipeline definition and a registered model."""

    name: str

    def publish(self, definition: Any, *, set_default: bool, schedule: bool) -> dict[str, Any]:
        """Publish the pipeline as a new version of its endpoint; ``lines`` in the result say what was done."""
        ...

    def schedules(self) -> Schedules: ...

    def deployments(self) -> Deployments: ...

    # backends that run pipelines remotely also have
    # submit(definition, parameters) -> {"run_id", "status", "url"}: one pipeline run now (azure-v2)


def targets(kind: str = "pipeline") -> tuple[str, ...]:
    """The names ``--target`` takes: pipeline targets, or deploy targets (local and compute kinds)."""
    if kind == "deploy":
        return tuple(name for name in BACKENDS if name != "azure")
    return tuple(name for name in BACKENDS if name not in ("aci", "aks"))


def default_target(kind: str = "pipeline") -> str:
    """``azure`` (``aci`` for deployments) when an Azure ML workspace is configured, else ``local``."""
    from pipelines.azure.workspace import is_configured

    if not is_configured():
        return "local"
    return "aci" if kind == "deploy" else "azure"


def load_backend(target: str | None, kind: str = "pipeline") -> Backend:
    """The backend for ``target`` (``None`` or ``auto``: the default for this machine)."""
    if target in (None, "", "auto"):
        target = default_target(kind)
    if target not in BACKENDS:
        raise UserError(f"unknown target {target!r}", hint="use one of " + ", ".join(targets(kind)))
    module, cls, kwargs = BACKENDS[target]
    return getattr(importlib.import_module(module), cls)(**kwargs)
