"""The local workspace service: published pipelines over HTTP with Azure's request shape, schedules, the run queue,
and the keeper of local real-time deployments (listed at ``/deployments``; started again when they should run).

FastAPI on 127.0.0.1 (uvicorn). Every route except ``/health``, ``/openapi.json`` and the offline Swagger
UI at ``/docs`` needs ``Authorization: Bearer <key>`` (``python -m pipelines.workspace keys``); keys are
read from ``AMLOPS_HOME/service/keys.json`` on every request, so a regenerated key works (and the old
one stops working) at once. Errors are JSON in Azure's shape: ``{"error": {"code", "message"}}``.

Submitting (``POST`` to an endpoint URL, ``<endpoint URL>/<version>`` or a published pipeline URL)
validates everything first (key, JSON, field names, parameter names and types, dataset references);
a request that fails gets 400/401/404/413 and queues nothing. A valid one is queued (run_queue) and
answered at once with the run ``Id`` and ``Status.StatusCode`` ``Queued``. The data it may name is what
data_access allows; ids in URLs follow api_schema's rules (else 400), and ``/openapi.json`` lists every
answer a route gives. No key and no query string's values reach the service's log (keys.keep_keys_out_of_logs).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines import service_logging
from pipelines.errors import UserError
from pipelines.local.runtime import runs
from pipelines.local.serving import deployments
from pipelines.local.workspace import api_schema, publishing, run_queue, schedules
from pipelines.local.workspace.api_schema import (
    SUBMIT_FIELDS,
    DeploymentName,
    EndpointId,
    PipelineId,
    PipelineRun,
    RunId,
    StatusQuery,
    StepName,
    SubmitBody,
    Version,
    VersionQuery,
)
from pipelines.local.workspace.data_access import DataAccess
from pipelines.local.workspace.keys import KeyStore, keep_keys_out_of_logs, workspace_key_files
from pipelines.local.workspace.service_info import read_service_info, service_dir, write_service_info
from pipelines.settings import amlops_home

LOG = service_logging.get("service")

API_PREFIX = "/pipelines/v1.0/PipelineRuns"
MAX_BODY_BYTES = 1 << 20
EXPERIMENT_NAME = re.compile(api_schema.EXPERIMENT_NAME)
DEFAULT_PORT = 8765
KEEPER_SECONDS = 5.0  # how often the deployment keeper looks for services to start again


class ApiError(Exception):
    """An HTTP error answered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or {
            400: "UserError",
            401: "Unauthorized",
            404: "NotFound",
            413: "PayloadTooLarge",
            503: "ServiceUnavailable",
        }.get(status, "Error")


# ---- helpers ---------------------------------------------------------------------------------------
def key_store() -> KeyStore:
    """The workspace service's keys."""
    return KeyStore(
        amlops_home() / "service" / "keys.json", "python -m pipelines.workspace keys --regen primary"
    )


_bearer = HTTPBearer(auto_error=False, description="a key from: python -m pipelines.workspace keys --primary")


def require_key(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless ``Authorization: Bearer <primary or secondary key>`` (keys read per request)."""
    try:
        valid = key_store().check_authorization_header(request.headers.get("authorization"))
    except UserError as exc:  # no key can be checked until the keys are made again
        raise ApiError(503, f"the workspace service's {exc}") from None
    if not valid:
        raise ApiError(401, "missing or invalid key: send 'Authorization: Bearer <key>' "
                            "(python -m pipelines.workspace keys --primary)")  # fmt: skip


def run_entity(record: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A run record in the shape of Azure's PipelineRunEntity."""
    error = record.get("error") or {}
    params = record.get("parameters") or {}
    version = record.get("endpoint_version")
    return {
        "Id": record["run_id"],
        "Status": {
            "StatusCode": record.get("status", "NotStarted"),
            "StatusDetail": str(error.get("message") or ""),
            "CreationTime": record.get("created") or "",
            "EndTime": record.get("ended") or "",
        },
        "Description": record.get("pipeline", ""),
        "RunHistoryExperimentName": record.get("experiment") or "",
        "PipelineId": record.get("published_pipeline_id") or "",
        "PipelineEndpointId": record.get("endpoint_id") or "",
        "PipelineEndpointVersion": "" if version is None else str(version),  # versions start at 0
        "ScheduleId": record.get("schedule_id") or "",
        "RunType": "Schedule" if record.get("schedule_id") else "HTTP",
        "ParameterAssignments": {k: str(v) for k, v in params.items()},
        "TotalRunSteps": len(record.get("steps") or []),
        "IsSubmitted": True,
        "HasErrors": record.get("status") == "Failed",
        "CreatedDate": record.get("created") or "",
        "LastModifiedDate": record.get("ended") or record.get("started") or record.get("created") or "",
        "RunUrl": f"{base_url.rstrip('/')}/runs/{record['run_id']}",
    }


def run_view(record: dict[str, Any]) -> dict[str, Any]:
    """The local run view (``GET /runs/{id}``): status, steps, metrics, error, schedule."""
    keys = ("run_id", "status", "pipeline", "experiment", "created", "started", "ended", "parameters",
            "metrics", "error", "schedule_id", "due_time", "endpoint_id", "endpoint_version",
            "published_pipeline_id", "submitted_by")  # fmt: skip
    out = {k: record.get(k) for k in keys}
    out["steps"] = [
        {k: s.get(k) for k in ("name", "kind", "status", "started", "ended", "seconds")}
        for s in record.get("steps") or []
    ]
    return out


def _parse_body(raw: bytes) -> dict[str, Any]:
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


def _dataset_assignment(published: dict[str, Any], body: dict[str, Any]) -> str | None:
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
        if not isinstance(value, dict):
            raise ApiError(400, f"DataSetDefinitionValueAssignments[{name!r}] must be an object")
        reference = value.get("DataSetReference")
        if isinstance(reference, dict) and isinstance(reference.get("Name"), str) and reference["Name"]:
            version = reference.get("Version")
            if version not in (None, "", "latest", "1", 1):
                raise ApiError(400, f"dataset {reference['Name']!r} version {version!r}: local datasets have "
                                    "one version (use \"latest\" or leave it out)")  # fmt: skip
            ref = reference["Name"]
        elif "SavedDataSetReference" in value:
            raise ApiError(400, f"DataSetDefinitionValueAssignments[{name!r}]: SavedDataSetReference ids are "
                                'Azure dataset ids; locally use {"DataSetReference": {"Name": "<dataset name>"}}')  # fmt: skip
        else:
            raise ApiError(400, f"DataSetDefinitionValueAssignments[{name!r}] needs "
                                '{"DataSetReference": {"Name": "<dataset name>"}}')  # fmt: skip
    return ref


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


def _submit(published: dict[str, Any], body: dict[str, Any], app: FastAPI, base_url: str) -> dict[str, Any]:
    dataset = _dataset_assignment(published, body)
    try:
        sub = run_queue.prepare(
            published,
            experiment_name=body.get("ExperimentName"),
            parameters=body.get("ParameterAssignments") or {},
            dataset=dataset,
            extra={"submitted_by": "rest"},
            data_access=app.state.data_access,
        )
    except UserError as exc:
        raise ApiError(400, str(exc)) from None
    record = run_queue.submit(sub)
    queue = getattr(app.state, "queue", None)
    if queue is not None:
        queue.notify()
    return run_entity(record, base_url)


def _record(run_id: str) -> dict[str, Any]:
    try:
        return run_queue.read_run(run_id)
    except UserError as exc:
        raise ApiError(404, exc.message) from None


def _logs(run_id: str) -> dict[str, Path]:
    folder = runs.run_folder(run_id)
    found = {p.stem: p for p in sorted((folder / "logs").glob("*.log"))}
    driver = run_queue.driver_log(run_id)
    if driver.is_file():
        found["driver"] = driver
    return found


# ---- the app -----------------------------------------------------------------------------------------
def create_app(
    workers: int = 2,
    background: bool = True,
    tick_seconds: float = 1.0,
    data_access: DataAccess | None = None,
) -> FastAPI:
    """The service app; ``background`` starts the run queue and the scheduler (and takes the service lock).

    ``data_access`` says what data REST callers may name (default: AMLOPS_ALLOW_DATA's folders).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        key_store().keys()  # generate on first start
        if background:
            queue = run_queue.RunQueue(workers)
            app.state.queue = queue
            queue.start()

            def fire() -> None:
                if schedules.fire_due():
                    queue.notify()

            clocks = [
                schedules.Ticker("scheduler", fire, tick_seconds),
                schedules.Ticker("deployments", revive_deployments, KEEPER_SECONDS),
            ]
            for clock in clocks:
                clock.start()
            try:
                yield
            finally:
                for clock in clocks:
                    clock.stop()
                queue.stop()
        else:
            app.state.queue = None
            yield

    app = FastAPI(
        title="amlops local workspace service",
        version="1.0",
        description=(
            "Published pipelines of the local workspace over HTTP, with Azure ML's request and response "
            "shapes (PipelineSubmissionInfo in, PipelineRunEntity out). Authorize with a key from "
            "`python -m pipelines.workspace keys --primary`."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.openapi_version = "3.0.3"  # the bundled Swagger UI (4.x) renders OpenAPI 3.0, not 3.1
    app.state.data_access = data_access or DataAccess.from_folders([])
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api_schema.document_errors(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}}, exc.status, headers=headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # routing's own answers (404, 405 with its Allow header) keep their headers
        return JSONResponse({"error": {"code": "NotFound" if exc.status_code == 404 else "Error",
                                       "message": str(exc.detail)}}, exc.status_code, headers=exc.headers)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = " ".join(str(p) for p in first.get("loc", ()))  # e.g. "path run_id"
        message = f"{where}: {first.get('msg', 'invalid')}"
        return JSONResponse({"error": {"code": "UserError", "message": message[:300]}}, 400)

    ui_dir = swagger_ui_folder()
    app.mount("/docs/assets", StaticFiles(directory=ui_dir), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="amlops local workspace service",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    @app.get("/health", tags=["service"], summary="liveness (no key needed)")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    submit_doc = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": SubmitBody.model_json_schema(ref_template="#/components/schemas/{model}")}}}}  # fmt: skip

    async def _read(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:  # refuse before reading it
            raise ApiError(413, f"request body is over the limit of {MAX_BODY_BYTES} bytes")
        return _parse_body(await request.body())

    @app.post(
        f"{API_PREFIX}/PipelineEndpointSubmit/Id/{{endpoint_id}}", tags=["submit"], response_model=PipelineRun,
        summary="run the endpoint's default version (or ?pipelineVersion=N)", openapi_extra=submit_doc,
        dependencies=[Depends(require_key)],
    )  # fmt: skip
    async def submit_endpoint(
        endpoint_id: EndpointId,
        request: Request,
        pipelineVersion: VersionQuery = None,  # noqa: N803
    ) -> dict:
        body = await _read(request)
        published = await run_in_threadpool(_lookup, "endpoint", endpoint_id, pipelineVersion)
        return await run_in_threadpool(_submit, published, body, request.app, str(request.base_url))

    @app.post(
        f"{API_PREFIX}/PipelineEndpointSubmit/Id/{{endpoint_id}}/{{version}}", tags=["submit"],
        response_model=PipelineRun, summary="run one version of the endpoint", openapi_extra=submit_doc,
        dependencies=[Depends(require_key)],
    )  # fmt: skip
    async def submit_endpoint_version(endpoint_id: EndpointId, version: Version, request: Request) -> dict:
        also = request.query_params.get("pipelineVersion")  # not documented here: the URL says the version
        if also is not None and (not re.fullmatch(api_schema.VERSION, also) or int(also) != int(version)):
            raise ApiError(400, f"the URL names version {version} but pipelineVersion={also[:20]}")
        body = await _read(request)
        published = await run_in_threadpool(_lookup, "endpoint", endpoint_id, version)
        return await run_in_threadpool(_submit, published, body, request.app, str(request.base_url))

    @app.post(
        f"{API_PREFIX}/PipelineSubmit/{{pipeline_id}}", tags=["submit"], response_model=PipelineRun,
        summary="run a published pipeline", openapi_extra=submit_doc,
        dependencies=[Depends(require_key)],
    )  # fmt: skip
    async def submit_pipeline(pipeline_id: PipelineId, request: Request) -> dict:
        body = await _read(request)
        published = await run_in_threadpool(_lookup, "pipeline", pipeline_id)
        return await run_in_threadpool(_submit, published, body, request.app, str(request.base_url))

    @app.get(f"{API_PREFIX}/{{run_id}}", tags=["runs"], response_model=PipelineRun,
             summary="a run in Azure's PipelineRunEntity shape", dependencies=[Depends(require_key)])  # fmt: skip
    def pipeline_run(run_id: RunId, request: Request) -> dict:
        return run_entity(_record(run_id), str(request.base_url))

    @app.delete(f"{API_PREFIX}/{{run_id}}/Execution", tags=["runs"], summary="cancel a run (as Azure's route)",
                dependencies=[Depends(require_key)])  # fmt: skip
    def cancel_execution(run_id: RunId, request: Request) -> dict:
        return _cancel(run_id, request.app)

    @app.get("/runs", tags=["runs"], summary="list runs, newest first", dependencies=[Depends(require_key)])
    def list_runs(status: StatusQuery = None, limit: Annotated[int, Query(ge=1)] = 100) -> dict:
        found = [r for r in run_queue.list_runs() if status is None or r.get("status") == status]
        return {"runs": [run_view(r) for r in found[:limit]]}

    @app.get("/runs/{run_id}", tags=["runs"], summary="a run: status, steps, metrics, error",
             dependencies=[Depends(require_key)])  # fmt: skip
    def get_run(run_id: RunId) -> dict:
        return run_view(_record(run_id))

    @app.get(
        "/runs/{run_id}/metrics",
        tags=["runs"],
        summary="a run's metrics",
        dependencies=[Depends(require_key)],
    )
    def get_metrics(run_id: RunId) -> dict:
        record = _record(run_id)
        return {"run_id": run_id, "status": record.get("status"), "metrics": record.get("metrics") or {}}

    @app.get("/runs/{run_id}/logs", tags=["runs"], summary="a run's logs (each step's, and the driver's)",
             dependencies=[Depends(require_key)])  # fmt: skip
    def get_logs(
        run_id: RunId, tail: Annotated[int, Query(ge=0, description="last lines of each log; 0: all")] = 200
    ) -> dict:
        _record(run_id)
        out = {}
        for name, path in _logs(run_id).items():
            lines = path.read_text(errors="replace").splitlines()
            out[name] = "\n".join(lines[-tail:] if tail > 0 else lines)
        return {"run_id": run_id, "logs": out}

    @app.get("/runs/{run_id}/logs/{step}", tags=["runs"], summary="one step's full log (text)",
             response_class=PlainTextResponse, dependencies=[Depends(require_key)])  # fmt: skip
    def get_step_log(run_id: RunId, step: StepName) -> PlainTextResponse:
        _record(run_id)
        logs = _logs(run_id)
        if step not in logs:
            raise ApiError(404, f"run {run_id} has no log {step!r} (logs: {', '.join(logs) or 'none yet'})")
        return PlainTextResponse(logs[step].read_text(errors="replace"))

    @app.post(
        "/runs/{run_id}/cancel", tags=["runs"], summary="cancel a run", dependencies=[Depends(require_key)]
    )
    def cancel_run(run_id: RunId, request: Request) -> dict:
        return _cancel(run_id, request.app)

    @app.get("/endpoints", tags=["publishing"], summary="pipeline endpoints and their versions",
             dependencies=[Depends(require_key)])  # fmt: skip
    def list_endpoints() -> dict:
        return {"endpoints": endpoints_view()}

    @app.get("/schedules", tags=["schedules"], summary="schedules", dependencies=[Depends(require_key)])
    def list_schedules() -> dict:
        return {"schedules": schedules.list_schedules()}

    @app.get("/deployments", tags=["deployments"], summary="local real-time services: state, model and URIs",
             dependencies=[Depends(require_key)])  # fmt: skip
    def list_deployments() -> dict:
        return {"deployments": [deployment_view(s) for s in deployments.list_services()]}

    @app.get("/deployments/{name}", tags=["deployments"], summary="one local real-time service",
             dependencies=[Depends(require_key)])  # fmt: skip
    def get_deployment(name: DeploymentName) -> dict:
        try:
            return deployment_view(deployments.load(name))
        except UserError as exc:
            raise ApiError(404, exc.message) from None

    return app


def deployment_view(service: deployments.LocalService) -> dict[str, Any]:
    """What other systems need to call a local service (never its keys: ``python -m pipelines.deploy keys``)."""
    shown = ("name", "model", "state", "restarts", "message", "scoring_uri", "swagger_uri", "swagger_ui_uri",
             "health_uri", "workers", "app_insights", "max_body_bytes", "scoring_timeout_ms", "created", "updated")  # fmt: skip
    info = service.describe()
    return {key: info.get(key) for key in shown}


def revive_deployments() -> None:
    """Start again the local services that should be running (after the machine restarted, say)."""
    for name in deployments.revive_all():
        LOG.info("deployments: started %s again (it should be running)", name)


def _cancel(run_id: str, app: FastAPI) -> dict[str, Any]:
    _record(run_id)
    try:
        status = run_queue.cancel(run_id)
    except UserError as exc:
        raise ApiError(400, exc.message) from None
    queue = getattr(app.state, "queue", None)
    if queue is not None:
        queue.notify()
    return {"run_id": run_id, "status": status}


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


def swagger_ui_folder() -> Path:
    """Swagger UI's static files, from the swagger-ui-bundle package (served offline)."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


class ServiceLock:
    """An exclusive lock on ``AMLOPS_HOME/service/service.lock``: one service per workspace folder."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def close(self) -> None:
        try:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
        finally:
            self.fh.close()


def acquire_lock() -> ServiceLock:
    """Take the service lock (released by the kernel even on SIGKILL); UserError if another service holds it."""
    fh = open(service_dir() / "service.lock", "a+")  # noqa: SIM115 - held for the service's life
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        info = read_service_info() or {}
        raise UserError(
            f"a workspace service is already running for {amlops_home()}"
            + (f" (pid {info.get('pid')}, {info.get('url')})" if info else ""),
            hint="stop it first, or use another AMLOPS_HOME",
        ) from None
    return ServiceLock(fh)


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 2,
    tick_seconds: float = 1.0,
    as_json: bool = False,
    data_access: DataAccess | None = None,
) -> None:
    """Run the service in the foreground until interrupted (port 0: any free port, see ``status``).

    ``data_access``: what data REST callers may name (default: only dataset names and URLs, and the folders in
    AMLOPS_ALLOW_DATA). No key of the workspace and no query string's values reach its log."""
    import socket

    import uvicorn

    log_level = service_logging.configure()
    home = amlops_home()
    keep_keys_out_of_logs(lambda: workspace_key_files(home))
    data_access = data_access or DataAccess.from_folders([])
    lock = acquire_lock()
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            in_use = exc.errno == errno.EADDRINUSE
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                hint="pick another --port"
                if in_use
                else "pass --host 127.0.0.1 or an address of this machine",
            ) from None
        port = sock.getsockname()[1]
        os.environ["AMLOPS_SERVICE_URL"] = f"http://{host}:{port}"  # the URLs this service prints and answers
        app = create_app(workers=workers, background=True, tick_seconds=tick_seconds, data_access=data_access)
        write_service_info(host, port, workers)
        if as_json:  # one line on stdout a script can read the URL from
            print(
                json.dumps({"url": f"http://{host}:{port}", "pid": os.getpid(), "workers": workers}),
                flush=True,
            )
        print(
            f"workspace {amlops_home()}: serving on http://{host}:{port} with {workers} run workers"
            " (Swagger UI: /docs; key: python -m pipelines.workspace keys --primary)",
            file=sys.stderr,
            flush=True,
        )
        allowed = ", ".join(str(f) for f in data_access.allowed) or "none (--allow-data DIR adds one)"
        print(
            f"data REST callers may name: dataset names, http(s) URLs, and paths in these folders: {allowed}",
            file=sys.stderr,
            flush=True,
        )
        config = uvicorn.Config(  # uvicorn's loggers go through service_logging's timestamped handler
            app, host=host, port=port, log_config=None, log_level=logging.getLevelName(log_level).lower(),
            access_log=True, timeout_graceful_shutdown=5,
        )  # fmt: skip
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            (service_dir() / "service.json").unlink(missing_ok=True)
    finally:
        lock.close()
