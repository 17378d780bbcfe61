"""Schedules on Azure ML: create (recurrence or "new data arrived"), list, disable, enable, delete.

The start rule, shared with the local scheduler: a recurrence without ``start_time`` is given
``start_time`` = now, in the recurrence's time zone (UTC when none), rounded up to the next whole
minute, so creating a schedule never starts a run at once (Azure itself runs immediately on
``Schedule.create`` when ``start_time`` is unset). The first run is the first fire time at or after
that start: for ``Minute``/``Hour`` recurrences without ``hours``/``minutes`` that is the start time
itself (within a minute of creation); for ``Day``/``Week`` ones, the next matching ``hours:minutes``
(and ``week_days``). An explicit ``start_time`` is kept as given.

A datastore trigger (``datastore=...``) is Azure's "new data arrived" schedule: it polls an Azure
Blob datastore path every ``polling_interval`` minutes and submits a run for new or changed blobs.
SDK v1 cannot delete a schedule; ``delete`` disables it and says so.

Creating, updating, enabling and disabling wait for the service to provision the schedule (the SDK's own
wait, up to ``PROVISIONING_TIMEOUT_SECONDS``); a schedule whose provisioning failed is a one-line error.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from azureml.pipeline.core import Schedule, ScheduleRecurrence
from azureml.pipeline.core.schedule import TimeZone

from pipelines.definitions import recurrence_dict, zone_info
from pipelines.errors import UserError

PROVISIONING_TIMEOUT_SECONDS = 600


def validated(recurrence: Any) -> Any:
    """The recurrence after the SDK's own ``validate()``; a ValueError becomes a one-line UserError."""
    if not isinstance(recurrence, ScheduleRecurrence):
        raise UserError(
            f"not a ScheduleRecurrence: {recurrence!r}", hint="build one with ScheduleRecurrence(...)"
        )
    try:
        recurrence.validate()
    except (ValueError, TypeError) as exc:
        raise UserError(
            f"invalid schedule: {exc}", hint="see ScheduleRecurrence in the Azure ML SDK docs"
        ) from None
    return recurrence


def with_start_time(recurrence: Any, now: dt.datetime | None = None) -> Any:
    """A validated copy of ``recurrence`` with the start rule applied (see the module docstring)."""
    validated(recurrence)
    if recurrence.start_time is not None:
        return recurrence
    zone = zone_info(recurrence.time_zone)
    current = (now or dt.datetime.now(dt.UTC)).astimezone(zone).replace(tzinfo=None)
    start = current.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return validated(
        ScheduleRecurrence(
            frequency=recurrence.frequency,
            interval=recurrence.interval,
            start_time=start,
            time_zone=recurrence.time_zone or TimeZone.UTC,
            hours=recurrence.hours,
            minutes=recurrence.minutes,
            week_days=recurrence.week_days,
        )
    )


def create(
    workspace: Any,
    name: str,
    *,
    experiment_name: str,
    pipeline_id: str | None = None,
    pipeline_endpoint_id: str | None = None,
    recurrence: Any = None,
    datastore: Any = None,
    path_on_datastore: str | None = None,
    polling_interval: int = 5,
    data_path_parameter_name: str | None = None,
    pipeline_parameters: dict[str, Any] | None = None,
    description: str | None = None,
    now: dt.datetime | None = None,
) -> Any:
    """Create a time schedule (``recurrence``) or a new-data schedule (``datastore``) for a pipeline or endpoint."""
    if (pipeline_id is None) == (pipeline_endpoint_id is None):
        raise UserError(
            "give exactly one of pipeline_id and pipeline_endpoint_id", hint="schedule one target"
        )
    if (recurrence is None) == (datastore is None):
        raise UserError(
            "give exactly one of a recurrence and a datastore",
            hint="a recurrence runs on a timetable; a datastore runs when new data arrives",
        )
    kwargs: dict[str, Any] = {
        "experiment_name": experiment_name,
        "description": description,
        "pipeline_parameters": pipeline_parameters,
    }
    if recurrence is not None:
        if path_on_datastore or data_path_parameter_name:
            raise UserError(
                "path_on_datastore and data_path_parameter_name need a datastore trigger",
                hint="drop them, or pass datastore=... instead of a recurrence",
            )
        kwargs["recurrence"] = with_start_time(recurrence, now)
    else:
        if polling_interval < 1:
            raise UserError(
                f"polling_interval must be at least 1 minute, got {polling_interval}", hint="e.g. 5"
            )
        store = _datastore(workspace, datastore)
        kwargs.update(
            datastore=store,
            path_on_datastore=path_on_datastore,
            polling_interval=polling_interval,
            data_path_parameter_name=data_path_parameter_name,
        )
    try:
        if pipeline_endpoint_id is not None:
            schedule = Schedule.create_for_pipeline_endpoint(
                workspace, name=name, pipeline_endpoint_id=pipeline_endpoint_id, **kwargs
            )
        else:
            schedule = Schedule.create(workspace, name=name, pipeline_id=pipeline_id, **kwargs)
    except ValueError as exc:  # the SDK's own argument checks
        raise UserError(
            f"cannot create schedule {name!r}: {exc}", hint="check the schedule's arguments"
        ) from None
    except SystemError:  # the SDK's "Provisioning of schedule ... failed"
        raise _provisioning_failed(name, "Failed") from None
    return provisioned(schedule)


def provisioned(schedule: Any) -> Any:
    """``schedule`` once the service has provisioned it (the SDK's own wait); UserError if that failed."""
    status = schedule._wait_for_provisioning(timeout_seconds=PROVISIONING_TIMEOUT_SECONDS)
    if status != "Completed":
        raise _provisioning_failed(schedule.name, status)
    return schedule


def _provisioning_failed(name: str, status: str) -> UserError:
    return UserError(
        f"Azure ML could not provision schedule {name!r} (provisioning status {status})",
        hint="publish again; if it persists, list the schedules and check the workspace in the studio",
    )


def ensure_for_endpoint(
    workspace: Any, name: str, *, pipeline_endpoint_id: str, experiment_name: str, recurrence: Any,
    description: str | None = None, now: dt.datetime | None = None,
) -> tuple[Any, str]:  # fmt: skip
    """The endpoint's schedule ``name``: created; or updated if its recurrence changed, else kept.

    As the local backend does: one default schedule per endpoint, a changed recurrence gets a new start
    time by the start rule, and a disabled schedule stays disabled. Returns (schedule, action).
    """
    validated(recurrence)
    existing = [
        s for s in Schedule.list(workspace, pipeline_endpoint_id=pipeline_endpoint_id) if s.name == name
    ]
    if not existing:
        schedule = create(
            workspace, name, experiment_name=experiment_name, pipeline_endpoint_id=pipeline_endpoint_id,
            recurrence=recurrence, description=description, now=now,
        )  # fmt: skip
        return schedule, "created"
    schedule = existing[0]
    if schedule.recurrence is not None and _pattern(
        schedule.recurrence, recurrence.start_time is None
    ) == _pattern(recurrence, recurrence.start_time is None):
        return schedule, "kept"
    try:
        schedule.update(recurrence=with_start_time(recurrence, now), description=description)
    except ValueError as exc:  # e.g. a datastore schedule of the same name
        raise UserError(
            f"cannot update schedule {name!r}: {exc}", hint="disable it and publish again"
        ) from None
    except SystemError:  # the SDK's "Provisioning of schedule ... failed"
        raise _provisioning_failed(name, "Failed") from None
    return provisioned(schedule), "updated"


def _pattern(rec: Any, ignore_start: bool) -> tuple[Any, ...]:
    """What a recurrence fires on, for comparison (time zone None is UTC; start_time left out if asked)."""
    zone = rec.time_zone or TimeZone.UTC
    return (
        rec.frequency, rec.interval, rec.hours, rec.minutes, rec.week_days, getattr(zone, "value", zone),
        None if ignore_start else rec.start_time,
    )  # fmt: skip


def list_schedules(
    workspace: Any, *, active_only: bool = True, pipeline_id: str | None = None,
    pipeline_endpoint_id: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The workspace's schedules (optionally for one pipeline or endpoint) as plain dicts."""
    found = Schedule.list(
        workspace, active_only=active_only, pipeline_id=pipeline_id, pipeline_endpoint_id=pipeline_endpoint_id
    )
    return [describe(s) for s in found]


def disable(workspace: Any, schedule_id: str) -> dict[str, Any]:
    """Disable a schedule (no more runs until enabled)."""
    schedule = _get(workspace, schedule_id)
    schedule.disable(wait_for_provisioning=False)
    return describe(provisioned(schedule))


def enable(workspace: Any, schedule_id: str) -> dict[str, Any]:
    """Enable a disabled schedule."""
    schedule = _get(workspace, schedule_id)
    schedule.enable(wait_for_provisioning=False)
    return describe(provisioned(schedule))


def delete(workspace: Any, schedule_id: str) -> dict[str, Any]:
    """Azure ML SDK v1 has no schedule deletion: disable the schedule and say so."""
    out = disable(workspace, schedule_id)
    out["note"] = "Azure ML (SDK v1) cannot delete schedules; it was disabled instead"
    return out


def describe(schedule: Any) -> dict[str, Any]:
    """A schedule as a JSON-able dict (recurrence fields as Azure holds them)."""
    rec = schedule.recurrence
    return {
        "target": "azure",
        "id": schedule.id,
        "name": schedule.name,
        "description": schedule.description,
        "status": schedule.status,
        "pipeline_id": schedule.pipeline_id,
        "pipeline_endpoint_id": schedule.pipeline_endpoint_id,
        "recurrence": recurrence_dict(rec),
        "datastore": schedule.datastore_name,
        "path_on_datastore": schedule.path_on_datastore,
        "polling_interval": schedule.polling_interval if rec is None else None,
    }


def is_not_found(exc: BaseException) -> bool:
    """Whether a service error is an HTTP 404 (the SDK raises msrest errors carrying the response)."""
    return getattr(getattr(exc, "response", None), "status_code", None) == 404


def _get(workspace: Any, schedule_id: str) -> Any:
    try:
        schedule = Schedule.get(workspace, schedule_id)
    except Exception as exc:
        if not is_not_found(exc):
            raise
        schedule = None
    if schedule is None:
        raise UserError(
            f"no schedule {schedule_id!r} in the workspace", hint="list schedules to see their ids"
        )
    return schedule


def _datastore(workspace: Any, datastore: Any) -> Any:
    """An Azure Blob datastore object from a name or the object itself (schedules can watch only blobs)."""
    if isinstance(datastore, str):
        from azureml.core import Datastore

        datastore = Datastore.get(workspace, datastore)
    if getattr(datastore, "datastore_type", None) != "AzureBlob":
        raise UserError(
            f"datastore {getattr(datastore, 'name', datastore)!r} is not an Azure Blob datastore",
            hint="new-data schedules can only watch AzureBlobDatastore paths",
        )
    return datastore
