"""The v1 real-time deployment (ACI / AKS web service) as SDK v2 online endpoint and deployment YAML.

ACI (auth_enabled)        -> ManagedOnlineEndpoint(auth_mode="key") + ManagedOnlineDeployment
AKS (--aks-cluster NAME)  -> KubernetesOnlineEndpoint(compute=NAME, auth_mode="key") + KubernetesOnlineDeployment
InferenceConfig           -> code_configuration (scoring/score.py) + the inference environment
enable_app_insights       -> app_insights_enabled;  scoring_timeout_ms -> request_settings.request_timeout_ms
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.v2.translate import BASE_IMAGE, SCHEMA, Translation

ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")
MANAGED_TIMEOUT_MS = 180_000  # a managed online deployment's request timeout may not exceed this
MANAGED_INSTANCE_TYPE = "Standard_DS3_v2"


@dataclass
class OnlineSpec:
    """What ``deploy export`` is asked: the service, the model and the size."""

    name: str
    model_name: str
    model_version: int | None
    scoring_dir: Path
    environments_dir: Path
    out_dir: Path
    aks_cluster: str = ""
    # managed: a VM size (default MANAGED_INSTANCE_TYPE); kubernetes: an instance type the cluster defines
    instance_type: str | None = None
    instance_count: int = 1
    scoring_timeout_ms: int | None = None
    app_insights: bool = True
    cors_origins: str = ""
    cpu_cores: float | None = None
    memory_gb: float | None = None
    environment: str = ""  # a workspace or curated environment instead of environments/inference.yml


def online_translation(spec: OnlineSpec) -> Translation:
    """The endpoint and deployment documents (Kubernetes when an AKS cluster is named, else managed)."""
    if not ENDPOINT_NAME.match(spec.name):
        raise UserError(
            f"--name {spec.name!r} is not a valid online endpoint name",
            hint="3-32 letters, digits and hyphens, starting with a letter",
        )
    kubernetes = bool(spec.aks_cluster)
    kind = "kubernetes" if kubernetes else "managed"
    out = Translation(name=spec.name, job_file="", component_file="")
    endpoint: dict[str, Any] = {
        "$schema": SCHEMA.format(f"{kind}OnlineEndpoint"),
        "name": spec.name,
        "auth_mode": "key",
        "description": f"{spec.model_name}: scoring/score.py behind key authentication",
    }
    if kubernetes:
        endpoint["compute"] = f"azureml:{spec.aks_cluster}"
    version = spec.model_version
    model = f"azureml:{spec.model_name}:{version}" if version else f"azureml:{spec.model_name}@latest"
    variables = {"AMLOPS_MODEL_NAME": spec.model_name}
    if spec.cors_origins:
        variables["AML_CORS_ORIGINS"] = spec.cors_origins
    deployment: dict[str, Any] = {
        "$schema": SCHEMA.format(f"{kind}OnlineDeployment"),
        "name": "blue",
        "type": kind,  # load_online_deployment picks the managed or kubernetes schema by it
        "endpoint_name": spec.name,
        "model": model,
        "code_configuration": {
            "code": os.path.relpath(spec.scoring_dir, spec.out_dir),
            "scoring_script": "score.py",
        },
        "environment": _environment(spec, out),
        "environment_variables": variables,
        "instance_count": spec.instance_count,
        "app_insights_enabled": spec.app_insights,
    }
    if kubernetes:  # the container's requests (default 1 CPU, 1 GB), and an instance type the cluster defines
        cpu, memory = spec.cpu_cores or 1, spec.memory_gb or 1
        # always sent: azure-ai-ml 1.35.2 cannot read back a Kubernetes deployment without them
        deployment["resources"] = {"requests": {"cpu": f"{cpu:g}", "memory": f"{memory:g}Gi"}}
        if spec.instance_type:
            deployment["instance_type"] = spec.instance_type
    else:
        deployment["instance_type"] = spec.instance_type or MANAGED_INSTANCE_TYPE
    if spec.scoring_timeout_ms:
        timeout = spec.scoring_timeout_ms
        if not kubernetes and timeout > MANAGED_TIMEOUT_MS:
            raise UserError(
                f"--scoring-timeout-ms {timeout} exceeds a managed online deployment's {MANAGED_TIMEOUT_MS} ms",
                hint=f"use at most {MANAGED_TIMEOUT_MS}, or an AKS cluster (--aks-cluster)",
            )
        deployment["request_settings"] = {"request_timeout_ms": timeout}
    out.files[f"{spec.name}.endpoint.yml"] = endpoint
    out.files[f"{spec.name}.deployment.yml"] = deployment
    target = "AKS web service" if kubernetes else "ACI web service"
    out.mapped += [
        f"{target} (auth_enabled) -> {kind} online endpoint {spec.name} with auth_mode key",
        f"InferenceConfig(score.py, {spec.environment or 'inference'} environment) + model {model} -> {kind}"
        " online deployment blue",
        "enable_app_insights -> app_insights_enabled"
        + (", scoring_timeout_ms -> request_settings.request_timeout_ms" if spec.scoring_timeout_ms else ""),
    ]
    out.differences += [
        "keys: an online endpoint's keys are read with get_keys and regenerated with regenerate_keys (the"
        " endpoint's, not the deployment's)",
        "score.py finds the model through AZUREML_MODEL_DIR (v2 has no Model.get_model_path service lookup)",
    ]
    if not kubernetes:
        out.differences.append(
            f"size: ACI's cpu_cores/memory_gb become a VM size ({deployment['instance_type']}) x instance_count"
        )
    return out


def _environment(spec: OnlineSpec, out: Translation) -> Any:
    """environments/inference.yml on the base image (copied beside the YAML), or a reference to ``environment``:
    a curated one in the ``azureml`` registry (AzureML-AutoML for a model Azure AutoML trained), else the
    workspace's. The deployment's variables are its own, so the environment is used unchanged."""
    if spec.environment:
        from pipelines.v2.curated import environment_reference

        return environment_reference(spec.environment)
    out.copies["environments/inference.yml"] = spec.environments_dir / "inference.yml"
    return {"image": BASE_IMAGE, "conda_file": "environments/inference.yml"}
