"""Pieces shared by the pipeline builders: environments, run configurations, the dataset input, schedules."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.settings import PROJECT_ROOT, Settings

ENVIRONMENTS_DIR = PROJECT_ROOT / "environments"
STEPS_DIR = PROJECT_ROOT / "steps"
SCORING_DIR = PROJECT_ROOT / "scoring"
LOCAL_PLACEHOLDER = "https://local.invalid/"  # the dataset URL of a local file (local engine only)


@cache
def environment(name: str) -> Any:
    """The Azure ML Environment built from ``environments/<name>.yml`` (named ``amlops-<name>``)."""
    from azureml.core import Environment

    path = ENVIRONMENTS_DIR / f"{name}.yml"
    return Environment.from_conda_specification(f"amlops-{name}", str(path))


def run_config(env_name: str) -> Any:
    from azureml.core.runconfig import RunConfiguration

    config = RunConfiguration()
    config.environment = environment(env_name)
    return config


# Azure AutoML's curated environment: the AutoML runtime (and MLflow) that Azure AutoML's models need to load
AZURE_AUTOML_ENVIRONMENT = "AzureML-AutoML"


def workspace_run_config(workspace: Any, env_name: str) -> Any:
    """A run configuration using the workspace's Environment ``env_name`` (e.g. a curated one; a look-up)."""
    from azureml.core import Environment
    from azureml.core.runconfig import RunConfiguration

    config = RunConfiguration()
    config.environment = Environment.get(workspace, env_name)
    return config


def dataset_input(name: str, ref: str, param_name: str) -> Any:
    """A FileDataset input (downloaded on the compute) that REST callers can swap via a PipelineParameter.

    ``ref`` is a dataset name known to pipelines.datasets or an http(s) URL; local files are bound by
    the local engine instead (they are not reachable from Azure).
    """
    from azureml.core import Dataset
    from azureml.data.dataset_consumption_config import DatasetConsumptionConfig
    from azureml.pipeline.core import PipelineParameter

    dataset = Dataset.File.from_files(dataset_url(ref), validate=False)
    return DatasetConsumptionConfig(name, PipelineParameter(param_name, default_value=dataset)).as_download()


def dataset_url(ref: str) -> str:
    """The URL an SDK Dataset is built from: the ref itself, a known dataset's public URL, or a file URI.

    A local file becomes a placeholder URL (``LOCAL_PLACEHOLDER`` + its name) that only the local
    engine understands (it binds the real path); the Azure backend refuses to publish it. Called before an
    SDK Dataset is built, it also keeps the SDK's own log of that in the workspace.
    """
    from pipelines.core.v1_reader import keep_sdk_logs_in_workspace
    from pipelines.datasets import KNOWN
    from pipelines.settings import amlops_home

    keep_sdk_logs_in_workspace(amlops_home())

    if ref.startswith(("http://", "https://")):
        return ref
    if ref in KNOWN:
        return KNOWN[ref].url
    return LOCAL_PLACEHOLDER + Path(ref).name


def recurrence(settings: Settings) -> Any:
    """The default ScheduleRecurrence from settings, validated by the SDK itself."""
    from azureml.pipeline.core.schedule import ScheduleRecurrence, TimeZone

    def ints(text: str) -> list[int] | None:
        return [int(x) for x in text.split(",") if x.strip()] or None

    try:
        zone = TimeZone[settings.schedule_time_zone] if settings.schedule_time_zone else None
    except KeyError:
        raise UserError(
            f"unknown schedule_time_zone {settings.schedule_time_zone!r}",
            hint="use a name of azureml.pipeline.core.schedule.TimeZone, e.g. UTC",
        ) from None
    try:
        rec = ScheduleRecurrence(
            frequency=settings.schedule_frequency,
            interval=settings.schedule_interval,
            hours=ints(settings.schedule_hours),
            minutes=ints(settings.schedule_minutes),
            week_days=[d.strip() for d in settings.schedule_week_days.split(",") if d.strip()] or None,
            time_zone=zone,
        )
        rec.validate()
    except ValueError as exc:
        raise UserError(
            f"invalid schedule: {exc}", hint="see ScheduleRecurrence in the Azure ML SDK docs"
        ) from None
    return rec


def recurrence_dict(rec: Any) -> dict[str, Any] | None:
    """A ScheduleRecurrence as plain JSON-able fields (None stays None)."""
    if rec is None:
        return None
    zone = getattr(rec, "time_zone", None)
    return {
        "frequency": rec.frequency,
        "interval": rec.interval,
        "start_time": rec.start_time,
        "time_zone": getattr(zone, "value", zone),
        "hours": rec.hours,
        "minutes": rec.minutes,
        "week_days": rec.week_days,
    }


# Windows time zone ids (azureml TimeZone values) that tzlocal's table does not list
_EXTRA_ZONES = {"Mid-Atlantic Standard Time": "Etc/GMT+2", "Kamchatka Standard Time": "Asia/Kamchatka"}


def zone_info(time_zone: Any) -> Any:
    """The tzinfo of an azureml ``TimeZone`` (None means UTC, as Azure reads it)."""
    import datetime as dt
    import zoneinfo

    from azureml.pipeline.core.schedule import TimeZone
    from tzlocal.windows_tz import win_tz

    if time_zone is None or time_zone == TimeZone.UTC:
        return dt.UTC
    windows_id = time_zone.value if isinstance(time_zone, TimeZone) else str(time_zone)
    iana = win_tz.get(windows_id) or _EXTRA_ZONES.get(windows_id)
    if iana is None:
        raise UserError(f"no IANA zone known for time zone {windows_id!r}", hint="use another TimeZone")
    return zoneinfo.ZoneInfo(iana)
