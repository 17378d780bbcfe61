"""Pipeline endpoints: ``/endpoints`` lists them with their versions, default version and URLs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pipelines.local.workspace import publishing
from pipelines.local.workspace.routes.dependencies import KEYED

router = APIRouter(tags=["publishing"], dependencies=KEYED)


def endpoints_view() -> list[dict[str, Any]]:
    """Endpoints with their versions, default version and URLs."""
    out: dict[str, dict[str, Any]] = {}
    for row in publishing.list_endpoints():
        entry = out.setdefault(row["id"], {
            "id": row["id"], "name": row["name"], "default_version": row["default_version"],
            "url": publishing.endpoint_url(row["id"]), "versions": [],
        })  # fmt: skip
        entry["versions"].append({
            "version": row["version"], "pipeline_id": row["pipeline_id"], "created": row["created"],
            "url": f"{publishing.endpoint_url(row['id'])}/{row['version']}",
            "pipeline_url": publishing.pipeline_url(row["pipeline_id"]),
        })  # fmt: skip
    return list(out.values())


@router.get("/endpoints", summary="pipeline endpoints and their versions")
def list_endpoints() -> dict:
    return {"endpoints": endpoints_view()}
