"""Local real-time deployments: what other systems need to call them (never their keys)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pipelines.errors import UserError
from pipelines.local.serving import deployments
from pipelines.local.workspace.api_schema import DeploymentName
from pipelines.local.workspace.routes.dependencies import KEYED
from pipelines.local.workspace.routes.errors import ApiError

router = APIRouter(tags=["deployments"], dependencies=KEYED)


def deployment_view(service: deployments.LocalService) -> dict[str, Any]:
    """What other systems need to call a local service (never its keys: ``python -m pipelines.deploy keys``)."""
    shown = ("name", "model", "state", "restarts", "message", "scoring_uri", "swagger_uri", "swagger_ui_uri",
             "health_uri", "workers", "app_insights", "max_body_bytes", "scoring_timeout_ms", "created", "updated")  # fmt: skip
    info = service.describe()
    return {key: info.get(key) for key in shown}


@router.get("/deployments", summary="local real-time services: state, model and URIs")
def list_deployments() -> dict:
    return {"deployments": [deployment_view(s) for s in deployments.list_services()]}


@router.get("/deployments/{name}", summary="one local real-time service")
def get_deployment(name: DeploymentName) -> dict:
    try:
        return deployment_view(deployments.load(name))
    except UserError as exc:
        raise ApiError(404, exc.message) from None
