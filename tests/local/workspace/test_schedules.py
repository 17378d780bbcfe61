"""Local schedules: the SDK's validation, fire-time semantics, the start rule, firing once per due time."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pytest

from pipelines import workspace
from pipelines.errors import UserError
from pipelines.local.workspace import publishing, run_queue, schedules
from pipelines.settings import Settings

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def first(rec, after: str, n: int = 3) -> list[str]:
    times = schedules.fire_times(rec, at(after))
    return [next(times).strftime("%Y-%m-%d %H:%M") for _ in range(n)]


# ---- validation: the SDK's own messages ---------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frequency": "Hourly", "interval": 1}, "Invalid value for frequency"),
        ({"frequency": "Day", "interval": 0}, "Interval must be an integer greater than 0"),
        ({"frequency": "Day", "interval": 1, "hours": [25]}, "Hours must be between 0 and 23"),
        (
            {"frequency": "Hour", "interval": 1, "minutes": [5]},
            "Can only specify minutes if frequency is Week or Day",
        ),
        ({"frequency": "Day", "interval": 1, "week_days": ["Monday"]}, "Can only specify week days"),
        ({"frequency": "Week", "interval": 1, "week_days": ["Funday"]}, "Week days must be"),
        ({"frequency": "Day", "interval": 1, "time_of_day": "25:00"}, "Time of day hour value"),
        ({"frequency": "Day", "interval": 1, "start_time": "tomorrow"}, "YYYY-MM-DDThh:mm:ss"),
    ],
)
def test_invalid_recurrence_gets_the_sdk_message(kwargs: dict, message: str) -> None:
    freq, interval = kwargs.pop("frequency"), kwargs.pop("interval")
    with pytest.raises(UserError) as err:
        schedules.recurrence(freq, interval, **kwargs)
    assert message in str(err.value)


def test_cli_rejects_hourly_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = workspace.main(
        ["schedules", "create", "--name", "s", "--endpoint", "x", "--frequency", "Hourly", "--interval", "1"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "Invalid value for frequency" in err and err.count("\n") == 1


def test_every_sdk_time_zone_maps_to_an_iana_zone() -> None:
    from azureml.pipeline.core.schedule import TimeZone

    for member in TimeZone:
        assert schedules.zone_info(member) is not None, member


# ---- fire times -----------------------------------------------------------------------------------
def test_start_rule_rounds_creation_up_to_the_next_minute_so_nothing_runs_at_once() -> None:
    now = at("2026-11-25T10:00:30")
    rec = schedules.with_start_time(schedules.recurrence("Minute", 15), now)
    assert rec.start_time == "2026-11-25T10:01:00"
    assert first(rec, "2026-11-25T10:00:30") == ["2026-11-25 10:01", "2026-11-25 10:16", "2026-11-25 10:31"]
    assert schedules.next_fire(rec, now) > now


def test_future_start_time_is_the_first_fire_time() -> None:
    rec = schedules.recurrence("Month", 1, start_time="2026-01-31T09:00:00")
    assert first(rec, "2025-12-01T00:00") == ["2026-01-31 09:00", "2026-02-28 09:00", "2026-03-31 09:00"]


def test_past_start_time_fires_at_the_next_calculated_time() -> None:
    rec = schedules.recurrence("Hour", 1, start_time="2020-01-13T12:55:00")
    assert first(rec, "2026-11-25T10:20", 2) == ["2026-11-25 10:55", "2026-11-25 11:55"]


def test_day_hours_and_minutes_are_combined() -> None:
    rec = schedules.recurrence("Day", 1, start_time="2026-11-25T10:01:00", hours=[18, 9], minutes=[30])
    assert first(rec, "2026-11-25T10:00") == ["2026-11-25 18:30", "2026-11-26 09:30", "2026-11-26 18:30"]


def test_a_start_time_matching_the_pattern_does_not_itself_fire() -> None:
    rec = schedules.recurrence("Day", 1, start_time="2026-01-01T09:00:00", hours=[9], minutes=[0])
    assert first(rec, "2025-12-31T00:00", 1) == ["2026-01-02 09:00"]


def test_week_interval_counts_weeks_from_the_start_week() -> None:
    # 2026-11-25 is a Wednesday; every 2nd week on Monday and Wednesday at 18:30
    rec = schedules.recurrence(
        "Week", 2, start_time="2026-11-25T12:00:00", week_days=["Monday", "Wednesday"], time_of_day="18:30"
    )
    assert first(rec, "2026-11-25T11:00", 4) == [
        "2026-11-25 18:30", "2026-12-07 18:30", "2026-12-09 18:30", "2026-12-21 18:30",
    ]  # fmt: skip


def test_time_zone_applies_to_the_pattern_across_dst() -> None:
    rec = schedules.recurrence(
        "Day", 1, start_time="2026-03-07T00:00:00", time_zone="PacificStandardTime", time_of_day="09:00"
    )
    # 09:00 Pacific is 17:00 UTC before the 2026-03-08 DST change and 16:00 UTC after it
    assert first(rec, "2026-03-07T00:00", 2) == ["2026-03-07 17:00", "2026-03-08 16:00"]


def test_default_training_recurrence_from_settings_is_weekly() -> None:
    from pipelines.definitions import recurrence

    rec = schedules.with_start_time(recurrence(Settings()), at("2026-11-25T10:00:00"))
    assert first(rec, "2026-11-25T10:00", 2) == ["2026-11-30 03:00", "2026-12-07 03:00"]


# ---- persistence and firing --------------------------------------------------------------------------
@pytest.fixture
def tiny_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The tiny test pipeline published in this test's workspace (no default schedule)."""
    from pipelines.datagen import write_csv
    from tests import tiny_pipeline

    data = tmp_path / "data"
    write_csv(data / "tiny.csv", 60, seed=1)
    monkeypatch.setenv("AMLOPS_DATA_DIR", str(data))
    definition = tiny_pipeline.build(Settings(dataset="tiny"))
    return publishing.publish(definition)


def test_missed_fire_times_are_coalesced_into_one_run(tiny_endpoint: dict) -> None:
    t0 = at("2026-11-25T10:00:30")
    made = schedules.create("every-minute", schedules.recurrence("Minute", 1), endpoint="amlops-tiny", now=t0)
    assert made["next_due"] == "2026-11-25T10:01:00+00:00"
    assert schedules.fire_due(now=t0) == []  # creating it started nothing
    later = at("2026-11-25T10:10:40")  # due at 10:01 ... 10:10 while "the service was down"
    fired = schedules.fire_due(now=later)
    assert len(fired) == 1
    log = schedules.fires(made["id"])
    assert [(f["due_time"], f["missed"], f["run_id"]) for f in log] == [
        ("2026-11-25T10:10:00+00:00", 9, fired[0])
    ]
    assert schedules.get(made["id"])["next_due"] == "2026-11-25T10:11:00+00:00"
    assert schedules.fire_due(now=later) == []  # the same due time never fires twice
    assert len(schedules.fire_due(now=at("2026-11-25T10:11:05"))) == 1


def test_a_fired_run_records_its_schedule(tiny_endpoint: dict) -> None:
    t0 = at("2026-11-25T10:00:00")
    made = schedules.create(
        "s", schedules.recurrence("Hour", 1), endpoint="amlops-tiny", parameters={"seed": "7"},
        experiment_name="nightly", now=t0,
    )  # fmt: skip
    (run_id,) = schedules.fire_due(now=at("2026-11-25T10:01:30"))
    record = run_queue.read_run(run_id)
    assert record["status"] == "Queued"
    assert record["schedule_id"] == made["id"] and record["submitted_by"] == "schedule"
    assert record["due_time"] == "2026-11-25T10:01:00+00:00" and record["experiment"] == "nightly"
    args = json.loads(run_queue.get_row(run_id)["args"])
    assert ["--set", "seed=7"] == args[args.index("seed=7") - 1 : args.index("seed=7") + 1]
    extra = json.loads(args[args.index("--extra") + 1])
    assert extra["schedule_id"] == made["id"]  # the run itself writes it into its record


def test_concurrent_firing_fires_each_due_time_once(tiny_endpoint: dict) -> None:
    schedules.create(
        "s", schedules.recurrence("Minute", 5), endpoint="amlops-tiny", now=at("2026-11-25T10:00:00")
    )
    later = at("2026-11-25T11:00:00")
    results: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(schedules.fire_due(now=later))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r) for r in results) == 1
    assert len(run_queue.rows()) == 1 and len(schedules.fires()) == 1


def test_disabled_schedules_do_not_fire_and_enabling_skips_what_was_missed(tiny_endpoint: dict) -> None:
    made = schedules.create(
        "s", schedules.recurrence("Minute", 1), endpoint="amlops-tiny", now=at("2026-11-25T10:00:00")
    )
    schedules.set_status(made["id"], "Disabled")
    assert schedules.fire_due(now=at("2026-11-25T10:30:00")) == []
    enabled = schedules.set_status(made["id"], "Active", now=at("2026-11-25T10:30:10"))
    assert enabled["next_due"] == "2026-11-25T10:31:00+00:00"
    assert schedules.fire_due(now=at("2026-11-25T10:30:30")) == []
    schedules.set_status(made["id"], "Deleted")
    assert schedules.list_schedules() == [] and len(schedules.list_schedules(include_deleted=True)) == 1
    assert schedules.fire_due(now=at("2026-11-25T12:00:00")) == []


def test_schedule_parameters_are_checked_when_created(tiny_endpoint: dict) -> None:
    with pytest.raises(UserError, match="unknown pipeline parameter 'nope'"):
        schedules.create(
            "s", schedules.recurrence("Day", 1), endpoint="amlops-tiny", parameters={"nope": "1"}
        )
    with pytest.raises(UserError, match="no pipeline endpoint"):
        schedules.create("s", schedules.recurrence("Day", 1), endpoint="missing")
    with pytest.raises(UserError, match="a schedule needs a name"):
        schedules.create(" ", schedules.recurrence("Day", 1), endpoint="amlops-tiny")
    assert schedules.list_schedules() == []


def test_publish_attaches_one_default_schedule_and_keeps_it_on_republish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.backends.local import LocalBackend
    from tests import tiny_pipeline

    def publish(definition):  # what `publish --target local` does: a new version, then the default schedule
        return LocalBackend().publish(definition, set_default=False, schedule=True)

    first_pub = publish(tiny_pipeline.build(Settings()))
    second = publish(tiny_pipeline.build(Settings()))
    assert first_pub["schedule"]["action"] == "created" and second["schedule"]["action"] == "kept"
    assert first_pub["schedule"]["id"] == second["schedule"]["id"]
    assert any(line.startswith("schedule: ") for line in second["lines"])
    schedules.set_status(second["schedule"]["id"], "Disabled")
    third = publish(tiny_pipeline.build(Settings(schedule_hours="5")))
    assert third["schedule"]["action"] == "updated" and third["schedule"]["status"] == "Disabled"
    (only,) = schedules.list_schedules()
    assert only["recurrence"]["hours"] == [5] and only["is_default"]


def test_cli_creates_lists_and_disables(tiny_endpoint: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code = workspace.main([
        "schedules", "create", "--name", "nightly", "--endpoint", "amlops-tiny", "--frequency", "Day",
        "--hours", "2", "--minutes", "30", "--time-zone", "UTC", "--param", "seed=3", "--json",
    ])  # fmt: skip
    assert code == 0
    made = json.loads(capsys.readouterr().out)
    assert made["recurrence"]["hours"] == [2] and made["parameters"] == {"seed": "3"}
    assert workspace.main(["schedules", "disable", made["id"]]) == 0
    assert workspace.main(["schedules", "list", "--json"]) == 0
    out = capsys.readouterr().out
    listed = json.loads(out[out.index("[") :])
    assert [s["status"] for s in listed] == ["Disabled"]


def test_target_azure_passes_the_sdk_recurrence_to_the_azure_backend(monkeypatch, capsys) -> None:
    from azureml.pipeline.core import ScheduleRecurrence

    from pipelines.azure import schedules as azure
    from pipelines.azure import workspace as azure_workspace

    calls: list[tuple] = []
    monkeypatch.setattr(azure_workspace, "get_workspace", lambda: "ws")
    monkeypatch.setattr(
        azure, "create", lambda ws, name, **kw: calls.append(("create", ws, name, kw)) or "sched"
    )
    monkeypatch.setattr(azure, "describe", lambda s: {"id": "az-1", "name": "n", "status": "Active"})
    monkeypatch.setattr(
        azure,
        "disable",
        lambda ws, i: calls.append(("disable", ws, i)) or {"id": i, "name": "n", "status": "Disabled"},
    )
    code = workspace.main([
        "schedules", "create", "--target", "azure", "--name", "n", "--pipeline-id", "p-1", "--frequency", "Week",
        "--week-days", "Monday", "--time-of-day", "03:00", "--experiment", "e", "--param", "label=cnt",
    ])  # fmt: skip
    assert code == 0
    (_, ws, name, kw) = calls[0]
    assert (ws, name, kw["pipeline_id"], kw["experiment_name"]) == ("ws", "n", "p-1", "e")
    assert isinstance(kw["recurrence"], ScheduleRecurrence) and kw["recurrence"].hours == [3]
    assert kw["pipeline_parameters"] == {"label": "cnt"}
    assert workspace.main(["schedules", "disable", "az-1", "--target", "azure"]) == 0
    assert calls[-1] == ("disable", "ws", "az-1")
    assert workspace.main(["schedules", "create", "--target", "azure", "--name", "n", "--pipeline-id", "p",
                           "--frequency", "Hourly"]) == 2  # fmt: skip
    assert len(calls) == 2  # the invalid recurrence never reached Azure
    assert "disable: Azure schedule az-1" in capsys.readouterr().out
