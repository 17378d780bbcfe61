"""Azure ML's curated environments as SDK v2 names them: assets of the shared ``azureml`` registry.

SDK v1 reads a curated environment (``AzureML-AutoML``) from the workspace by name; in v2 a job, component or
deployment references it in the registry, e.g. ``azureml://registries/azureml/environments/AzureML-AutoML/labels/latest``.
"""

from __future__ import annotations

CURATED_PREFIXES = ("AzureML-", "Microsoft-")  # names reserved for curated environments (azureml-core's docs)
REGISTRY = "azureml"


def is_curated(name: str) -> bool:
    """Whether ``name`` is a curated environment's (its prefix is reserved for them)."""
    return name.lower().startswith(tuple(p.lower() for p in CURATED_PREFIXES))


def curated_reference(name: str, version: str | None = None) -> str:
    """The registry reference to a curated environment: its latest version, or ``version``."""
    where = f"versions/{version}" if version else "labels/latest"
    return f"azureml://registries/{REGISTRY}/environments/{name}/{where}"


def environment_reference(name: str) -> str:
    """A v2 ``environment:`` value for an environment named as in v1: the registry for a curated one, else the
    workspace's latest version."""
    return curated_reference(name) if is_curated(name) else f"azureml:{name}@latest"
