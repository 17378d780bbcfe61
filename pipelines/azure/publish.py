"""Publish a pipeline definition to Azure ML: compute, environments, PublishedPipeline, PipelineEndpoint, Schedule.

Generic over ``PipelineDefinition`` (training, batch scoring, ...). In order:

1. the configured workspace (``pipelines.azure.workspace``); the recurrence, the AutoML budget and the
   data (a local file cannot be read from Azure) are checked first, so bad input fails before anything
   is created;
2. every compute target the steps name: looked up, else created as AmlCompute that scales to zero
   (``min_nodes=0``, ``max_nodes`` and ``vm_size`` from settings); the definition is then rebuilt with
   these ``ComputeTarget`` objects (Azure's AutoMLStep needs the object, not the name);
3. the project Environments the steps use (``environments/<name>.yml`` as ``amlops-<name>``) registered;
4. ``Pipeline(workspace, steps, description)`` (the SDK builds every step's module and the graph here)
   and ``validate()``; a configuration the SDK refuses, or a validation error, fails with a UserError;
5. ``pipeline.publish(name, description, version, continue_on_step_failure=False)``;
6. the ``PipelineEndpoint`` named after the pipeline: created from the first published pipeline (which
   becomes its default version; Azure numbers versions from "0"), else the new pipeline is added as the
   next version and made the default only with ``set_default=True``;
7. with ``schedule=True`` and a recurrence: the endpoint's schedule ``<name>-default`` is created, or
   updated when the recurrence changed (else kept; a disabled one stays disabled), as the local backend
   does. It targets the endpoint, so it runs the default version at fire time. Creating it never
   starts a run at once (start rule: ``pipelines.azure.schedules``).

The result has the local publisher's keys (``pipelines.local.workspace.publishing``) plus Azure details.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from typing import Any

from pipelines.azure import schedules
from pipelines.azure import workspace as azure_workspace
from pipelines.errors import UserError

IDLE_SECONDS_BEFORE_SCALEDOWN = 1800  # nodes idle this long are released (the cluster scales to zero)
PROJECT_ENV_PREFIX = "amlops-"


def publish(
    definition: Any, set_default: bool = False, schedule: bool = True, workspace: Any = None
) -> dict[str, Any]:
    """Publish ``definition`` as a new version of its Azure ML pipeline endpoint; returns what was done.

    What the SDK prints while it works ("Created step ...") goes to stderr, so ``--json`` output stays JSON.
    """
    with contextlib.redirect_stdout(sys.stderr):
        return _publish(definition, set_default, schedule, workspace)


def _publish(definition: Any, set_default: bool, schedule: bool, workspace: Any) -> dict[str, Any]:
    from azureml.pipeline.core import Pipeline

    from pipelines.core import v1_reader
    from pipelines.local.workspace.publishing import published_parameters

    plan = v1_reader.read_steps(definition.steps)
    if workspace is None:
        azure_workspace.workspace_details()  # an incomplete configuration is the first thing to hear about
    check_automl_budgets(plan)
    check_data(plan)
    if schedule and definition.schedule is not None:
        schedules.validated(definition.schedule)
        schedules.zone_info(definition.schedule.time_zone)
    ws = workspace if workspace is not None else azure_workspace.get_workspace()

    found = [ensure_compute(ws, name, definition.settings) for name in compute_names(plan)]
    computes = [summary for summary, _ in found]
    if definition.with_compute_targets is not None:
        with sdk_refusals(definition):
            definition = definition.with_compute_targets({s["name"]: target for s, target in found})
        plan = v1_reader.read_steps(definition.steps)
    environments = register_environments(ws, environment_names(plan))

    with sdk_refusals(definition), automl_client_log():
        pipeline = Pipeline(workspace=ws, steps=definition.steps, description=definition.description)
        errors = pipeline.validate()
        if errors:
            raise UserError(
                f"pipeline {definition.name} failed Azure ML validation: "
                + "; ".join(str(e).strip().splitlines()[0] for e in errors if str(e).strip()),
                hint="fix the step wiring (python -m " + definition.module + " show) and publish again",
            )
        published = pipeline.publish(
            name=definition.name,
            description=definition.description,
            version=settings_version(definition.settings),
            continue_on_step_failure=False,
        )
    endpoint, endpoint_action = add_to_endpoint(ws, definition, published, set_default)
    version = next(
        (str(v.version) for v in endpoint.pipeline_version_list if v.pipeline_id == published.id), None
    )
    result: dict[str, Any] = {
        "target": "azure",
        "workspace": ws.name,
        "pipeline_id": published.id,
        "pipeline_name": definition.name,
        "endpoint_id": endpoint.id,
        "endpoint_name": endpoint.name,
        "endpoint_action": endpoint_action,
        "version": version,
        "default_version": str(endpoint.default_version),
        "endpoint_url": endpoint.endpoint,
        "version_url": f"{endpoint.endpoint}/{version}",
        "pipeline_url": published.endpoint,
        "experiment_name": definition.experiment_name,
        "parameters": published_parameters(definition),
        "compute": computes,
        "environments": environments,
        "schedule": None,
    }
    if schedule and definition.schedule is not None:
        sched, action = schedules.ensure_for_endpoint(
            ws,
            f"{definition.name}-default",
            pipeline_endpoint_id=endpoint.id,
            experiment_name=definition.experiment_name,
            recurrence=definition.schedule,
            description=f"default schedule of {definition.name}",
        )
        result["schedule"] = schedules.describe(sched) | {"action": action}
    result["lines"] = publish_lines(result)
    return result


AZURE_MIN_AUTOML_MINUTES = 15  # AutoMLConfig's experiment_timeout_hours range starts at 0.25


def check_automl_budgets(plan: Any) -> None:
    """UserError before anything reaches Azure if an AutoML step's time budget is under Azure's minimum
    (the local engine takes shorter ones, such as the default single minute)."""
    for step in plan.steps:
        minutes = getattr(getattr(step, "settings", None), "experiment_timeout_minutes", None)
        if step.kind == "automl" and minutes is not None and minutes < AZURE_MIN_AUTOML_MINUTES:
            raise UserError(
                f"step {step.name}: Azure ML runs AutoML for at least {AZURE_MIN_AUTOML_MINUTES} minutes,"
                f" and timeout_minutes is {minutes:g}",
                hint=f"publish with --set timeout_minutes={AZURE_MIN_AUTOML_MINUTES} or more",
            )


def check_data(plan: Any) -> None:
    """UserError if a dataset input is a local file: Azure cannot read it (upload it, or give a URL)."""
    from pipelines.definitions import LOCAL_PLACEHOLDER

    for name, source in plan.datasets.items():
        local = [p.removeprefix(LOCAL_PLACEHOLDER) for p in source.paths if p.startswith(LOCAL_PLACEHOLDER)]
        if local:
            raise UserError(
                f"input {name} is the local file {local[0]}, which Azure ML cannot read",
                hint="give an http(s) URL or a known dataset name (--set dataset=...), or upload the file"
                " to a datastore first",
            )


@contextlib.contextmanager
def sdk_refusals(definition: Any) -> Any:
    """Configuration the SDK refuses while it builds or publishes the graph, as a one-line UserError."""
    from azureml.automl.core.shared.exceptions import ConfigException
    from azureml.exceptions import UserErrorException

    try:
        yield
    except UserError:
        raise
    except (ConfigException, UserErrorException, ValueError) as exc:
        raise UserError(
            f"Azure ML refused pipeline {definition.name}: {one_line(exc)}",
            hint="change the setting it names (python -m " + definition.module + " --help lists them)",
        ) from None
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status not in (400, 409, 422):
            raise
        raise UserError(
            f"Azure ML rejected pipeline {definition.name} ({status}): {one_line(exc)}",
            hint="change the setting it names and publish again",
        ) from None


def one_line(exc: BaseException) -> str:
    """An SDK exception's message on one line (AutoML's carry it in ``message``, service errors in the body)."""
    text = getattr(exc, "message", None) or str(exc)
    response = getattr(exc, "response", None)
    if response is not None:
        with contextlib.suppress(ValueError, AttributeError):
            error = response.json().get("error") or {}
            text = error.get("message") or text
    return " ".join(str(text).split())


@contextlib.contextmanager
def automl_client_log() -> Any:
    """Move the SDK's client-side AutoML log (``automl.log``, which it opens in the current folder while it
    builds an AutoMLStep) to the local workspace's ``logs/``; the step's own setting is unchanged."""
    import shutil
    from pathlib import Path

    from pipelines.settings import amlops_home

    log = Path("automl.log")
    existed = log.exists()
    try:
        yield
    finally:
        if not existed and log.exists():
            from azureml.automl.core._logging import log_server

            log_server.set_log_file(None)  # closes the SDK's handle on it
            folder = amlops_home() / "logs"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.move(log, folder / "automl-publish.log")


def compute_names(plan: Any) -> list[str]:
    """The compute targets the steps run on, in first-use order; a step without one is bad input."""
    missing = [s.name for s in plan.steps if not s.compute_target]
    if missing:
        raise UserError(
            "steps without a compute target: " + ", ".join(missing), hint="set compute_name in the settings"
        )
    return list(dict.fromkeys(s.compute_target for s in plan.steps))


def environment_names(plan: Any) -> list[str]:
    """The Environment names the steps use, in first-use order (AutoML steps bring their own)."""
    return list(dict.fromkeys(e for s in plan.steps if (e := getattr(s, "environment", None))))


def ensure_compute(workspace: Any, name: str, settings: Any) -> tuple[dict[str, Any], Any]:
    """Get the compute target ``name``, or create it as AmlCompute scaling between 0 and max_nodes.

    Returns a summary for the result and the ``ComputeTarget`` itself."""
    from azureml.core.compute import AmlCompute, ComputeTarget
    from azureml.exceptions import ComputeTargetException

    try:
        target = ComputeTarget(workspace=workspace, name=name)
    except ComputeTargetException as exc:
        if "ComputeTargetNotFound" not in str(exc):
            raise
        config = AmlCompute.provisioning_configuration(
            vm_size=settings.vm_size,
            min_nodes=0,
            max_nodes=settings.max_nodes,
            idle_seconds_before_scaledown=IDLE_SECONDS_BEFORE_SCALEDOWN,
        )
        target = ComputeTarget.create(workspace, name, config)
        target.wait_for_completion(show_output=False)
        if target.provisioning_state != "Succeeded":
            raise RuntimeError(
                f"compute {name} provisioning ended {target.provisioning_state}: {target.provisioning_errors}"
            ) from None
        return {
            "name": name, "action": "created", "type": target.type, "vm_size": settings.vm_size,
            "min_nodes": 0, "max_nodes": settings.max_nodes,
        }, target  # fmt: skip
    scale = getattr(target, "scale_settings", None)
    return {
        "name": name,
        "action": "found",
        "type": target.type,
        "vm_size": getattr(target, "vm_size", None),
        "min_nodes": getattr(scale, "minimum_node_count", None),
        "max_nodes": getattr(scale, "maximum_node_count", None),
    }, target


def register_environments(workspace: Any, names: list[str]) -> list[dict[str, Any]]:
    """Register the project's Environments (``environments/*.yml``) the steps use; others are used as they are."""
    from pipelines.definitions import ENVIRONMENTS_DIR, environment

    out = []
    for name in names:
        short = name.removeprefix(PROJECT_ENV_PREFIX)
        if not name.startswith(PROJECT_ENV_PREFIX) or not (ENVIRONMENTS_DIR / f"{short}.yml").is_file():
            out.append({"name": name, "action": "used as is", "version": None})
            continue
        registered = environment(short).register(workspace)
        out.append({"name": registered.name, "action": "registered", "version": registered.version})
    return out


def add_to_endpoint(workspace: Any, definition: Any, published: Any, set_default: bool) -> tuple[Any, str]:
    """Add ``published`` to the endpoint named after the pipeline, creating it (default = first version)."""
    from azureml.pipeline.core import PipelineEndpoint

    try:
        endpoint = PipelineEndpoint.get(workspace=workspace, name=definition.name)
    except Exception as exc:
        if not schedules.is_not_found(exc):
            raise
        endpoint = None
    if endpoint is None:
        endpoint = PipelineEndpoint.publish(
            workspace=workspace, name=definition.name, description=definition.description, pipeline=published
        )
        return endpoint, "created"
    endpoint.add(published)
    if set_default:
        endpoint.set_default(published)
    return endpoint, "added"


def settings_version(settings: Any) -> str:
    """The published pipeline's version label: a digest of the frozen settings it was built from."""
    digest = hashlib.sha256(json.dumps(settings.as_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"settings-{digest}"


def publish_lines(result: dict[str, Any]) -> list[str]:
    """What a person reads after publishing: ids, URLs, how to call the endpoint, the schedule."""
    example = json.dumps({"ExperimentName": result["experiment_name"], "ParameterAssignments": {}})
    lines = [
        f"published {result['pipeline_name']} as pipeline {result['pipeline_id']} in workspace {result['workspace']}",
        f"endpoint {result['endpoint_name']} version {result['version']} (default version {result['default_version']})",
        f"endpoint URL: {result['endpoint_url']}",
        f"this version: {result['version_url']}",
        "compute: "
        + ", ".join(
            f"{c['name']} ({c['action']}, {c['type']}, {c['vm_size']}, {c['min_nodes']}-{c['max_nodes']} nodes)"
            for c in result["compute"]
        ),
        "environments: "
        + (", ".join(f"{e['name']} ({e['action']}" + (f" v{e['version']})" if e["version"] else ")")
                     for e in result["environments"]) or "-"),
        "parameters: " + ", ".join(f"{k}={v!r}" for k, v in result["parameters"].items()),
        "call it with an Azure AD token:",
        f'  curl -X POST {result["endpoint_url"]} -H "Authorization: Bearer $(az account get-access-token'
        f" --query accessToken -o tsv)\" -H 'Content-Type: application/json' -d '{example}'",
    ]  # fmt: skip
    sched = result.get("schedule")
    if sched:
        rec = sched["recurrence"] or {}
        when = "".join(
            [
                f" on {','.join(rec['week_days'])}" if rec.get("week_days") else "",
                f" at hours {rec['hours']}" if rec.get("hours") else "",
                f" minutes {rec['minutes']}" if rec.get("minutes") else "",
            ]
        )
        lines.append(
            f"schedule {sched['name']} ({sched['action']}, id {sched['id']}): every {rec.get('interval')} "
            f"{rec.get('frequency')}{when} ({rec.get('time_zone')}), starting {rec.get('start_time')};"
            " creating it starts no run"
        )
    return lines
