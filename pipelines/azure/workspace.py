"""Azure ML workspace configuration and authentication (the only place that builds a Workspace)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.settings import PROJECT_ROOT

ENV_KEYS = ("AZUREML_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")
SP_KEYS = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")


def config_file() -> Path | None:
    """The workspace config.json: AZUREML_CONFIG, ./config.json, ./.azureml/config.json, project root."""
    candidates = [os.environ.get("AZUREML_CONFIG")] if os.environ.get("AZUREML_CONFIG") else []
    for base in (Path.cwd(), PROJECT_ROOT):
        candidates += [str(base / "config.json"), str(base / ".azureml" / "config.json")]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def workspace_details() -> dict[str, str] | None:
    """subscription_id/resource_group/workspace_name from the environment or config.json; None if unset."""
    env = {k: os.environ.get(k, "") for k in ENV_KEYS}
    if any(env.values()):
        missing = [k for k, v in env.items() if not v]
        if missing:
            raise UserError(
                "Azure workspace configuration is incomplete: " + ", ".join(missing) + " not set",
                hint="set all of " + ", ".join(ENV_KEYS) + " or use a config.json",
            )
        return {
            "subscription_id": env["AZUREML_SUBSCRIPTION_ID"],
            "resource_group": env["AZUREML_RESOURCE_GROUP"],
            "workspace_name": env["AZUREML_WORKSPACE_NAME"],
        }
    path = config_file()
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc})", hint="download config.json again from the portal"
        ) from None
    keys = ("subscription_id", "resource_group", "workspace_name")
    missing = [k for k in keys if not data.get(k)]
    if missing:
        raise UserError(
            f"{path} is incomplete: " + ", ".join(missing) + " missing",
            hint="download config.json again from the Azure ML studio workspace page",
        )
    return {k: data[k] for k in keys}


def is_configured() -> bool:
    return workspace_details() is not None


def authentication() -> Any:
    """Service principal from AZURE_TENANT_ID/CLIENT_ID/CLIENT_SECRET, else Azure CLI, else interactive."""
    from azureml.core.authentication import (
        AzureCliAuthentication,
        InteractiveLoginAuthentication,
        ServicePrincipalAuthentication,
    )

    sp = {k: os.environ.get(k, "") for k in SP_KEYS}
    if all(sp.values()):
        return ServicePrincipalAuthentication(
            tenant_id=sp["AZURE_TENANT_ID"],
            service_principal_id=sp["AZURE_CLIENT_ID"],
            service_principal_password=sp["AZURE_CLIENT_SECRET"],
        )
    if any(sp.values()):
        missing = [k for k, v in sp.items() if not v]
        raise UserError("service principal settings incomplete: " + ", ".join(missing) + " not set",
                        hint="set all three, or none to use the Azure CLI login")  # fmt: skip
    try:
        auth = AzureCliAuthentication()
        auth.get_authentication_header()
        return auth
    except Exception:  # noqa: BLE001 - any failure of the CLI login falls back to interactive login
        details = workspace_details() or {}
        return InteractiveLoginAuthentication(tenant_id=os.environ.get("AZURE_TENANT_ID") or None,
                                              force=False) if details else InteractiveLoginAuthentication()  # fmt: skip


def get_workspace() -> Any:
    """The configured Workspace (contacts Azure)."""
    from azureml.core import Workspace

    details = workspace_details()
    if details is None:
        raise UserError("no Azure ML workspace is configured",
                        hint="set " + ", ".join(ENV_KEYS) + " or put config.json in the project")  # fmt: skip
    return Workspace(auth=authentication(), **details)
