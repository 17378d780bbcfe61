"""Local publishing: published pipelines and versioned pipeline endpoints in the local workspace.

The local counterpart of ``PublishedPipeline`` + ``PipelineEndpoint``: each publish freezes the
pipeline's settings as a new published pipeline and adds it as the next version of the endpoint
named after the pipeline (the first version becomes the default). Versions are numbered from 0, as
Azure numbers a ``PipelineEndpoint``'s (``pipeline_version="0"`` is the first). State lives in SQLite
(``AMLOPS_HOME/workspace.db``); publishing works while the workspace service is down.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from typing import Any

from pipelines.errors import UserError
from pipelines.local.runtime import runs
from pipelines.local.workspace.db import connect, db_path  # noqa: F401 - db_path is part of this interface

DEFAULT_SERVICE_URL = "http://127.0.0.1:8765"
FIRST_VERSION = 0  # an endpoint's first version, as on Azure


def service_url() -> str:
    """The workspace service's URL: AMLOPS_SERVICE_URL, else the running service's (its real port), else 8765."""
    url = os.environ.get("AMLOPS_SERVICE_URL")
    if not url:
        from pipelines.local.workspace.service_info import read_service_info

        info = read_service_info()
        url = (info or {}).get("url") or DEFAULT_SERVICE_URL
    return url.rstrip("/")


def endpoint_url(endpoint_id: str) -> str:
    return f"{service_url()}/pipelines/v1.0/PipelineRuns/PipelineEndpointSubmit/Id/{endpoint_id}"


def pipeline_url(pipeline_id: str) -> str:
    return f"{service_url()}/pipelines/v1.0/PipelineRuns/PipelineSubmit/{pipeline_id}"


def published_parameters(definition: Any) -> dict[str, Any]:
    """The REST-assignable parameters of a pipeline as built, with their defaults."""
    from pipelines.core import v1_reader

    plan = v1_reader.read_steps(definition.steps)
    params = dict(plan.parameters)
    if definition.dataset_param and definition.dataset_param in params:
        params[definition.dataset_param] = definition.settings.dataset
    return params


def publish(definition: Any, set_default: bool = False) -> dict[str, Any]:
    """Publish ``definition`` locally as a new endpoint version; returns what was published and how to call it.

    The local backend (``pipelines.backends.local``) attaches the default schedule after this."""
    module = definition.module
    pipeline_id = str(uuid.uuid4())
    params = published_parameters(definition)
    created = runs.now()
    with connect() as conn:
        conn.execute(
            "INSERT INTO published_pipelines (id, name, description, module, settings, parameters, dataset_param, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pipeline_id,
                definition.name,
                definition.description,
                module,
                json.dumps(definition.settings.as_dict()),
                json.dumps(params),
                definition.dataset_param,
                created,
            ),
        )
        row = conn.execute("SELECT * FROM pipeline_endpoints WHERE name = ?", (definition.name,)).fetchone()
        if row is None:
            endpoint_id = str(uuid.uuid4())
            version = FIRST_VERSION
            conn.execute(
                "INSERT INTO pipeline_endpoints (id, name, default_version, created) VALUES (?, ?, ?, ?)",
                (endpoint_id, definition.name, version, created),
            )
        else:
            endpoint_id = row["id"]
            version = conn.execute(
                "SELECT COALESCE(MAX(version) + 1, ?) FROM endpoint_versions WHERE endpoint_id = ?",
                (FIRST_VERSION, endpoint_id),
            ).fetchone()[0]
        conn.execute(
            "INSERT INTO endpoint_versions (endpoint_id, version, pipeline_id, created) VALUES (?, ?, ?, ?)",
            (endpoint_id, version, pipeline_id, created),
        )
        if set_default:
            conn.execute(
                "UPDATE pipeline_endpoints SET default_version = ? WHERE id = ?", (version, endpoint_id)
            )
        default_version = conn.execute(
            "SELECT default_version FROM pipeline_endpoints WHERE id = ?", (endpoint_id,)
        ).fetchone()[0]
    result = {
        "target": "local",
        "pipeline_id": pipeline_id,
        "pipeline_name": definition.name,
        "endpoint_id": endpoint_id,
        "endpoint_name": definition.name,
        "version": version,
        "default_version": default_version,
        "endpoint_url": endpoint_url(endpoint_id),
        "version_url": f"{endpoint_url(endpoint_id)}/{version}",
        "pipeline_url": pipeline_url(pipeline_id),
        "parameters": params,
    }
    result["lines"] = publish_lines(result)
    return result


def publish_lines(result: dict[str, Any]) -> list[str]:
    example = json.dumps({"ExperimentName": "from-rest", "ParameterAssignments": {}})
    lines = [
        f"published {result['pipeline_name']} as pipeline {result['pipeline_id']}",
        f"endpoint {result['endpoint_name']} version {result['version']} (default version {result['default_version']})",
        f"endpoint URL: {result['endpoint_url']}",
        f"this version: {result['version_url']}",
        "parameters: " + ", ".join(f"{k}={v!r}" for k, v in result["parameters"].items()),
        "call it (with the workspace service running: python -m pipelines.workspace serve):",
        f'  curl -X POST {result["endpoint_url"]} -H "Authorization: Bearer $(python -m pipelines.workspace keys --primary)"'
        f" -H 'Content-Type: application/json' -d '{example}'",
    ]
    if result.get("schedule"):
        sched = result["schedule"]
        lines.append(f"schedule: {sched.get('id')} {sched.get('description', '')}".rstrip())
    return lines


def list_endpoints() -> list[dict[str, Any]]:
    with connect() as conn:
        rows = conn.execute(
            "SELECT e.id, e.name, e.default_version, v.version, v.pipeline_id, v.created FROM pipeline_endpoints e"
            " JOIN endpoint_versions v ON v.endpoint_id = e.id ORDER BY e.name, v.version"
        ).fetchall()
    return [dict(r) for r in rows]


def get_endpoint_version(endpoint_id_or_name: str, version: int | None = None) -> dict[str, Any]:
    """The published pipeline behind an endpoint's version (its default when version is None)."""
    with connect() as conn:
        endpoint = _endpoint(conn, endpoint_id_or_name)
        wanted = endpoint["default_version"] if version is None else version
        row = conn.execute(
            "SELECT p.* FROM endpoint_versions v JOIN published_pipelines p ON p.id = v.pipeline_id"
            " WHERE v.endpoint_id = ? AND v.version = ?",
            (endpoint["id"], wanted),
        ).fetchone()
        if row is None:
            raise UserError(
                f"endpoint {endpoint['name']} has no version {wanted}", hint="list versions first"
            )
    return _pipeline_row(row) | {
        "endpoint_id": endpoint["id"],
        "endpoint_name": endpoint["name"],
        "version": wanted,
    }


def get_published_pipeline(pipeline_id: str) -> dict[str, Any]:
    with connect() as conn:
        row = conn.execute("SELECT * FROM published_pipelines WHERE id = ?", (pipeline_id,)).fetchone()
    if row is None:
        raise UserError(f"no published pipeline {pipeline_id!r}", hint="publish one first")
    return _pipeline_row(row)


def set_default_version(endpoint_id_or_name: str, version: int) -> None:
    with connect() as conn:
        endpoint = _endpoint(conn, endpoint_id_or_name)
        exists = conn.execute(
            "SELECT 1 FROM endpoint_versions WHERE endpoint_id = ? AND version = ?", (endpoint["id"], version)
        ).fetchone()
        if not exists:
            raise UserError(
                f"endpoint {endpoint['name']} has no version {version}", hint="list versions first"
            )
        conn.execute(
            "UPDATE pipeline_endpoints SET default_version = ? WHERE id = ?", (version, endpoint["id"])
        )


def _pipeline_row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["settings"] = json.loads(out["settings"])
    out["parameters"] = json.loads(out["parameters"])
    return out


def _endpoint(conn: sqlite3.Connection, endpoint_id_or_name: str) -> sqlite3.Row:
    endpoint = conn.execute(
        "SELECT * FROM pipeline_endpoints WHERE id = ? OR name = ?",
        (endpoint_id_or_name, endpoint_id_or_name),
    ).fetchone()
    if endpoint is None:
        raise UserError(f"no pipeline endpoint {endpoint_id_or_name!r}", hint="publish one first")
    return endpoint
