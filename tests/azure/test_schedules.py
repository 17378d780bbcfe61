"""Azure schedules offline: the start rule, the SDK's recurrence validation, time and new-data triggers.

The service is faked where the SDK goes on the wire (``tests/azure/fake.py``): the real
``Schedule.create``/``create_for_pipeline_endpoint``/``list``/``get``/``enable``/``disable`` and the SDK's
schedule provider run, and the request bodies they send are recorded.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from azureml.pipeline.core import Schedule, ScheduleRecurrence
from azureml.pipeline.core.schedule import TimeZone

from pipelines.azure import schedules
from pipelines.errors import UserError
from tests.azure.fake import FakeAzureML, configured_fake

pytestmark = pytest.mark.slow  # services, the SDK's graph builder or the package index

NOW = dt.datetime(2026, 3, 10, 12, 34, 56, 500000, tzinfo=dt.UTC)


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeAzureML:
    """The fake Azure ML service behind a configured workspace."""
    return configured_fake(monkeypatch, tmp_path)


@pytest.fixture
def ws(azure: FakeAzureML) -> Any:
    """The configured (real, offline) Workspace."""
    from pipelines.azure.workspace import get_workspace

    return get_workspace()


def creates(azure: FakeAzureML) -> list[dict[str, Any]]:
    return [row for name, row in azure.calls if name == "schedule.create"]


def status_updates(azure: FakeAzureML) -> list[tuple[str, str]]:
    """(schedule id, status) of each schedule update body sent (enable/disable send the whole schedule)."""
    return [(body["id"], body["status"]) for name, body in azure.calls if name == "schedule.update"]


def test_start_rule_rounds_now_up_to_the_next_whole_minute_in_utc():
    rec = ScheduleRecurrence(frequency="Hour", interval=2)
    out = schedules.with_start_time(rec, now=NOW)
    assert out.start_time == "2026-03-10T12:35:00" and out.time_zone == TimeZone.UTC
    assert (out.frequency, out.interval, out.hours, out.minutes, out.week_days) == (
        "Hour",
        2,
        None,
        None,
        None,
    )
    assert rec.start_time is None  # the given recurrence is not changed
    # exactly on a minute: the next minute, never "now"
    on_minute = schedules.with_start_time(rec, now=dt.datetime(2026, 3, 10, 12, 35, tzinfo=dt.UTC))
    assert on_minute.start_time == "2026-03-10T12:36:00"


def test_start_rule_uses_the_recurrences_time_zone():
    rec = ScheduleRecurrence(
        frequency="Week", interval=1, week_days=["Monday"], hours=[3], minutes=[0],
        time_zone=TimeZone.PacificStandardTime,
    )  # fmt: skip
    out = schedules.with_start_time(rec, now=dt.datetime(2026, 1, 15, 20, 0, 30, tzinfo=dt.UTC))
    assert out.start_time == "2026-01-15T12:01:00"  # 20:00:30 UTC is 12:00:30 PST
    assert out.time_zone == TimeZone.PacificStandardTime
    assert (out.week_days, out.hours, out.minutes) == (["Monday"], [3], [0])
    summer = schedules.with_start_time(rec, now=dt.datetime(2026, 7, 15, 20, 0, 30, tzinfo=dt.UTC))
    assert summer.start_time == "2026-07-15T13:01:00"  # PDT


def test_an_explicit_start_time_is_kept():
    rec = ScheduleRecurrence(
        frequency="Day", interval=1, start_time="2030-01-01T06:00:00", hours=[6], minutes=[0]
    )
    assert schedules.with_start_time(rec, now=NOW) is rec
    assert rec.start_time == "2030-01-01T06:00:00"


def test_every_azure_time_zone_maps_to_a_real_zone():
    offsets = {zone: dt.datetime(2026, 1, 1, tzinfo=dt.UTC).astimezone(schedules.zone_info(zone)).utcoffset()
               for zone in TimeZone}  # fmt: skip
    assert len(offsets) == len(list(TimeZone)) == 131
    assert offsets[TimeZone.UTC] == dt.timedelta(0)
    assert offsets[TimeZone.TokyoStandardTime] == dt.timedelta(hours=9)
    assert offsets[TimeZone.IndiaStandardTime] == dt.timedelta(hours=5, minutes=30)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frequency": "Hourly", "interval": 1}, "Invalid value for frequency"),
        ({"frequency": "Hour", "interval": 0}, "Interval must be an integer greater than 0"),
        ({"frequency": "Day", "interval": 1, "hours": [25]}, "Hours must be between 0 and 23"),
        (
            {"frequency": "Hour", "interval": 1, "hours": [3]},
            "Can only specify hours if frequency is Week or Day",
        ),
        ({"frequency": "Week", "interval": 1, "week_days": ["Mon"]}, "Week days must be a list of str"),
    ],
)
def test_invalid_recurrences_get_the_sdks_message_and_nothing_is_created(ws, azure, kwargs, message):
    rec = ScheduleRecurrence(**kwargs)
    with pytest.raises(UserError, match="invalid schedule: " + message) as err:
        schedules.create(ws, "bad", experiment_name="e", pipeline_id="pp-1", recurrence=rec)
    assert "\n" not in str(err.value)
    assert creates(azure) == []


def test_invalid_recurrence_from_the_cli_exits_2(capsys):
    from pipelines import train

    assert train.main(["show", "--set", "schedule_frequency=Hourly"]) == 2
    assert "invalid schedule: Invalid value for frequency" in capsys.readouterr().err


def test_create_a_time_schedule_for_a_published_pipeline(ws, azure):
    rec = ScheduleRecurrence(frequency="Day", interval=1, hours=[6], minutes=[15], time_zone=TimeZone.UTC)
    sched = schedules.create(
        ws, "nightly", experiment_name="bike-demand-train", pipeline_id="pp-7", recurrence=rec,
        pipeline_parameters={"cutoff_date": "2012-06-30"}, description="nightly retrain", now=NOW,
    )  # fmt: skip
    assert isinstance(sched, Schedule) and sched.status == "Active"
    [row] = creates(azure)
    assert row["name"] == "nightly" and row["experiment_name"] == "bike-demand-train"
    assert row["pipeline_id"] == "pp-7" and row["pipeline_endpoint_id"] is None
    assert row["pipeline_parameters"] == {"cutoff_date": "2012-06-30"}
    sent = row["recurrence"]
    assert (sent.frequency, sent.interval, sent.hours, sent.minutes) == ("Day", 1, [6], [15])
    assert sent.start_time == "2026-03-10T12:35:00" and sent.time_zone == TimeZone.UTC
    assert row["datastore_name"] is None and row["description"] == "nightly retrain"
    out = schedules.describe(sched)
    assert (
        out["recurrence"]["start_time"] == "2026-03-10T12:35:00" and out["recurrence"]["time_zone"] == "UTC"
    )


def test_create_a_new_data_schedule_on_a_blob_datastore(ws, azure):
    from azureml.data.azure_storage_datastore import AzureBlobDatastore

    azure.datastores["landing"] = AzureBlobDatastore(ws, "landing", "incoming", "acct", account_key="k")
    sched = schedules.create(
        ws, "on-new-data", experiment_name="bike-demand-batch", pipeline_endpoint_id="pe-3",
        datastore="landing", path_on_datastore="bike/daily", polling_interval=15,
        data_path_parameter_name="input_path",
    )  # fmt: skip
    [row] = creates(azure)
    assert row["recurrence"] is None
    assert (row["datastore_name"], row["path_on_datastore"], row["polling_interval"]) == (
        "landing",
        "bike/daily",
        15,
    )
    assert row["data_path_parameter_name"] == "input_path"
    assert row["pipeline_endpoint_id"] == "pe-3" and row["pipeline_id"] is None
    assert ("datastore.get", "landing") in azure.calls
    out = schedules.describe(sched)
    assert out["recurrence"] is None and out["datastore"] == "landing" and out["polling_interval"] == 15


def test_cli_creates_a_new_data_schedule_on_azure_and_refuses_one_locally(ws, azure, capsys):
    from azureml.data.azure_storage_datastore import AzureBlobDatastore

    from pipelines import workspace

    azure.datastores["landing"] = AzureBlobDatastore(ws, "landing", "incoming", "acct", account_key="k")
    args = ["schedules", "create", "--name", "on-new-data", "--pipeline-id", "pp-9", "--datastore", "landing",
            "--path-on-datastore", "bike/daily", "--polling-interval", "10", "--data-path-parameter-name", "in"]  # fmt: skip
    assert workspace.main([*args, "--target", "azure", "--json"]) == 0
    [row] = creates(azure)
    assert (row["datastore_name"], row["path_on_datastore"], row["polling_interval"]) == (
        "landing",
        "bike/daily",
        10,
    )
    assert (
        row["data_path_parameter_name"] == "in" and row["recurrence"] is None and row["pipeline_id"] == "pp-9"
    )
    capsys.readouterr()
    assert workspace.main([*args, "--target", "local"]) == 2
    assert "the local workspace has no datastores" in capsys.readouterr().err
    with pytest.raises(SystemExit) as both:  # a trigger is a timetable or new data, not both
        workspace.main([*args[:6], "--frequency", "Day", "--datastore", "landing", "--target", "azure"])
    assert both.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert workspace.main([*args, "--hours", "3", "--target", "azure"]) == 2
    assert "--hours cannot be used with --datastore" in capsys.readouterr().err
    assert (
        workspace.main([*args[:6], "--frequency", "Day", "--polling-interval", "3", "--target", "azure"]) == 2
    )
    assert "--polling-interval cannot be used with --frequency" in capsys.readouterr().err
    assert len(creates(azure)) == 1


def test_new_data_schedules_need_a_blob_datastore_and_sane_arguments(ws, azure):
    from azureml.data.azure_storage_datastore import AzureFileDatastore

    files = AzureFileDatastore(ws, "files", "share", "acct", account_key="k")
    with pytest.raises(UserError, match="'files' is not an Azure Blob datastore"):
        schedules.create(ws, "s", experiment_name="e", pipeline_id="p", datastore=files)
    rec = ScheduleRecurrence(frequency="Hour", interval=1)
    with pytest.raises(UserError, match="exactly one of a recurrence and a datastore"):
        schedules.create(ws, "s", experiment_name="e", pipeline_id="p", recurrence=rec, datastore=files)
    with pytest.raises(UserError, match="exactly one of a recurrence and a datastore"):
        schedules.create(ws, "s", experiment_name="e", pipeline_id="p")
    with pytest.raises(UserError, match="exactly one of pipeline_id and pipeline_endpoint_id"):
        schedules.create(ws, "s", experiment_name="e", recurrence=rec)
    with pytest.raises(UserError, match="need a datastore trigger"):
        schedules.create(ws, "s", experiment_name="e", pipeline_id="p", recurrence=rec, path_on_datastore="x")
    with pytest.raises(UserError, match="polling_interval must be at least 1"):
        schedules.create(ws, "s", experiment_name="e", pipeline_id="p", datastore=files, polling_interval=0)
    assert creates(azure) == []


def test_list_disable_enable_and_delete(ws, azure):
    hourly = ScheduleRecurrence(frequency="Hour", interval=1)
    a = schedules.create(ws, "a", experiment_name="e", pipeline_endpoint_id="pe-1", recurrence=hourly)
    b = schedules.create(ws, "b", experiment_name="e", pipeline_id="pp-1", recurrence=hourly)
    assert [s["name"] for s in schedules.list_schedules(ws)] == ["a", "b"]
    assert [s["name"] for s in schedules.list_schedules(ws, pipeline_endpoint_id="pe-1")] == ["a"]

    assert schedules.disable(ws, a.id)["status"] == "Disabled"
    assert status_updates(azure)[-1] == (a.id, "Disabled")
    assert [s["name"] for s in schedules.list_schedules(ws)] == ["b"]
    assert [s["status"] for s in schedules.list_schedules(ws, active_only=False)] == ["Disabled", "Active"]

    assert schedules.enable(ws, a.id)["status"] == "Active"
    assert status_updates(azure)[-1] == (a.id, "Active")

    deleted = schedules.delete(ws, b.id)
    assert deleted["status"] == "Disabled" and "cannot delete" in deleted["note"]
    assert status_updates(azure)[-1] == (b.id, "Disabled")

    with pytest.raises(UserError, match="no schedule 'sched-99'"):
        schedules.enable(ws, "sched-99")
