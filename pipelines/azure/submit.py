"""Start a run of a published Azure ML pipeline or pipeline endpoint over REST; returns the run ``Id``.

The request is Azure's: ``POST <endpoint URL>[/<version>]`` with an Azure AD ``Authorization: Bearer``
header (service principal from the environment, else Azure CLI, else interactive login; see
``pipelines.azure.workspace.authentication``) and the JSON body ``{"ExperimentName",
"ParameterAssignments", "DataPathAssignments", "DataSetDefinitionValueAssignments"}``. The local
workspace service accepts the same body with a key instead of a token.
"""

from __future__ import annotations

from typing import Any

import requests

from pipelines.errors import UserError

DEFAULT_TIMEOUT_SECONDS = 60


def request_body(
    experiment_name: str,
    parameters: dict[str, Any] | None = None,
    data_paths: dict[str, Any] | None = None,
    datasets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Azure's pipeline-submission body; empty optional assignments are left out."""
    if not experiment_name:
        raise UserError("an experiment name is required", hint="pass the experiment the run should go to")
    body: dict[str, Any] = {"ExperimentName": experiment_name, "ParameterAssignments": dict(parameters or {})}
    if data_paths:
        body["DataPathAssignments"] = dict(data_paths)
    if datasets:
        body["DataSetDefinitionValueAssignments"] = dict(datasets)
    return body


def submit(
    url: str,
    experiment_name: str,
    parameters: dict[str, Any] | None = None,
    *,
    version: str | None = None,
    data_paths: dict[str, Any] | None = None,
    datasets: dict[str, Any] | None = None,
    auth: Any = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> str:
    """POST a run request to a published pipeline/endpoint URL (a given endpoint version) and return its run id."""
    if not url.startswith("https://"):
        raise UserError(
            f"not an Azure ML REST endpoint: {url!r}", hint="use the endpoint URL printed by publish"
        )
    body = request_body(experiment_name, parameters, data_paths, datasets)
    target = url.rstrip("/")
    query = {}
    if version is not None:  # as the SDK addresses a version: path suffix plus pipelineVersion query
        target = f"{target}/{version}"
        query["pipelineVersion"] = str(version)
    if auth is None:
        from pipelines.azure.workspace import authentication

        auth = authentication()
    headers = {**auth.get_authentication_header(), "Content-Type": "application/json"}
    try:
        response = requests.post(target, params=query or None, json=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise UserError(
            f"cannot reach {target}: {type(exc).__name__}", hint="check the URL and the network"
        ) from None
    if response.status_code in (401, 403):
        raise UserError(
            f"Azure ML refused the token ({response.status_code}): {_error_text(response)}",
            hint="the identity needs a role on the workspace (e.g. AzureML Data Scientist)",
        )
    if response.status_code in (400, 404):
        raise UserError(
            f"Azure ML rejected the request ({response.status_code}): {_error_text(response)}",
            hint="check the endpoint URL, version, experiment name and parameter names",
        )
    response.raise_for_status()
    try:
        run_id = response.json()["Id"]
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(
            f"{target} answered {response.status_code} without a run Id: {response.text[:200]}"
        ) from None
    return str(run_id)


def endpoint_url(workspace: Any, name: str) -> str:
    """The REST URL of the pipeline endpoint ``name`` in the workspace."""
    from azureml.pipeline.core import PipelineEndpoint

    from pipelines.azure.schedules import is_not_found

    try:
        return PipelineEndpoint.get(workspace=workspace, name=name).endpoint
    except Exception as exc:
        if is_not_found(exc):
            raise UserError(
                f"no pipeline endpoint {name!r} in the workspace", hint="publish it first"
            ) from None
        raise


def _error_text(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200] or response.reason or ""
    error = data.get("error") or data.get("Error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("Message") or error)[:200]
    return str(data)[:200]
