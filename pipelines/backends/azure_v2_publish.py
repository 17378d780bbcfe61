"""``publish --target azure-v2``: a pipeline component version, the batch endpoint and a deployment of that
version, the default switch and the schedule. When a step fails, what this publish created is taken back,
newest first: the component version archived (versions are never reused), a deployment deleted, the previous
default restored, an endpoint or schedule this publish created deleted. Nothing that existed before is touched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.backends.undo import Undo
from pipelines.errors import UserError


class PublishFailed(Exception):
    """A publish step failed: the cause and what was taken back (one phrase each)."""

    def __init__(self, cause: Exception, undone: list[str]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.undone = undone


def exported(definition: Any, folder: Path) -> dict[str, Any]:
    """The definition exported (and verified) into ``folder``; the export result. A batch scoring pipeline's
    entry script looks its model up in the MLflow registry when it runs."""
    from pipelines.v2.export import export_definition

    return export_definition(definition, folder, model_lookup=definition.module == "pipelines.batch_score")


def value_of(value: Any) -> Any:
    """A pipeline job input's value (an ``Input`` for data), whether the SDK wrapped it or not."""
    return value.result() if hasattr(value, "result") else value


def _refusals() -> tuple[type[Exception], ...]:
    """What the workspace, azure-ai-ml or the project refuse (one line), as opposed to a bug (a traceback)."""
    from azure.ai.ml.exceptions import MlException
    from azure.core.exceptions import AzureError

    return (MlException, AzureError, UserError)


class Publisher:
    """One publish through ``backend.client`` (an MLClient); ``describe`` makes an exception one line."""

    def __init__(self, backend: Any, describe: Callable[[Exception], str]) -> None:
        self.backend = backend
        self.client = backend.client
        self.describe = describe
        self.undo = Undo()

    def run(self, definition: Any, *, set_default: bool, schedule: bool) -> dict[str, Any]:
        """Publish; the endpoint, deployment, differences and lines. PublishFailed when a step is refused after
        something was created (it has been taken back); a bug is raised as it is, after the same undo."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with tempfile.TemporaryDirectory(prefix="amlops-v2-") as tmp:
                folder = Path(tmp) / "v2"
                result = exported(definition, folder)
                published = self._steps(definition, folder, set_default, schedule)
        except Exception as exc:
            if not self.undo.steps:
                raise
            undone = self.undo.run(gone=(ResourceNotFoundError,), describe=self.describe)
            if not isinstance(exc, _refusals()):
                raise
            raise PublishFailed(exc, undone) from exc
        return {**published, "differences": result["differences"]}

    def _steps(self, definition: Any, folder: Path, set_default: bool, schedule: bool) -> dict[str, Any]:
        """Component version, endpoint, deployment, default, schedule; each records how to take back what it
        creates before it asks for it (a refused request may still have created it)."""
        from pipelines.v2 import verify

        name = definition.name
        registered = self._register_component(folder / f"{name}.component.yml")
        endpoint = verify.load(folder / f"{name}.batch-endpoint.yml", "batch_endpoint")
        existing = self._batch_endpoint(endpoint.name)
        if existing is None:
            self.undo.add(
                "deleted", f"batch endpoint {endpoint.name}", lambda: self._delete_endpoint(endpoint.name)
            )
            endpoint = self.client.batch_endpoints.begin_create_or_update(endpoint).result()
        else:
            endpoint = existing
        deployment = self._deploy(registered, endpoint.name, definition, new_endpoint=existing is None)
        lines = [f"registered pipeline component {registered.name} version {registered.version}",
                 f"batch endpoint {endpoint.name}: deployment {deployment}"]  # fmt: skip
        current = getattr(getattr(endpoint, "defaults", None), "deployment_name", None)
        if set_default or not current:
            if existing is not None:
                self.undo.add("restored", f"default deployment {current or '(none)'} of {endpoint.name}",
                              lambda: self._set_default(endpoint.name, current))  # fmt: skip
            endpoint.defaults.deployment_name = deployment
            self.client.batch_endpoints.begin_create_or_update(endpoint).result()
            lines.append(f"default deployment: {deployment}")
        if schedule:
            job_schedule = on_component(
                verify.load(folder / f"{name}.schedule.yml", "schedule"), registered, folder
            )
            if not self._schedule_exists(job_schedule.name):
                self.undo.add("deleted", f"schedule {job_schedule.name}",
                              lambda: self._delete_schedule(job_schedule.name))  # fmt: skip
            created = self.backend._create_schedule(job_schedule)
            lines.append(f"schedule {created['name']}: first run at or after {created['start_time']}")
        return {"endpoint": endpoint.name, "deployment": deployment, "lines": lines}

    def _register_component(self, path: Path) -> Any:
        """The pipeline component as a new version. Its steps' anonymous components and code are content-addressed
        and may be shared with versions published before: an undo leaves them."""
        from pipelines.v2 import verify

        component = verify.load(path, "component")
        component.version = self._next_version(component.name)
        self.undo.add("archived", f"component {component.name} version {component.version}",
                      lambda: self.client.components.archive(name=component.name, version=component.version))  # fmt: skip
        return self.client.components.create_or_update(component)

    def _next_version(self, component: str) -> str:
        """One more than the highest numeric version, archived ones included (a version is never reused)."""
        from azure.ai.ml.constants import ListViewType

        listed = self.client.components.list(name=component, list_view_type=ListViewType.ALL)
        return str(max((int(c.version) for c in listed if str(c.version).isdigit()), default=0) + 1)

    def _deploy(self, registered: Any, endpoint: str, definition: Any, *, new_endpoint: bool) -> str:
        """A PipelineComponentBatchDeployment of the registered version, named after it; its name."""
        from azure.ai.ml.entities import PipelineComponentBatchDeployment

        name = f"v{registered.version}"
        if not new_endpoint:
            if self._exists(lambda: self.client.batch_deployments.get(name=name, endpoint_name=endpoint)):
                raise UserError(f"batch endpoint {endpoint} already has a deployment {name}, made by other means",
                                hint="delete or rename that deployment, then publish again")  # fmt: skip
            self.undo.add(
                "deleted", f"deployment {name} of {endpoint}", lambda: self._delete_deployment(name, endpoint)
            )
        deployment = PipelineComponentBatchDeployment(
            name=name, endpoint_name=endpoint, component=registered,
            settings={"default_compute": definition.settings.compute_name, "continue_on_step_failure": False},
        )  # fmt: skip
        self.client.batch_deployments.begin_create_or_update(deployment).result()
        return name

    def _batch_endpoint(self, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.client.batch_endpoints.get(name)
        except ResourceNotFoundError:
            return None

    def _schedule_exists(self, name: str) -> bool:
        return self._exists(lambda: self.client.schedules.get(name))

    @staticmethod
    def _exists(get: Callable[[], Any]) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            get()
        except ResourceNotFoundError:
            return False
        return True

    # the undo actions: each raises ResourceNotFoundError when there is nothing to take back
    def _delete_endpoint(self, name: str) -> None:
        self.client.batch_endpoints.get(name)
        self.client.batch_endpoints.begin_delete(name=name).result()

    def _delete_deployment(self, name: str, endpoint: str) -> None:
        self.client.batch_deployments.get(name=name, endpoint_name=endpoint)
        self.client.batch_deployments.begin_delete(name=name, endpoint_name=endpoint).result()

    def _delete_schedule(self, name: str) -> None:
        self.client.schedules.get(name)
        self.client.schedules.begin_delete(name).result()

    def _set_default(self, endpoint: str, deployment: str | None) -> None:
        current = self.client.batch_endpoints.get(endpoint)
        current.defaults.deployment_name = deployment
        self.client.batch_endpoints.begin_create_or_update(current).result()


def on_component(job_schedule: Any, component: Any, folder: Path) -> Any:
    """The exported schedule, its job running the registered pipeline component (the published version)
    with the exported job's inputs and settings, as a v1 schedule runs its published pipeline. A local data
    input (an exported MLTable folder) is relative to ``folder``; azure-ai-ml uploads it."""
    from azure.ai.ml import Input
    from azure.ai.ml.entities import PipelineJob

    inline = job_schedule.create_job
    inputs = {}
    for key, value in inline.inputs.items():
        value = value_of(value)
        path = getattr(value, "path", None) if isinstance(value, Input) else None
        if isinstance(path, str) and path.startswith("./"):
            value = Input(type=value.type, path=str((folder / path).resolve()), mode=value.mode)
        inputs[key] = value
    job_schedule.create_job = PipelineJob(
        component=component, inputs=inputs, settings=inline.settings,
        experiment_name=inline.experiment_name, display_name=inline.display_name,
    )  # fmt: skip
    return job_schedule
