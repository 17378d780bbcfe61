"""Submitting: Azure's submit routes for pipeline endpoints (default or one version) and published pipelines.

Everything is checked before anything is queued (key, body size, JSON, field names and types, the endpoint or
pipeline, parameter names and types, dataset references): a request that fails gets 400/401/404/413 and
queues nothing. A valid one is queued (run_queue) and answered at once with the run's ``Id`` and
``Status.StatusCode`` ``Queued``. The data it may name is what the app's data_access allows.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from pipelines.errors import UserError
from pipelines.local.workspace import api_schema, publishing, run_queue, submissions
from pipelines.local.workspace.api_schema import (
    API_PREFIX,
    SUBMIT_FIELDS,
    EndpointId,
    PipelineId,
    PipelineRun,
    SubmitBody,
    Version,
    VersionQuery,
)
from pipelines.local.workspace.data_access import DataAccess
from pipelines.local.workspace.routes.dependencies import KEYED, Access, Queue
from pipelines.local.workspace.routes.errors import ApiError
from pipelines.local.workspace.routes.runs import run_entity

MAX_BODY_BYTES = 1 << 20
EXPERIMENT_NAME = re.compile(api_schema.EXPERIMENT_NAME)

router = APIRouter(tags=["submit"], dependencies=KEYED)
SUBMIT_DOC = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": SubmitBody.model_json_schema(ref_template="#/components/schemas/{model}")}}}}  # fmt: skip


def parse_body(raw: bytes) -> dict[str, Any]:
    """The submission in ``raw``, checked: size, JSON, an object, known field names and their types."""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is over the limit of {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise ApiError(
            400, 'empty request body: send JSON like {"ExperimentName": "...", "ParameterAssignments": {}}'
        )
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the JSON body nests too deeply (a submission needs three levels)") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - SUBMIT_FIELDS)
    if unknown:
        shown = ", ".join(name[:40] for name in unknown[:5])
        raise ApiError(400, f"unknown field(s) in the body: {shown} (expected ExperimentName, ParameterAssignments, "
                            "DataPathAssignments, DataSetDefinitionValueAssignments)")  # fmt: skip
    for name, kind in api_schema.FIELD_TYPES.items():
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            wanted = {dict: "a JSON object", str: "a string", bool: "true or false"}[kind]
            raise ApiError(400, f"{name} must be {wanted}, got {json.dumps(value)[:80]}")
    experiment = body.get("ExperimentName")
    if experiment is not None and not EXPERIMENT_NAME.fullmatch(experiment):
        raise ApiError(400, f"ExperimentName {json.dumps(experiment)[:80]} is not a valid experiment name "
                            "(1-255 letters, digits, '_', '-', '.'; starting with a letter or digit)")  # fmt: skip
    return body


def dataset_assignment(published: dict[str, Any], body: dict[str, Any]) -> str | None:
    """The dataset reference from DataSetDefinitionValueAssignments (DataPathAssignments can't apply)."""
    dataset_param = published.get("dataset_param")
    params = published["parameters"]
    for name in body.get("DataPathAssignments") or {}:
        if name not in params:
            raise ApiError(400, f"unknown pipeline parameter {name!r} in DataPathAssignments "
                                f"(parameters: {', '.join(sorted(params))})")  # fmt: skip
        raise ApiError(400, f"DataPathAssignments[{name!r}]: the local workspace has no datastores; "
                            f"bind {dataset_param or 'the dataset'} with DataSetDefinitionValueAssignments "
                            '{"DataSetReference": {"Name": ...}} or a name, path or URL in ParameterAssignments')  # fmt: skip
    ref = None
    for name, value in (body.get("DataSetDefinitionValueAssignments") or {}).items():
        if name not in params:
            raise ApiError(400, f"unknown pipeline parameter {name!r} in DataSetDefinitionValueAssignments "
                                f"(parameters: {', '.join(sorted(params))})")  # fmt: skip
        if name != dataset_param:
            raise ApiError(
                400, f"parameter {name!r} is not a dataset parameter; assign it in ParameterAssignments"
            )
        ref = _dataset_reference(name, value)
    return ref


def _dataset_reference(name: str, value: Any) -> str:
    """The dataset name in one DataSetDefinitionValueAssignments entry."""
    if not isinstance(value, dict):
        raise ApiError(400, f"DataSetDefinitionValueAssignments[{name!r}] must be an object")
    reference = value.get("DataSetReference")
    if isinstance(reference, dict) and isinstance(reference.get("Name"), str) and reference["Name"]:
        version = reference.get("Version")
        if version not in (None, "", "latest", "1", 1):
            raise ApiError(400, f"dataset {reference['Name']!r} version {version!r}: local datasets have "
                                "one version (use \"latest\" or leave it out)")  # fmt: skip
        return reference["Name"]
    if "SavedDataSetReference" in value:
        raise ApiError(400, f"DataSetDefinitionValueAssignments[{name!r}]: SavedDataSetReference ids are "
                            'Azure dataset ids; locally use {"DataSetReference": {"Name": "<dataset name>"}}')  # fmt: skip
    raise ApiError(400, f"DataSetDefinitionValueAssignments[{name!r}] needs "
                        '{"DataSetReference": {"Name": "<dataset name>"}}')  # fmt: skip


def _lookup(kind: str, ident: str, version: str | None = None) -> dict[str, Any]:
    try:
        if kind == "endpoint":
            number = None
            if version is not None:
                if not re.fullmatch(api_schema.VERSION, version):
                    raise ApiError(
                        400, f"pipeline endpoint version must be a whole number, got {version[:20]!r}"
                    )
                number = int(version)
            return publishing.get_endpoint_version(ident, number)
        return publishing.get_published_pipeline(ident)
    except UserError as exc:
        raise ApiError(404, exc.message) from None


def _submit(
    published: dict[str, Any],
    body: dict[str, Any],
    data_access: DataAccess,
    queue: run_queue.RunQueue | None,
    base_url: str,
) -> dict[str, Any]:
    dataset = dataset_assignment(published, body)
    try:
        sub = submissions.prepare(
            published,
            experiment_name=body.get("ExperimentName"),
            parameters=body.get("ParameterAssignments") or {},
            dataset=dataset,
            extra={"submitted_by": "rest"},
            data_access=data_access,
        )
    except UserError as exc:
        raise ApiError(400, str(exc)) from None
    record = run_queue.submit(sub)
    if queue is not None:
        queue.notify()
    return run_entity(record, base_url)


async def _read(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:  # refuse before reading it
        raise ApiError(413, f"request body is over the limit of {MAX_BODY_BYTES} bytes")
    return parse_body(await request.body())


@router.post(
    f"{API_PREFIX}/PipelineEndpointSubmit/Id/{{endpoint_id}}", response_model=PipelineRun,
    summary="run the endpoint's default version (or ?pipelineVersion=N)", openapi_extra=SUBMIT_DOC,
)  # fmt: skip
async def submit_endpoint(
    endpoint_id: EndpointId,
    request: Request,
    access: Access,
    queue: Queue,
    pipelineVersion: VersionQuery = None,  # noqa: N803
) -> dict:
    body = await _read(request)
    published = await run_in_threadpool(_lookup, "endpoint", endpoint_id, pipelineVersion)
    return await run_in_threadpool(_submit, published, body, access, queue, str(request.base_url))


@router.post(
    f"{API_PREFIX}/PipelineEndpointSubmit/Id/{{endpoint_id}}/{{version}}", response_model=PipelineRun,
    summary="run one version of the endpoint", openapi_extra=SUBMIT_DOC,
)  # fmt: skip
async def submit_endpoint_version(
    endpoint_id: EndpointId, version: Version, request: Request, access: Access, queue: Queue
) -> dict:
    also = request.query_params.get("pipelineVersion")  # not documented here: the URL says the version
    if also is not None and (not re.fullmatch(api_schema.VERSION, also) or int(also) != int(version)):
        raise ApiError(400, f"the URL names version {version} but pipelineVersion={also[:20]}")
    body = await _read(request)
    published = await run_in_threadpool(_lookup, "endpoint", endpoint_id, version)
    return await run_in_threadpool(_submit, published, body, access, queue, str(request.base_url))


@router.post(
    f"{API_PREFIX}/PipelineSubmit/{{pipeline_id}}", response_model=PipelineRun,
    summary="run a published pipeline", openapi_extra=SUBMIT_DOC,
)  # fmt: skip
async def submit_pipeline(pipeline_id: PipelineId, request: Request, access: Access, queue: Queue) -> dict:
    body = await _read(request)
    published = await run_in_threadpool(_lookup, "pipeline", pipeline_id)
    return await run_in_threadpool(_submit, published, body, access, queue, str(request.base_url))
