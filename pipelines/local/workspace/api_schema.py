"""What the workspace service's OpenAPI document promises: request and response models, the rules for path and
query parameters, and the error answers every route can give.

Path parameters are checked here, once, before any route runs: an id that is too long or has characters no
id has is a 400 naming the rule, never a file-system or database error. ``document_errors`` then makes the
document say what the service answers: 400 for bad input (FastAPI would document 422), 401 and 503 on the
routes that need a key, 404 on routes that look something up, 413 where a body is read, each with the
``{"error": {"code", "message"}}`` body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from pipelines.local.runtime import runs
from pipelines.local.serving.records import NAME_PATTERN

API_PREFIX = "/pipelines/v1.0/PipelineRuns"  # Azure's routes for runs and submissions
IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"  # endpoint names and ids, pipeline ids, step names
VERSION = r"^[0-9]{1,9}$"  # an endpoint version (SQLite holds 64-bit integers; nobody publishes 10**9)
EXPERIMENT_NAME = r"^[A-Za-z0-9][\w\-.]{0,254}$"

RunId = Annotated[
    str,
    Path(
        pattern=runs.RUN_ID_PATTERN, max_length=runs.RUN_ID_MAX, description="a run id (GET /runs lists them)"
    ),
]
EndpointId = Annotated[
    str,
    Path(pattern=IDENTIFIER, max_length=128, description="a pipeline endpoint's id or name (GET /endpoints)"),
]
PipelineId = Annotated[str, Path(pattern=IDENTIFIER, max_length=128, description="a published pipeline's id")]
Version = Annotated[str, Path(pattern=VERSION, max_length=9, description="an endpoint version (from 0)")]
StepName = Annotated[str, Path(pattern=IDENTIFIER, max_length=128, description="a step's name, or 'driver'")]
DeploymentName = Annotated[
    str, Path(pattern=NAME_PATTERN.pattern, max_length=32, description="a local real-time service's name")
]
VersionQuery = Annotated[
    str | None, Query(pattern=VERSION, max_length=9, description="an endpoint version (the URL's form wins)")
]
StatusName = Literal["NotStarted", "Queued", "Running", "Completed", "Failed", "Canceled"]
assert get_args(StatusName) == runs.STATUSES  # noqa: S101 - one list of statuses
StatusQuery = Annotated[StatusName | None, Query(description="only runs in this status")]


class SubmitBody(BaseModel):
    """Azure's PipelineSubmissionInfo (the fields the local engine uses; the others are accepted and ignored)."""

    model_config = ConfigDict(extra="forbid")

    ExperimentName: str | None = Field(
        None,
        json_schema_extra={"pattern": EXPERIMENT_NAME},  # documented only: the service checks bodies itself
        description="the experiment (MLflow experiment locally) the run goes to; default: the pipeline's",
    )
    ParameterAssignments: dict[str, Any] | None = Field(
        None,
        description="pipeline parameter values by name (types of the published defaults); the dataset parameter "
        "takes a dataset name, an http(s) URL, or a path inside a folder the workspace's owner allows",
    )
    DataPathAssignments: dict[str, Any] | None = Field(
        None, description="DataPath parameters; the local workspace has no datastores (400)"
    )
    DataSetDefinitionValueAssignments: dict[str, Any] | None = Field(
        None, description='dataset parameters: {"<param>": {"DataSetReference": {"Name": "<dataset name>"}}}'
    )
    Description: str | None = None
    DisplayName: str | None = None
    RunSource: str | None = None
    RunType: str | None = None
    tags: dict[str, Any] | None = None
    Properties: dict[str, Any] | None = None
    ContinueRunOnStepFailure: bool | None = None
    EnableNotification: bool | None = None


SUBMIT_FIELDS = frozenset(SubmitBody.model_fields)
# what _parse_body checks each optional field against (JSON types; null is always allowed)
FIELD_TYPES: dict[str, type] = {
    "ExperimentName": str, "ParameterAssignments": dict, "DataPathAssignments": dict,
    "DataSetDefinitionValueAssignments": dict, "Description": str, "DisplayName": str, "RunSource": str,
    "RunType": str, "tags": dict, "Properties": dict, "ContinueRunOnStepFailure": bool, "EnableNotification": bool,
}  # fmt: skip
assert set(FIELD_TYPES) == SUBMIT_FIELDS  # noqa: S101


class RunStatus(BaseModel):
    StatusCode: str = Field(description="NotStarted, Queued, Running, Completed, Failed or Canceled")
    StatusDetail: str = ""
    CreationTime: str = ""
    EndTime: str = ""


class PipelineRun(BaseModel):
    """Azure's PipelineRunEntity (the fields the local service fills in), plus ``RunUrl``."""

    Id: str
    Status: RunStatus
    Description: str = ""
    RunHistoryExperimentName: str = ""
    PipelineId: str = ""
    PipelineEndpointId: str = ""
    PipelineEndpointVersion: str = ""
    ScheduleId: str = ""
    RunType: str = ""
    ParameterAssignments: dict[str, str] = Field(default_factory=dict)
    TotalRunSteps: int = 0
    IsSubmitted: bool = True
    HasErrors: bool = False
    CreatedDate: str = ""
    LastModifiedDate: str = ""
    RunUrl: str = ""


class ErrorDetail(BaseModel):
    code: str = Field(
        description="UserError, Unauthorized, NotFound, PayloadTooLarge, ServiceUnavailable, ..."
    )
    message: str = Field(description="what was wrong and what to do")


class ErrorBody(BaseModel):
    """Every error answer, in Azure's shape."""

    error: ErrorDetail


ERROR_ANSWERS = {
    "400": "bad input: a body, path or query parameter breaks the rule named in error.message; nothing runs",
    "401": "no or wrong key (send 'Authorization: Bearer <key>'); nothing runs",
    "404": "no such endpoint, version, pipeline, run, log or service",
    "413": "the body is over the service's limit (1 MiB)",
    "503": "the service's key file is damaged, so no key can be checked (make new keys)",
}


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """The generated document with the error answers the service really gives (see the module docstring)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for name, model in (("ErrorBody", ErrorBody), ("ErrorDetail", ErrorDetail)):
        schemas[name] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas[name].pop("$defs", None)
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            answers.pop("422", None)
            codes = []
            if operation.get("parameters") or "requestBody" in operation:
                codes.append("400")
            if operation.get("security"):
                codes += ["401", "503"]
            if "{" in path:
                codes.append("404")
            if "requestBody" in operation:
                codes.append("413")
            for code in codes:
                answers[code] = {"description": ERROR_ANSWERS[code], "content": error_content}
    return spec
