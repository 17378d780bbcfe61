"""Schedules: ``/schedules`` lists them (the scheduler itself runs in the service's lifespan)."""

from __future__ import annotations

from fastapi import APIRouter

from pipelines.local.workspace import schedules
from pipelines.local.workspace.routes.dependencies import KEYED

router = APIRouter(tags=["schedules"], dependencies=KEYED)


@router.get("/schedules", summary="schedules")
def list_schedules() -> dict:
    return {"schedules": schedules.list_schedules()}
