"""Real-time deployment on Azure ML: the SDK v1 objects an Azure ML engineer writes, and the calls that use them.

``InferenceConfig`` (scoring/score.py with the ``environments/inference.yml`` Environment, or a copy of a
workspace or curated Environment such as ``AzureML-AutoML`` for a model Azure AutoML trained), key-authenticated
ACI (``auth_enabled=True``, App Insights on) or AKS (key or token auth) deployment configurations, and
``Model.deploy``. Building the configuration is offline; every function taking a workspace talks to Azure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azureml.core import Environment
from azureml.core.model import InferenceConfig, Model
from azureml.core.webservice import AciWebservice, AksWebservice, Webservice
from azureml.exceptions import WebserviceException

from pipelines.errors import UserError
from pipelines.settings import PROJECT_ROOT

SCORING_DIR = PROJECT_ROOT / "scoring"
ENTRY_SCRIPT = "score.py"
INFERENCE_ENV_FILE = PROJECT_ROOT / "environments" / "inference.yml"
INFERENCE_ENV_NAME = "amlops-inference"
TARGETS = ("aci", "aks")
# the inference server's settings a service is deployed with, carried over when its model is updated
SERVICE_VARIABLES = ("SCORING_TIMEOUT_MS", "WORKER_TIMEOUT", "AML_CORS_ORIGINS")


def inference_config(
    *,
    source_directory: Path = SCORING_DIR,
    entry_script: str = ENTRY_SCRIPT,
    environment_file: Path = INFERENCE_ENV_FILE,
    environment: Any = None,
    scoring_timeout_ms: int | None = None,
    cors_origins: str = "",
    keep_variables: dict[str, str] | None = None,
) -> InferenceConfig:
    """score.py in its folder, run in the conda Environment from ``environments/inference.yml``, or in
    ``environment`` (an Environment under the project's name: see workspace_environment).

    ``cors_origins`` becomes the inference server's ``AML_CORS_ORIGINS`` (browsers on those origins may call
    the service); ``keep_variables``: the service settings (SERVICE_VARIABLES) a deployed service already has.

    ``scoring_timeout_ms`` becomes the inference server's ``SCORING_TIMEOUT_MS`` in the container (and its
    gunicorn's ``WORKER_TIMEOUT`` is raised above it): the timeout on ACI, which has no setting of its own
    for it (AKS has ``scoring_timeout_ms``, see aks_config).
    """
    if environment is None and not Path(environment_file).is_file():
        raise UserError(
            f"environment file {environment_file} not found", hint="restore environments/inference.yml"
        )
    # score.py finds the model's name in AZUREML_MODEL_DIR (.../azureml-models/<name>/<version>), set by Azure
    env = environment or Environment.from_conda_specification(
        name=INFERENCE_ENV_NAME, file_path=str(environment_file)
    )
    variables = {k: v for k, v in (keep_variables or {}).items() if k in SERVICE_VARIABLES}
    if scoring_timeout_ms is not None:  # read by the inference server and its gunicorn in the container
        from pipelines.local.serving.supervisor import worker_timeout

        variables["SCORING_TIMEOUT_MS"] = str(scoring_timeout_ms)
        variables["WORKER_TIMEOUT"] = str(worker_timeout(scoring_timeout_ms))
    if cors_origins:
        variables["AML_CORS_ORIGINS"] = cors_origins
    if variables:
        env.environment_variables = {**(env.environment_variables or {}), **variables}
    return InferenceConfig(entry_script=entry_script, source_directory=str(source_directory), environment=env)


def workspace_environment(workspace: Any, name: str) -> Any:
    """The workspace's Environment ``name`` (also Azure's curated ones, e.g. ``AzureML-AutoML``), copied.

    Deploying sets variables on the Environment (the SDK's ``AZUREML_ENTRY_SCRIPT``, this project's
    SERVICE_VARIABLES), and a curated environment may not be changed or registered under its own name (its
    ``AzureML-`` prefix is reserved), so score.py runs in a copy under the project's name, with the same
    packages and image (project_copy)."""
    try:
        source = Environment.get(workspace, name)
    except Exception as exc:  # the SDK's environment client raises a plain Exception for the service's 404
        raise UserError(
            f"cannot get the Environment {name!r} from the workspace: {_service_message(exc)}",
            hint="give a workspace or curated environment's name (e.g. AzureML-AutoML), or unset deploy_environment",
        ) from None
    return project_copy(source)


def _service_message(exc: Exception) -> str:
    """The service's error message in an SDK exception ("... Code: 404\\n: {"error": {"message": ...}}")."""
    import json

    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    try:
        return str(json.loads(lines[-1].lstrip(": "))["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return lines[-1][:200]


def project_copy(environment: Any) -> Any:
    """``environment`` as a new, unregistered definition named ``amlops-inference-<name>`` (a copy keeps its name)."""
    name = environment.name
    if not name.startswith(INFERENCE_ENV_NAME + "-"):
        name = f"{INFERENCE_ENV_NAME}-{name}"
    return environment.clone(name)


def aci_config(
    *, cpu_cores: float = 1, memory_gb: float = 1, app_insights: bool = True, description: str = ""
) -> Any:
    """Azure Container Instances with key authentication (off by default on ACI) and App Insights."""
    return AciWebservice.deploy_configuration(
        cpu_cores=cpu_cores,
        memory_gb=memory_gb,
        auth_enabled=True,
        enable_app_insights=app_insights,
        description=description or None,
        tags={"project": "amlops"},
    )


def aks_config(
    *,
    token_auth: bool = False,
    cpu_cores: float = 1,
    memory_gb: float = 1,
    app_insights: bool = True,
    autoscale_max_replicas: int = 3,
    scoring_timeout_ms: int | None = None,
    description: str = "",
) -> Any:
    """Azure Kubernetes Service with key authentication, or Azure AD token authentication instead."""
    return AksWebservice.deploy_configuration(
        auth_enabled=not token_auth,
        token_auth_enabled=token_auth,
        cpu_cores=cpu_cores,
        memory_gb=memory_gb,
        enable_app_insights=app_insights,
        autoscale_enabled=True,
        autoscale_min_replicas=1,
        autoscale_max_replicas=autoscale_max_replicas,
        scoring_timeout_ms=scoring_timeout_ms,  # None: Azure's default, 60000
        description=description or None,
        tags={"project": "amlops"},
    )


def deploy(
    workspace: Any,
    model_name: str,
    model_version: int | None,
    service_name: str,
    *,
    target: str = "aci",
    aks_cluster: str = "",
    token_auth: bool = False,
    overwrite: bool = False,
    cpu_cores: float = 1,
    memory_gb: float = 1,
    max_replicas: int = 3,
    scoring_timeout_ms: int | None = None,
    cors_origins: str = "",
    environment_name: str = "",
) -> Any:
    """``Model.deploy`` of a registered model as a web service; waits for the deployment and returns it.

    ``environment_name``: a workspace or curated Environment score.py runs in (a copy, see
    workspace_environment) instead of ``environments/inference.yml``."""
    if target not in TARGETS:
        raise UserError(f"unknown Azure target {target!r}", hint="use aci or aks")
    if target == "aks" and not aks_cluster:
        raise UserError("an AKS deployment needs the cluster's name", hint="pass --aks-cluster NAME")
    if target == "aci" and token_auth:
        raise UserError(
            "ACI does not support token authentication", hint="use --target aks, or key auth on ACI"
        )
    environment = workspace_environment(workspace, environment_name) if environment_name else None
    model = Model(workspace, name=model_name, version=model_version)
    if target == "aci":
        config = aci_config(cpu_cores=cpu_cores, memory_gb=memory_gb)
    else:
        config = aks_config(
            token_auth=token_auth, cpu_cores=cpu_cores, memory_gb=memory_gb,
            autoscale_max_replicas=max_replicas, scoring_timeout_ms=scoring_timeout_ms,
        )  # fmt: skip
    deployment_target = None
    if target == "aks":
        from azureml.core.compute import AksCompute

        deployment_target = AksCompute(workspace, aks_cluster)
    config_ = inference_config(
        environment=environment, cors_origins=cors_origins,
        scoring_timeout_ms=scoring_timeout_ms if target == "aci" else None,
    )  # fmt: skip
    try:
        service = Model.deploy(
            workspace, service_name, [model], inference_config=config_, deployment_config=config,
            deployment_target=deployment_target, overwrite=overwrite,
        )  # fmt: skip
    except (
        WebserviceException
    ) as exc:  # the service refused the request (a name taken without overwrite, ...)
        message = (exc.message or str(exc)).strip().splitlines()[0]
        taken = "already" in message and not overwrite
        raise UserError(
            f"Azure ML refused to deploy {service_name!r}: {message}",
            hint="pass --overwrite to replace it, or delete it first"
            if taken
            else "check the options and the workspace",
        ) from None
    service.wait_for_deployment(show_output=True)
    return service


def get_service(workspace: Any, name: str) -> Any:
    """An existing web service by name."""
    return Webservice(workspace, name=name)


def list_services(workspace: Any) -> list[Any]:
    """The workspace's web services."""
    return list(Webservice.list(workspace))


def describe(service: Any) -> dict[str, Any]:
    """What a user needs to call a service: state, scoring and swagger URIs, and how to get the keys."""
    token = bool(getattr(service, "token_auth_enabled", False))
    target = str(getattr(service, "compute_type", "")).lower()
    return {
        "name": service.name,
        "target": target,
        "state": getattr(service, "state", ""),
        "scoring_uri": service.scoring_uri,
        "swagger_uri": getattr(service, "swagger_uri", None),
        "auth": "token" if token else ("key" if getattr(service, "auth_enabled", False) else "none"),
        "keys": (
            f"python -m pipelines.deploy keys --target {target or 'aci'} --name {service.name}"
            if not token
            else "service.get_token() (Azure AD token, expires)"
        ),
    }


def keys(service: Any) -> dict[str, str]:
    """The service's primary and secondary keys."""
    primary, secondary = service.get_keys()
    return {"primary": primary, "secondary": secondary}


def regenerate_key(service: Any, which: str) -> dict[str, str]:
    """``Webservice.regen_key`` for ``primary`` or ``secondary``; the new keys."""
    if which not in ("primary", "secondary"):
        raise UserError(f"unknown key {which!r}", hint="use primary or secondary")
    service.regen_key(which.capitalize())
    return keys(service)


def enable_app_insights(service: Any, enabled: bool = True) -> None:
    """``service.update(enable_app_insights=...)``, and wait for it."""
    service.update(enable_app_insights=enabled)
    service.wait_for_deployment(show_output=True)


def update_model(workspace: Any, service: Any, model_name: str, model_version: int | None) -> None:
    """``service.update(models=[...])`` with the same InferenceConfig: the service serves another model version.

    The service's own settings (its scoring timeout, CORS origins) are read from its environment and kept,
    and so is the environment itself when it is not ``environments/inference.yml``'s (a service deployed in
    a copy of ``AzureML-AutoML`` keeps AutoML's runtime)."""
    model = Model(workspace, name=model_name, version=model_version)
    environment = getattr(service, "environment", None)
    deployed = getattr(environment, "environment_variables", None) or {}
    kept = (
        project_copy(environment)
        if environment is not None and environment.name != INFERENCE_ENV_NAME
        else None
    )
    config = inference_config(environment=kept, keep_variables=dict(deployed))
    service.update(models=[model], inference_config=config)
    service.wait_for_deployment(show_output=True)
