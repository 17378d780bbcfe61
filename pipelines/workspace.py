"""The local workspace: serve published pipelines over HTTP, and inspect runs, keys, endpoints and schedules.

python -m pipelines.workspace serve [--port 8765] [--host 127.0.0.1] [--workers 2] [--allow-data DIR]...
python -m pipelines.workspace status [--json]
python -m pipelines.workspace keys [--regen primary|secondary] [--primary] [--json]
python -m pipelines.workspace runs [--status S] [--limit N] [--json]
python -m pipelines.workspace run-status ID [--json]
python -m pipelines.workspace logs ID [--step S]
python -m pipelines.workspace cancel ID
python -m pipelines.workspace endpoints [--json]
python -m pipelines.workspace set-default ENDPOINT VERSION
python -m pipelines.workspace schedules list|create|disable|enable|delete ...

Everything except ``serve``'s HTTP routes works without the service running (state is in AMLOPS_HOME).
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.backends import targets
from pipelines.errors import PORT, UserError, cli_main, int_in_range, print_json
from pipelines.local.runtime import runs
from pipelines.local.workspace import publishing, run_queue
from pipelines.settings import amlops_home, parse_assignments

DEFAULT_WORKERS = 2


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m pipelines.workspace`` argument parser (every verb has --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.workspace",
        description="The local workspace: published pipelines over HTTP, runs, keys, endpoints, schedules.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    serve = sub.add_parser("serve", help="run the workspace service (HTTP API, run queue, schedules)",
                           description="Serve published pipelines on 127.0.0.1 with Azure's REST shapes; "
                                       "run queued runs and fire schedules. Ctrl-C stops the service, not the runs.")  # fmt: skip
    serve.add_argument("--port", type=PORT, default=8765, help="TCP port (default 8765; 0: any free port)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--workers", type=int_in_range(1), default=DEFAULT_WORKERS,
                       help=f"pipeline runs executed at once; more wait in the queue (default {DEFAULT_WORKERS})")  # fmt: skip
    serve.add_argument("--json", action="store_true", help="print the service's URL and pid as one JSON line")
    serve.add_argument("--allow-data", action="append", default=[], metavar="DIR",
                       help="a folder whose files and subfolders REST callers may name as a run's data (repeatable; "
                            "also AMLOPS_ALLOW_DATA=DIR:DIR). Without it they may name only dataset names and URLs")  # fmt: skip

    status = sub.add_parser("status", help="is the service running; queue, endpoints, schedules")
    status.add_argument("--json", action="store_true", help="print machine-readable JSON")

    keys = sub.add_parser("keys", help="show (or regenerate) the service's primary/secondary keys")
    keys.add_argument(
        "--regen",
        choices=("primary", "secondary"),
        help="replace this key (the old one stops working at once)",
    )
    keys.add_argument("--primary", action="store_true", help="print only the primary key (for shell use)")
    keys.add_argument("--json", action="store_true", help="print machine-readable JSON")

    runs_p = sub.add_parser("runs", help="list runs, newest first")
    runs_p.add_argument("--status", choices=runs.STATUSES, help="only runs in this status")
    runs_p.add_argument("--limit", type=int_in_range(0), default=20, help="how many (default 20; 0: all)")
    runs_p.add_argument("--json", action="store_true", help="print machine-readable JSON")

    run_status = sub.add_parser("run-status", help="one run's status, steps, metrics and error")
    run_status.add_argument("run_id", metavar="ID")
    run_status.add_argument("--json", action="store_true", help="print machine-readable JSON")

    logs = sub.add_parser("logs", help="print a run's logs (all steps, or one)")
    logs.add_argument("run_id", metavar="ID")
    logs.add_argument("--step", help="one step's log ('driver': the run command's own output)")
    logs.add_argument("--follow", "-f", action="store_true", help="stream new lines until the run ends")
    logs.add_argument("--json", action="store_true", help="print JSON (with --follow: one object per line)")

    cancel = sub.add_parser("cancel", help="cancel a queued or running run (service not needed)")
    cancel.add_argument("run_id", metavar="ID")
    cancel.add_argument("--json", action="store_true", help="print machine-readable JSON")

    endpoints = sub.add_parser("endpoints", help="list pipeline endpoints, versions and URLs")
    endpoints.add_argument("--json", action="store_true", help="print machine-readable JSON")

    set_default = sub.add_parser("set-default", help="make VERSION the endpoint's default version")
    set_default.add_argument("endpoint", metavar="ENDPOINT", help="endpoint name or id")
    set_default.add_argument("version", metavar="VERSION", type=int)
    set_default.add_argument("--json", action="store_true", help="print machine-readable JSON")

    sched = sub.add_parser("schedules", help="list, create, disable, enable or delete local schedules",
                           description="Local schedules (fired by the running service). Creating one never "
                                       "starts a run at once: the first run is at its first fire time.")  # fmt: skip
    ssub = sched.add_subparsers(dest="action", required=True, metavar="ACTION")

    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", choices=("auto", *targets()), default="auto",
                       help="local workspace or Azure ML (auto: Azure if a workspace is configured)")  # fmt: skip

    s_list = ssub.add_parser("list", help="list schedules (next and last fire times)")
    target(s_list)
    s_list.add_argument("--all", action="store_true", help="include deleted schedules")
    s_list.add_argument("--json", action="store_true", help="print machine-readable JSON")
    s_create = ssub.add_parser("create", help="create a schedule for an endpoint or a published pipeline",
                               description="Validation is the SDK's ScheduleRecurrence.validate(); an invalid "
                                           "recurrence exits 2 with its message.")  # fmt: skip
    target(s_create)
    s_create.add_argument("--name", required=True, help="schedule name")
    what = s_create.add_mutually_exclusive_group(required=True)
    what.add_argument("--endpoint", help="endpoint name or id (runs its default version at fire time)")
    what.add_argument("--pipeline-id", help="one published pipeline id")
    s_create.add_argument("--version", type=int, help="pin one version of --endpoint")
    trigger = s_create.add_mutually_exclusive_group(required=True)
    trigger.add_argument("--frequency", help="Minute, Hour, Day, Week or Month")
    trigger.add_argument(
        "--datastore", help="azure: run when blobs are added or changed in this Azure Blob datastore"
    )
    s_create.add_argument("--path-on-datastore", help="azure: the folder to watch (not its subfolders)")
    s_create.add_argument("--polling-interval", type=int, help="azure: minutes between polls (default 5)")
    s_create.add_argument(
        "--data-path-parameter-name",
        help="azure: a DataPath pipeline parameter set to the changed blob's path",
    )
    s_create.add_argument(
        "--interval", type=int, default=1, help="every INTERVAL frequency units (default 1)"
    )
    s_create.add_argument(
        "--start-time", help="YYYY-MM-DDThh:mm:ss in --time-zone (default: now, rounded up to a minute)"
    )
    s_create.add_argument(
        "--time-zone", help="an azureml TimeZone name, e.g. UTC or PacificStandardTime (default UTC)"
    )
    s_create.add_argument("--hours", help="comma-separated hours 0-23 (Day/Week)")
    s_create.add_argument("--minutes", help="comma-separated minutes 0-59 (Day/Week)")
    s_create.add_argument("--week-days", help="comma-separated days, e.g. Monday,Thursday (Week)")
    s_create.add_argument("--time-of-day", help="hh:mm (Day/Week; instead of --hours/--minutes)")
    s_create.add_argument("--experiment", help="experiment name for the runs (default: the pipeline's)")
    s_create.add_argument("--param", action="append", metavar="NAME=VALUE", help="a pipeline parameter value")
    s_create.add_argument("--description", default="", help="free text")
    s_create.add_argument("--json", action="store_true", help="print machine-readable JSON")
    for action in ("disable", "enable", "delete"):
        p = ssub.add_parser(action, help=f"{action} a schedule")
        p.add_argument("schedule", metavar="SCHEDULE", help="schedule id (or unique name)")
        target(p)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return parser


@cli_main
def main(argv: list[str] | None) -> int:
    """Dispatch one verb."""
    args = build_parser().parse_args(argv)
    _use_running_service_url()
    handler = {
        "serve": _serve, "status": _status, "keys": _keys, "runs": _runs, "run-status": _run_status,
        "logs": _logs, "cancel": _cancel, "endpoints": _endpoints, "set-default": _set_default,
        "schedules": _schedules,
    }[args.verb]  # fmt: skip
    return handler(args)


def _use_running_service_url() -> None:
    """Print URLs of the running service (its real port) unless AMLOPS_SERVICE_URL says otherwise."""
    import os

    from pipelines.local.workspace import service

    if not os.environ.get("AMLOPS_SERVICE_URL"):
        info = service.read_service_info()
        if info and info.get("url"):
            os.environ["AMLOPS_SERVICE_URL"] = info["url"]


def _serve(args: argparse.Namespace) -> int:
    from pipelines.local.workspace import service

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}", hint="e.g. --workers 2")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: other machines can reach it, and keys travel unencrypted (http)",
              file=sys.stderr)  # fmt: skip
    from pipelines.local.workspace.data_access import DataAccess

    service.serve(
        args.host,
        args.port,
        args.workers,
        as_json=args.json,
        data_access=DataAccess.from_folders(args.allow_data),
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from pipelines.local.workspace import keys as keys_mod
    from pipelines.local.workspace import schedules, service

    info = service.read_service_info()
    health = None
    if info:
        health = _get_health(info["url"])
    active = [s for s in schedules.list_schedules() if s["status"] == "Active"]
    store = service.key_store()
    key_values = store.keys()
    out = {
        "workspace": str(amlops_home()),
        "service": {
            "running": bool(info and health),
            "pid": info.get("pid") if info else None,
            "url": info.get("url") if info else None,
            "workers": info.get("workers") if info else None,
            "started": info.get("started") if info else None,
        },
        "queue": run_queue.counts(),
        "endpoints": len({e["id"] for e in publishing.list_endpoints()}),
        "active_schedules": [{"id": s["id"], "name": s["name"], "next_due": s["next_due"]} for s in active],
        "keys": {name: keys_mod.fingerprint(value) for name, value in key_values.items()},
    }
    if args.json:
        print_json(out)
        return 0
    svc = out["service"]
    if svc["running"]:
        print(
            f"service: running at {svc['url']} (pid {svc['pid']}, {svc['workers']} workers, since {svc['started']})"
        )
    else:
        print("service: not running (start it: python -m pipelines.workspace serve)")
    print(f"workspace: {out['workspace']}")
    queue = out["queue"]
    print("queue: " + (", ".join(f"{k} {v}" for k, v in sorted(queue.items())) or "empty"))
    print(f"endpoints: {out['endpoints']} (list them: python -m pipelines.workspace endpoints)")
    print(f"active schedules: {len(active)}")
    for s in out["active_schedules"]:
        print(f"  {s['name']} ({s['id']}): next {s['next_due']}")
    print("keys (fingerprints): " + ", ".join(f"{k} {v}" for k, v in out["keys"].items()))
    return 0


def _get_health(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - our own local URL
            return response.status == 200
    except OSError:
        return False


def _keys(args: argparse.Namespace) -> int:
    from pipelines.local.workspace import service

    store = service.key_store()
    values = store.regenerate(args.regen) if args.regen else store.keys()
    if args.primary:
        print(values["primary"])
        return 0
    if args.json:
        print_json(values)
        return 0
    if args.regen:
        print(f"regenerated the {args.regen} key (the old one no longer works)")
    for name in ("primary", "secondary"):
        print(f"{name}: {values[name]}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    found = [r for r in run_queue.list_runs() if args.status is None or r.get("status") == args.status]
    if args.limit > 0:
        found = found[: args.limit]
    if args.json:
        from pipelines.local.workspace.routes.runs import run_view

        print_json([run_view(r) for r in found])
        return 0
    if not found:
        print("no runs (start one: python -m pipelines.train run, or through a published endpoint)")
    for r in found:
        origin = f"schedule {r['schedule_id']}" if r.get("schedule_id") else (r.get("submitted_by") or "cli")
        print(
            f"{r.get('run_id')}  {r.get('status'):<10} {r.get('created', '')}  {r.get('pipeline', '')}  ({origin})"
        )
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from pipelines.local.workspace.routes.runs import run_view

    view = run_view(run_queue.read_run(args.run_id))
    if args.json:
        print_json(view)
        return 0
    print(f"run {view['run_id']}: {view['status']}")
    print(f"pipeline: {view['pipeline']}  experiment: {view['experiment']}")
    print(f"created {view['created']}, started {view['started'] or '-'}, ended {view['ended'] or '-'}")
    if view.get("schedule_id"):
        print(f"started by schedule {view['schedule_id']} for due time {view.get('due_time')}")
    for step in view["steps"]:
        seconds = f" ({step['seconds']} s)" if step.get("seconds") is not None else ""
        print(f"  {step['name']}: {step['status']}{seconds}")
    for name, value in sorted((view.get("metrics") or {}).items()):
        print(f"  {name} = {value}")
    if view.get("error"):
        print(f"error: {view['error'].get('message')}")
    print(f"run folder: {runs.run_folder(view['run_id'])}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    run_queue.read_run(args.run_id)
    if args.follow:  # a step's log may not exist yet
        return _follow(args)
    folder = runs.run_folder(args.run_id)
    found = {p.stem: p for p in sorted((folder / "logs").glob("*.log"))}
    if run_queue.driver_log(args.run_id).is_file():
        found["driver"] = run_queue.driver_log(args.run_id)
    if args.step:
        if args.step not in found:
            raise UserError(
                f"run {args.run_id} has no log {args.step!r}",
                hint="logs: " + (", ".join(found) or "none yet"),
            )
        found = {args.step: found[args.step]}
    if args.json:
        print_json(
            {"run_id": args.run_id, "logs": {n: p.read_text(errors="replace") for n, p in found.items()}}
        )
        return 0
    if not found:
        print(f"run {args.run_id} has no logs yet")
    for name, path in found.items():
        if len(found) > 1:
            print(f"===== {name} ({path}) =====")
        sys.stdout.write(path.read_text(errors="replace"))
    return 0


def _follow(args: argparse.Namespace) -> int:
    """Stream the run's log lines until it ends; exit 0 if it Completed, 1 if it Failed or was Canceled."""
    from pipelines.local.workspace import log_stream

    shown: list[str] = []

    def emit(name: str, line: str) -> None:
        if args.json:
            print(json.dumps({"log": name, "line": line}), flush=True)
            return
        if not args.step and shown[-1:] != [name]:
            print(f"===== {name} =====")
            shown.append(name)
        print(line, flush=True)

    status = log_stream.follow(args.run_id, emit, args.step)
    if args.json:
        print(json.dumps({"run_id": args.run_id, "status": status}))
    else:
        print(f"run {args.run_id}: {status}")
    return 0 if status == "Completed" else 1


def _cancel(args: argparse.Namespace) -> int:
    status = run_queue.cancel(args.run_id)
    if args.json:
        print_json({"run_id": args.run_id, "status": status})
        return 0
    if status == "Canceling":
        print(f"run {args.run_id}: cancel requested (the run stops its current step and is marked Canceled)")
    else:
        print(f"run {args.run_id}: {status}")
    return 0


def _endpoints(args: argparse.Namespace) -> int:
    from pipelines.local.workspace.routes.endpoints import endpoints_view

    found = endpoints_view()
    if args.json:
        print_json(found)
        return 0
    if not found:
        print("no pipeline endpoints (publish one: python -m pipelines.train publish)")
    for e in found:
        print(f"{e['name']}  id {e['id']}  default version {e['default_version']}")
        print(f"  {e['url']}")
        for v in e["versions"]:
            mark = "*" if v["version"] == e["default_version"] else " "
            print(f"  {mark} version {v['version']}: pipeline {v['pipeline_id']} ({v['created']})")
    return 0


def _set_default(args: argparse.Namespace) -> int:
    publishing.set_default_version(args.endpoint, args.version)
    if args.json:
        print_json({"endpoint": args.endpoint, "default_version": args.version})
        return 0
    print(f"endpoint {args.endpoint}: default version is now {args.version}")
    return 0


def _schedules(args: argparse.Namespace) -> int:
    from pipelines.backends import ScheduleRequest, load_backend
    from pipelines.local.workspace import schedules as local_schedules

    rec = None
    if args.action == "create":
        _check_trigger(args)
    if args.action == "create" and args.frequency:  # validated by the SDK before any backend is touched
        rec = local_schedules.recurrence(
            args.frequency, args.interval, start_time=args.start_time, time_zone=args.time_zone,
            hours=_ints(args.hours, "--hours"), minutes=_ints(args.minutes, "--minutes"),
            week_days=_names(args.week_days), time_of_day=args.time_of_day,
        )  # fmt: skip
    backend = load_backend(args.target)
    found = backend.schedules()
    if args.action == "list":
        rows = found.list(include_inactive=args.all)
        if args.json:
            print_json(rows)
        elif not rows and backend.name == "local":
            print("no schedules (publishing the training pipeline attaches its default schedule)")
        for s in [] if args.json else rows:
            print(found.line(s))
        return 0
    if args.action == "create":
        out = found.create(ScheduleRequest(
            args.name, rec, endpoint=args.endpoint, version=args.version, pipeline_id=args.pipeline_id,
            experiment_name=args.experiment, parameters=parse_assignments(args.param, "--param"),
            description=args.description, datastore=args.datastore, path_on_datastore=args.path_on_datastore,
            polling_interval=args.polling_interval, data_path_parameter_name=args.data_path_parameter_name,
        ))  # fmt: skip
    else:
        out = found.set_status(args.schedule, args.action)
    if args.json:
        print_json(out)
    else:
        print(found.done(args.action, out))
    return 0


def _check_trigger(args: argparse.Namespace) -> None:
    """Options of the other kind of trigger are an error, not silently ignored."""
    timetable = {"--interval": args.interval != 1, "--start-time": args.start_time, "--time-zone": args.time_zone,
                 "--hours": args.hours, "--minutes": args.minutes, "--week-days": args.week_days,
                 "--time-of-day": args.time_of_day}  # fmt: skip
    new_data = {"--path-on-datastore": args.path_on_datastore, "--polling-interval": args.polling_interval is not None,
                "--data-path-parameter-name": args.data_path_parameter_name}  # fmt: skip
    wrong, chosen = (timetable, "--datastore") if args.datastore else (new_data, "--frequency")
    given = [flag for flag, value in wrong.items() if value]
    if given:
        raise UserError(
            f"{', '.join(given)} cannot be used with {chosen}",
            hint="a schedule has a timetable or a datastore trigger",
        )


def _ints(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(
            f"{flag} expects comma-separated whole numbers, got {text!r}", hint=f"e.g. {flag} 3,15"
        ) from None


def _names(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


if __name__ == "__main__":
    sys.exit(main())
