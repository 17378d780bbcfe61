"""Local schedules: SDK ``ScheduleRecurrence``s persisted in the workspace database and fired by the service.

Validation is the SDK's own (``ScheduleRecurrence(...).validate()``: frequency Minute|Hour|Day|Week|
Month, interval >= 1, hours 0-23, minutes 0-59, week_days only for Week, ...); its message is shown
as is.

Does creating a schedule start a run at once? **No** (the rule the Azure backend follows too, see
``pipelines.azure.schedules``): a recurrence without ``start_time`` gets ``start_time`` = the creation
time in the recurrence's time zone (UTC when none), rounded up to the next whole minute. Azure runs
immediately on ``Schedule.create`` only when ``start_time`` is unset, so with that start time both
backends wait for the first fire time.

Fire times, as Azure computes them from the recurrence (all in its time zone):

- ``Minute``/``Hour``/``Day``/``Week``/``Month`` without ``hours``/``minutes``/``week_days``:
  ``start_time + k * interval`` units (k = 0, 1, ...), so ``start_time`` itself is the first one;
  ``Month`` keeps ``start_time``'s day of month (the last day in shorter months).
- ``Day``/``Week`` with ``hours``/``minutes``/``week_days``: every combination of the hours
  (default: ``start_time``'s hour) and minutes (default: ``start_time``'s minute), at second 0, on
  every ``interval``-th day (or on the ``week_days`` of every ``interval``-th week, weeks counted
  from ``start_time``'s week, Monday first; default day: ``start_time``'s weekday), strictly after
  ``start_time`` (the SDK: a start time that matches the pattern does not itself run).
- A ``start_time`` in the past: the first fire time after the schedule is created (or enabled).

Firing (the workspace service checks every second): each schedule keeps ``next_due``. When it has
passed, ONE transaction records the fire (``schedule_fires``, primary key (schedule, due time)),
queues the run (``run_queue``) and moves ``next_due`` past now. So a due time fires exactly once,
even when the service is killed and restarted; fire times missed while the service was down (or
busy) are **coalesced into one run**, for the latest missed time, which records how many were
missed. Each fired run records ``schedule_id``, ``due_time`` and ``submitted_by: "schedule"``.
A disabled schedule does not fire; enabling it starts from the next fire time after now (what was
missed while disabled is skipped). Deleting marks it ``Deleted`` (kept for the run history).

A schedule targets a pipeline endpoint (the default version at fire time) or one published pipeline.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from pipelines import service_logging
from pipelines.definitions import zone_info
from pipelines.errors import UserError
from pipelines.local.workspace import publishing, run_queue, submissions
from pipelines.local.workspace.db import connect

LOG = service_logging.get("schedules")

FREQUENCIES = ("Minute", "Hour", "Day", "Week", "Month")
WEEK_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_COUNTED_MISSES = 100_000


# ---- recurrences -----------------------------------------------------------------------------------
def recurrence(
    frequency: str,
    interval: int,
    *,
    start_time: str | dt.datetime | None = None,
    time_zone: str | None = None,
    hours: list[int] | None = None,
    minutes: list[int] | None = None,
    week_days: list[str] | None = None,
    time_of_day: str | None = None,
) -> Any:
    """An SDK ``ScheduleRecurrence``, validated by the SDK; its ValueError becomes a UserError (exit 2)."""
    from azureml.pipeline.core.schedule import ScheduleRecurrence

    zone = timezone_enum(time_zone) if time_zone else None
    try:
        rec = ScheduleRecurrence(
            frequency=frequency, interval=interval, start_time=start_time, time_zone=zone,
            hours=hours, minutes=minutes, week_days=week_days, time_of_day=time_of_day,
        )  # fmt: skip
        rec.validate()
        if rec.start_time is not None:
            parse_start_time(rec.start_time)
    except (ValueError, TypeError) as exc:
        raise UserError(
            f"invalid schedule: {exc}", hint="see ScheduleRecurrence in the Azure ML SDK docs"
        ) from None
    return rec


def timezone_enum(name: str) -> Any:
    """An azureml ``TimeZone`` from its member name (``PacificStandardTime``) or value (``Pacific Standard Time``)."""
    from azureml.pipeline.core.schedule import TimeZone

    if name in TimeZone.__members__:
        return TimeZone[name]
    for member in TimeZone:
        if member.value == name:
            return member
    raise UserError(
        f"invalid schedule: unknown time zone {name!r}",
        hint="use a name of azureml.pipeline.core.schedule.TimeZone, e.g. UTC or PacificStandardTime",
    )


def parse_start_time(text: str) -> dt.datetime:
    """``YYYY-MM-DDThh:mm:ss`` (the SDK's format, no offset) as a naive datetime."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"start_time {text!r} is not in the format YYYY-MM-DDThh:mm:ss") from None
    if value.tzinfo is not None:
        raise ValueError("Can not specify tzinfo for start_time, use time_zone instead.")
    return value


def to_dict(rec: Any) -> dict[str, Any]:
    """A recurrence as stored (time zone by member name)."""
    zone = rec.time_zone
    return {
        "frequency": rec.frequency,
        "interval": rec.interval,
        "start_time": rec.start_time,
        "time_zone": zone.name if zone is not None else None,
        "hours": rec.hours,
        "minutes": rec.minutes,
        "week_days": rec.week_days,
    }


def from_dict(data: dict[str, Any]) -> Any:
    """The SDK recurrence back from ``to_dict`` (validated again)."""
    return recurrence(
        data["frequency"], data["interval"], start_time=data.get("start_time"),
        time_zone=data.get("time_zone"), hours=data.get("hours"), minutes=data.get("minutes"),
        week_days=data.get("week_days"),
    )  # fmt: skip


def with_start_time(rec: Any, now: dt.datetime) -> Any:
    """The recurrence with the start rule applied: no start_time -> now (in its zone) rounded up to a minute."""
    if rec.start_time is not None:
        return rec
    zone = zone_info(rec.time_zone)
    local = now.astimezone(zone).replace(tzinfo=None)
    start = local.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return recurrence(
        rec.frequency, rec.interval, start_time=start, time_zone=rec.time_zone.name if rec.time_zone else "UTC",
        hours=rec.hours, minutes=rec.minutes, week_days=rec.week_days,
    )  # fmt: skip


def describe(rec: Any) -> str:
    """A one-line human description, e.g. ``every 1 Week on Monday at 03:00 UTC``."""
    text = f"every {rec.interval} {rec.frequency}"
    if rec.week_days:
        text += " on " + ",".join(rec.week_days)
    if rec.hours or rec.minutes:
        hours = rec.hours or ["hh"]
        minutes = rec.minutes or ["mm"]
        text += " at " + ",".join(
            f"{h:02}:{m:02}" if isinstance(h, int) and isinstance(m, int) else f"{h}:{m}"
            for h in hours
            for m in minutes
        )
    zone = rec.time_zone.name if rec.time_zone is not None else "UTC"
    text += f" {zone}"
    if rec.start_time:
        text += f" from {rec.start_time}"
    return text


def fire_times(rec: Any, after: dt.datetime) -> Iterator[dt.datetime]:
    """The recurrence's fire times strictly after ``after`` (aware), in order, as aware UTC datetimes."""
    if rec.start_time is None:
        raise ValueError("apply the start rule first (with_start_time)")
    zone = zone_info(rec.time_zone)
    start_local = parse_start_time(rec.start_time)
    start = start_local.replace(tzinfo=zone).astimezone(dt.UTC)
    after = after.astimezone(dt.UTC)
    pattern = bool(rec.hours or rec.minutes or rec.week_days)
    if rec.frequency in ("Minute", "Hour") or (rec.frequency == "Day" and not pattern):
        yield from _fixed_steps(rec, start, start_local, zone, after)
    elif rec.frequency == "Month":
        yield from _months(rec, start_local, zone, after)
    elif rec.frequency == "Week" and not pattern:
        yield from _fixed_steps(rec, start, start_local, zone, after)
    else:
        yield from _day_pattern(rec, start_local, zone, after)


def _fixed_steps(
    rec: Any, start: dt.datetime, start_local: dt.datetime, zone: dt.tzinfo, after: dt.datetime
) -> Iterator[dt.datetime]:
    if rec.frequency in ("Minute", "Hour"):  # absolute steps (DST does not move them)
        step = (
            dt.timedelta(minutes=rec.interval)
            if rec.frequency == "Minute"
            else dt.timedelta(hours=rec.interval)
        )
        k = 0 if after < start else (after - start) // step + 1
        while True:
            yield start + k * step
            k += 1
    days = rec.interval * (7 if rec.frequency == "Week" else 1)  # wall-clock steps in the zone
    k = max(0, (after.astimezone(zone).replace(tzinfo=None) - start_local).days // days - 1)
    while True:
        when = (start_local + dt.timedelta(days=k * days)).replace(tzinfo=zone).astimezone(dt.UTC)
        if when > after:
            yield when
        k += 1


def _months(rec: Any, start_local: dt.datetime, zone: dt.tzinfo, after: dt.datetime) -> Iterator[dt.datetime]:
    after_local = after.astimezone(zone).replace(tzinfo=None)
    months_between = (after_local.year - start_local.year) * 12 + after_local.month - start_local.month
    k = max(0, months_between // rec.interval - 1)
    while True:
        index = start_local.month - 1 + k * rec.interval
        year, month = start_local.year + index // 12, index % 12 + 1
        day = min(start_local.day, calendar.monthrange(year, month)[1])
        when = start_local.replace(year=year, month=month, day=day).replace(tzinfo=zone).astimezone(dt.UTC)
        if when > after:
            yield when
        k += 1


def _day_pattern(
    rec: Any, start_local: dt.datetime, zone: dt.tzinfo, after: dt.datetime
) -> Iterator[dt.datetime]:
    hours = sorted(rec.hours) if rec.hours else [start_local.hour]
    minutes = sorted(rec.minutes) if rec.minutes else [start_local.minute]
    times = [dt.time(h, m) for h in hours for m in minutes]
    start_date = start_local.date()
    if rec.frequency == "Week":
        days = {WEEK_DAYS.index(d) for d in rec.week_days} if rec.week_days else {start_date.weekday()}
        week0 = start_date - dt.timedelta(days=start_date.weekday())
    after_local = after.astimezone(zone).replace(tzinfo=None)
    day = max(start_date, after_local.date() - dt.timedelta(days=1))
    while True:
        if rec.frequency == "Week":
            weeks = (day - week0).days // 7
            active = weeks % rec.interval == 0 and day.weekday() in days
        else:
            active = (day - start_date).days % rec.interval == 0
        if active:
            for t in times:
                local = dt.datetime.combine(day, t)
                if local <= start_local:
                    continue
                when = local.replace(tzinfo=zone).astimezone(dt.UTC)
                if when > after:
                    yield when
        day += dt.timedelta(days=1)


def next_fire(rec: Any, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after ``after``."""
    return next(fire_times(rec, after))


# ---- persistence ---------------------------------------------------------------------------------
def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def create(
    name: str,
    rec: Any,
    *,
    endpoint: str | None = None,
    version: int | None = None,
    pipeline_id: str | None = None,
    experiment_name: str | None = None,
    parameters: dict[str, Any] | None = None,
    description: str = "",
    is_default: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Create a schedule for an endpoint (its default version at fire time) or one published pipeline."""
    if not name.strip():
        raise UserError("a schedule needs a name", hint="e.g. --name nightly-retrain")
    if (endpoint is None) == (pipeline_id is None):
        raise UserError("give exactly one of an endpoint and a pipeline id", hint="schedule one target")
    if version is not None and endpoint is None:
        raise UserError("a version needs an endpoint", hint="pass --endpoint NAME with --version")
    if endpoint is not None:
        published = publishing.get_endpoint_version(endpoint, version)
        if version is not None:  # one version of an endpoint = that published pipeline
            endpoint_id, pipeline_id = None, published["id"]
        else:
            endpoint_id = published["endpoint_id"]
    else:
        published = publishing.get_published_pipeline(pipeline_id)
        endpoint_id = None
    params = dict(parameters or {})
    submissions.prepare(published, experiment_name=experiment_name, parameters=params)  # validate now
    current = _now(now)
    started = with_start_time(rec, current)
    first = next_fire(started, current)
    schedule_id = str(uuid.uuid4())
    with connect() as conn:
        conn.execute(
            "INSERT INTO schedules (id, name, description, endpoint_id, pipeline_id, experiment_name, parameters,"
            " recurrence, status, is_default, created, next_due) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'Active', ?, ?, ?)",
            (
                schedule_id, name, description or describe(started), endpoint_id,
                None if endpoint_id else pipeline_id, experiment_name, json.dumps(params),
                json.dumps(to_dict(started)), int(is_default), _iso(current), _iso(first),
            ),
        )  # fmt: skip
    return get(schedule_id)


def get(schedule_id: str) -> dict[str, Any]:
    """One schedule (by id, or by name if unique); UserError if there is none."""
    with connect() as conn:
        row = conn.execute("SELECT * FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
        if row is None:
            found = conn.execute(
                "SELECT * FROM schedules WHERE name = ? AND status != 'Deleted'", (schedule_id,)
            ).fetchall()
            if len(found) > 1:
                raise UserError(
                    f"{len(found)} schedules are named {schedule_id!r}", hint="use the schedule id"
                )
            row = found[0] if found else None
    if row is None:
        raise UserError(
            f"no schedule {schedule_id!r}",
            hint="list them with: python -m pipelines.workspace schedules list",
        )
    return _row(row)


def list_schedules(include_deleted: bool = False) -> list[dict[str, Any]]:
    with connect() as conn:
        found = conn.execute("SELECT * FROM schedules ORDER BY created").fetchall()
    out = [_row(r) for r in found]
    return out if include_deleted else [s for s in out if s["status"] != "Deleted"]


def fires(schedule_id: str | None = None) -> list[dict[str, Any]]:
    """The fire log (one row per fired due time)."""
    with connect() as conn:
        if schedule_id:
            found = conn.execute(
                "SELECT * FROM schedule_fires WHERE schedule_id = ? ORDER BY due_time", (schedule_id,)
            ).fetchall()
        else:
            found = conn.execute("SELECT * FROM schedule_fires ORDER BY due_time").fetchall()
    return [dict(r) for r in found]


def set_status(schedule_id: str, status: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """Disable, enable (from the next fire time after now) or delete a schedule."""
    if status not in ("Active", "Disabled", "Deleted"):
        raise UserError(f"unknown schedule status {status!r}", hint="Active, Disabled or Deleted")
    schedule = get(schedule_id)
    if schedule["status"] == "Deleted":
        raise UserError(f"schedule {schedule['id']} is deleted", hint="create a new one")
    next_due = schedule["next_due"]
    if status == "Active" and schedule["status"] != "Active":
        next_due = _iso(next_fire(from_dict(schedule["recurrence"]), _now(now)))
    with connect() as conn:
        conn.execute(
            "UPDATE schedules SET status = ?, next_due = ? WHERE id = ?", (status, next_due, schedule["id"])
        )
    return get(schedule["id"])


def _row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["recurrence"] = json.loads(out["recurrence"])
    out["parameters"] = json.loads(out["parameters"])
    out["is_default"] = bool(out["is_default"])
    return out


def ensure_default_schedule(definition: Any, published: dict[str, Any]) -> dict[str, Any] | None:
    """Give a newly published endpoint its default schedule (from settings), or update the existing one.

    One default schedule per endpoint: created on first publish; on later publishes its recurrence is
    replaced if the settings changed (next fire time recomputed); a disabled one stays disabled.
    """
    rec = definition.schedule
    if rec is None:
        return None
    name = f"{published['endpoint_name']}-default"
    current = _now(None)
    with connect() as conn:
        row = conn.execute(
            "SELECT * FROM schedules WHERE endpoint_id = ? AND is_default = 1 AND status != 'Deleted'",
            (published["endpoint_id"],),
        ).fetchone()
    if row is None:
        out = create(
            name, rec, endpoint=published["endpoint_id"], is_default=True,
            description=f"default schedule of {published['endpoint_name']}: {describe(rec)}",
        )  # fmt: skip
        out["action"] = "created"
        return _brief(out)
    existing = _row(row)
    wanted = to_dict(rec)
    stored = dict(existing["recurrence"])
    if rec.start_time is None:
        stored["start_time"] = None  # the start rule filled it in; compare what the settings say
    if stored != wanted:
        started = with_start_time(rec, current)
        with connect() as conn:
            conn.execute(
                "UPDATE schedules SET recurrence = ?, next_due = ?, description = ? WHERE id = ?",
                (json.dumps(to_dict(started)), _iso(next_fire(started, current)),
                 f"default schedule of {published['endpoint_name']}: {describe(rec)}", existing["id"]),
            )  # fmt: skip
        out = get(existing["id"]) | {"action": "updated"}
    else:
        out = existing | {"action": "kept"}
    return _brief(out)


def _brief(schedule: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": schedule["id"],
        "name": schedule["name"],
        "status": schedule["status"],
        "next_due": schedule["next_due"],
        "action": schedule.get("action"),
        "description": f"{schedule['description']}; next run {schedule['next_due']}"
        + ("" if schedule["status"] == "Active" else f" ({schedule['status']})"),
    }


# ---- firing --------------------------------------------------------------------------------------
def fire_due(now: dt.datetime | None = None) -> list[str]:
    """Fire every active schedule whose next fire time has passed; returns the queued run ids."""
    current = _now(now)
    started: list[str] = []
    for schedule in list_schedules():
        if schedule["status"] != "Active" or not schedule["next_due"]:
            continue
        if _parse(schedule["next_due"]) > current:
            continue
        try:
            run_id = _fire(schedule, current)
        except UserError as exc:  # e.g. its endpoint's default version was removed: skip this due time
            LOG.warning("schedule %s: cannot fire: %s", schedule["id"], exc)
            _skip_to_next(schedule, current)
            continue
        if run_id:
            started.append(run_id)
    return started


def _missed(rec: Any, first_due: dt.datetime, now: dt.datetime) -> tuple[dt.datetime, int, dt.datetime]:
    """(latest due time <= now, how many due times that coalesces, next due time after now)."""
    latest, count = first_due, 1
    for when in fire_times(rec, first_due):
        if when > now:
            return latest, count, when
        latest, count = when, count + 1
        if count >= MAX_COUNTED_MISSES:  # a minute schedule idle for months: stop counting
            return latest, count, next_fire(rec, now)
    raise AssertionError("unreachable: fire times never end")


def _fire(schedule: dict[str, Any], now: dt.datetime) -> str | None:
    rec = from_dict(schedule["recurrence"])
    due, count, following = _missed(rec, _parse(schedule["next_due"]), now)
    published = (
        publishing.get_endpoint_version(schedule["endpoint_id"])
        if schedule["endpoint_id"]
        else publishing.get_published_pipeline(schedule["pipeline_id"])
    )
    sub = submissions.prepare(
        published,
        experiment_name=schedule["experiment_name"],
        parameters=schedule["parameters"],
        extra={
            "schedule_id": schedule["id"],
            "due_time": _iso(due),
            "missed_due_times": count - 1,
            "submitted_by": "schedule",
        },
    )
    with connect() as conn:
        moved = conn.execute(
            "UPDATE schedules SET next_due = ?, last_due = ? WHERE id = ? AND next_due = ? AND status = 'Active'",
            (_iso(following), _iso(due), schedule["id"], schedule["next_due"]),
        ).rowcount
        if not moved:  # someone else fired it (or it was disabled) meanwhile
            return None
        run_id = run_queue.enqueue(sub, conn)
        conn.execute(
            "INSERT INTO schedule_fires (schedule_id, due_time, run_id, fired_at, missed) VALUES (?, ?, ?, ?, ?)",
            (schedule["id"], _iso(due), run_id, _iso(now), count - 1),
        )
        conn.execute("UPDATE schedules SET last_run_id = ? WHERE id = ?", (run_id, schedule["id"]))
    run_queue.write_stub(run_id)
    return run_id


def _skip_to_next(schedule: dict[str, Any], now: dt.datetime) -> None:
    following = next_fire(from_dict(schedule["recurrence"]), now)
    with connect() as conn:
        conn.execute(
            "UPDATE schedules SET next_due = ? WHERE id = ? AND next_due = ?",
            (_iso(following), schedule["id"], schedule["next_due"]),
        )


class Ticker:
    """Calls ``tick()`` every ``seconds`` in a background thread (the service's schedule clock, its deployment
    keeper); an exception is printed and the clock goes on."""

    def __init__(self, name: str, tick: Any, seconds: float = 1.0) -> None:
        self.name = name
        self.tick = tick
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # a broken schedule or deployment must not stop the clock
                LOG.error("%s: %s: %s", self.name, type(exc).__name__, exc)
            self._stop.wait(self.seconds)


def status_line(schedule: dict[str, Any]) -> str:
    """One line for ``schedules list``."""
    target = (
        f"endpoint {schedule['endpoint_id']}"
        if schedule["endpoint_id"]
        else f"pipeline {schedule['pipeline_id']}"
    )
    return (
        f"{schedule['id']}  {schedule['name']}  {schedule['status']}  {describe(from_dict(schedule['recurrence']))}"
        f"  next {schedule['next_due'] or '-'}  last {schedule['last_due'] or '-'}  ({target})"
    )
