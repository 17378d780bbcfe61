"""Runs: Azure's run routes (``GET .../PipelineRuns/{id}``, ``DELETE .../{id}/Execution``) and the local ``/runs``
routes (list, status, metrics, logs, cancel)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from pipelines.errors import UserError
from pipelines.local.runtime import runs
from pipelines.local.workspace import run_queue
from pipelines.local.workspace.api_schema import API_PREFIX, PipelineRun, RunId, StatusQuery, StepName
from pipelines.local.workspace.routes.dependencies import KEYED, Queue
from pipelines.local.workspace.routes.errors import ApiError

router = APIRouter(tags=["runs"], dependencies=KEYED)


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


def _cancel(run_id: str, queue: run_queue.RunQueue | None) -> dict[str, Any]:
    _record(run_id)
    try:
        status = run_queue.cancel(run_id)
    except UserError as exc:
        raise ApiError(400, exc.message) from None
    if queue is not None:
        queue.notify()
    return {"run_id": run_id, "status": status}


@router.get(f"{API_PREFIX}/{{run_id}}", response_model=PipelineRun,
            summary="a run in Azure's PipelineRunEntity shape")  # fmt: skip
def pipeline_run(run_id: RunId, request: Request) -> dict:
    return run_entity(_record(run_id), str(request.base_url))


@router.delete(f"{API_PREFIX}/{{run_id}}/Execution", summary="cancel a run (as Azure's route)")
def cancel_execution(run_id: RunId, queue: Queue) -> dict:
    return _cancel(run_id, queue)


@router.get("/runs", summary="list runs, newest first")
def list_runs(status: StatusQuery = None, limit: Annotated[int, Query(ge=1)] = 100) -> dict:
    found = [r for r in run_queue.list_runs() if status is None or r.get("status") == status]
    return {"runs": [run_view(r) for r in found[:limit]]}


@router.get("/runs/{run_id}", summary="a run: status, steps, metrics, error")
def get_run(run_id: RunId) -> dict:
    return run_view(_record(run_id))


@router.get("/runs/{run_id}/metrics", summary="a run's metrics")
def get_metrics(run_id: RunId) -> dict:
    record = _record(run_id)
    return {"run_id": run_id, "status": record.get("status"), "metrics": record.get("metrics") or {}}


@router.get("/runs/{run_id}/logs", summary="a run's logs (each step's, and the driver's)")
def get_logs(
    run_id: RunId, tail: Annotated[int, Query(ge=0, description="last lines of each log; 0: all")] = 200
) -> dict:
    _record(run_id)
    out = {}
    for name, path in _logs(run_id).items():
        lines = path.read_text(errors="replace").splitlines()
        out[name] = "\n".join(lines[-tail:] if tail > 0 else lines)
    return {"run_id": run_id, "logs": out}


@router.get(
    "/runs/{run_id}/logs/{step}", summary="one step's full log (text)", response_class=PlainTextResponse
)
def get_step_log(run_id: RunId, step: StepName) -> PlainTextResponse:
    _record(run_id)
    logs = _logs(run_id)
    if step not in logs:
        raise ApiError(404, f"run {run_id} has no log {step!r} (logs: {', '.join(logs) or 'none yet'})")
    return PlainTextResponse(logs[step].read_text(errors="replace"))


@router.post("/runs/{run_id}/cancel", summary="cancel a run")
def cancel_run(run_id: RunId, queue: Queue) -> dict:
    return _cancel(run_id, queue)
