"""Local real-time deployments: score.py served by azureml-inference-server-http under gunicorn, supervised.

The public verbs: deploy, start, stop, delete, update, keys, and the workspace service's ``revive_all``.
Each holds the service's lock (locking.py) from its first look at the record to its last write. The
pieces live beside this module:

- records.py     the record (``service.json``), its folder and files, the name rule, the service's state;
- supervisor.py  the detached process that runs gunicorn and starts it again when it dies;
- rollout.py     ``update --model``: the new model checked, then the workers replaced without a lost request;
- processes.py   which processes are a service's own, ending them, its port;
- key_auth.py    the key check in front of the inference server, in each gunicorn worker.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.local.serving.locking import (
    LOCK_WAIT_SECONDS,
    ServiceBusy,
    merge_runtime,
    replace_runtime,
    revoke_launch,
    service_lock,
)
from pipelines.local.serving.locking import write_json as _write_json
from pipelines.local.serving.processes import (
    check_port,
    free_port,
    group_is_ours,
    kill_group,
    kill_tree,
    own_process,
    pythonpath,
    supervisor_alive,
    wait_port_free,
)
from pipelines.local.serving.records import (
    DEFAULT_ENTRY_SCRIPT,
    DEFAULT_MAX_BODY_BYTES,
    NAME_PATTERN,
    LocalService,
    deployments_dir,
    key_store,
    list_services,
    load,
    now,
    read_runtime,
    service_dir,
    state,
    tail_lines,
    validate_name,
)
from pipelines.local.serving.rollout import switch_model
from pipelines.local.serving.supervisor import (
    STOP_GRACE_SECONDS,
    model_settings,
    server_command,
    server_env,
    worker_timeout,
)
from pipelines.settings import PROJECT_ROOT

__all__ = [
    "DEFAULT_ENTRY_SCRIPT",
    "DEFAULT_MAX_BODY_BYTES",
    "LOCK_WAIT_SECONDS",
    "NAME_PATTERN",
    "LocalService",
    "default_workers",
    "delete",
    "deploy",
    "deployments_dir",
    "key_store",
    "keys",
    "list_services",
    "load",
    "model_settings",
    "read_runtime",
    "regenerate_key",
    "revive_all",
    "server_command",
    "server_env",
    "service_dir",
    "start",
    "state",
    "stop",
    "tail_lines",
    "update",
    "validate_name",
    "wait_until_healthy",
    "worker_timeout",
]


def deploy(
    model_name: str,
    model_version: int | None,
    name: str,
    *,
    workers: int | None = None,
    port: int | None = None,
    entry_script: Path | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    app_insights: bool = False,
    scoring_timeout_ms: int | None = None,
    cors_origins: str = "",
    overwrite: bool = False,
    timeout: float = 180.0,
    progress: Callable[[str], None] | None = None,
) -> LocalService:
    """Deploy a registered model as a local service, start it and wait until it is healthy.

    Everything is checked before anything changes: a bad option leaves an existing service running.
    Overwriting a service keeps its port unless another is given. ``progress`` is told when the
    server starts.
    """
    from pipelines.local.workspace import registry

    validate_name(name)
    if (service_dir(name) / "service.json").is_file() and not overwrite:
        raise UserError(f"service {name!r} already exists", hint="pass --overwrite, or delete it first")
    model = registry.get_model(model_name, model_version)
    env = registry.model_env(model.name, model.version)
    script = Path(entry_script or DEFAULT_ENTRY_SCRIPT).resolve()
    workers = default_workers() if workers is None else workers
    _check_options(script, max_body_bytes, workers, scoring_timeout_ms)
    with _service_lock(name, "deploy"):
        previous = load(name) if (service_dir(name) / "service.json").is_file() else None
        if previous is not None and not overwrite:  # deployed by another command while this one waited
            raise UserError(f"service {name!r} already exists", hint="pass --overwrite, or delete it first")
        if previous is not None:
            key_store(name).keys()  # a damaged key file stops the overwrite here, with what to do
            _stop_locked(previous, "stopped")
            port = port or previous.port
        stamp = now()
        service = LocalService(
            name=name,
            model_name=model.name,
            model_version=model.version,
            entry_script=str(script),
            port=port or 0,  # 0: a free one, chosen with the record written
            workers=workers,
            app_root=env["AML_APP_ROOT"],
            model_dir=env["AZUREML_MODEL_DIR"],
            max_body_bytes=max_body_bytes,
            app_insights=app_insights,
            scoring_timeout_ms=scoring_timeout_ms,
            cors_origins=cors_origins,
            created=stamp,
            updated=stamp,
        )
        _write_new_record(service)
        if progress is not None:
            progress(f"deploying {model.name}:{model.version} as local service {name!r} on 127.0.0.1:{service.port}"
                     " (starting the server, loading the model)...")  # fmt: skip
        return _start_locked(service, timeout)


def _check_options(script: Path, max_body_bytes: int, workers: int, scoring_timeout_ms: int | None) -> None:
    """UserError for a deploy option no service can run with (before anything changes)."""
    if not script.is_file():
        raise UserError(f"entry script {script} not found", hint="pass the path of a score.py")
    if max_body_bytes < 1:
        raise UserError("the body limit must be positive", hint="e.g. --max-body-bytes 1048576")
    if workers < 1:
        raise UserError("workers must be at least 1", hint="e.g. --workers 2")
    if scoring_timeout_ms is not None and scoring_timeout_ms < 1:
        raise UserError("the scoring timeout must be at least 1 ms", hint="e.g. --scoring-timeout-ms 60000")


def _write_new_record(service: LocalService) -> None:
    """Choose the port (``service.port``, or a free one if 0) and write the record, keys and a Stopped state.

    Port choice and record are written together under the records lock: concurrent deploys never share a port.
    """
    with _records_lock():
        taken = {s.port for s in list_services() if s.name != service.name}
        if service.port in taken:
            raise UserError(
                f"port {service.port} belongs to another local service", hint="pass another --port"
            )
        service.port = service.port or free_port(exclude=taken)
        check_port(service.port)
        service.folder.mkdir(parents=True, exist_ok=True)
        key_store(service.name).keys()
        _write_json(service.folder / "service.json", asdict(service))
        replace_runtime(service.folder, {"state": "Stopped"})


def default_workers() -> int:
    """One gunicorn worker per core (each with one model thread)."""
    return max(1, os.cpu_count() or 1)


def start(name: str, *, timeout: float = 180.0) -> LocalService:
    """Start a stopped service (its supervisor and server) and wait until it answers its health route."""
    with _service_lock(name, "start"):
        service = load(name)
        if supervisor_alive(service):
            raise UserError(f"service {name!r} is already running", hint=f"stop it first: python -m pipelines.deploy stop --name {name}")  # fmt: skip
        return _start_locked(service, timeout)


def _start_locked(service: LocalService, timeout: float) -> LocalService:
    """Launch and wait until Healthy; a start that fails or times out is stopped again (lock held)."""
    with _records_lock():
        _launch(service)
    outcome = _await_health(service, timeout)
    if outcome == "Healthy":
        return service
    if outcome == "timeout":
        _stop_locked(service, "stopped")
        raise UserError(f"service {service.name!r} did not become healthy within {timeout:.0f} s",
                        hint=f"see {service.folder / 'server.log'}")  # fmt: skip
    raise _start_failure(service)


def revive_all() -> list[str]:
    """Start again every service that should be running but whose supervisor is gone; their names.

    That is a service deployed or started and never stopped, whose supervisor died with the machine or
    was killed; not one stopped with ``stop``, nor one that failed (its init() kept failing). What is left
    of it (an orphaned gunicorn still holding the port) is stopped first. The workspace service calls this
    every few seconds, so deployments come back with it after a restart of the machine. A service another
    operation holds is left for the next call.
    """
    revived = []
    for listed in list_services():
        try:
            with _service_lock(listed.name, "revive", wait=0):
                if not (listed.folder / "service.json").is_file():
                    continue  # deleted since it was listed
                service = load(listed.name)
                runtime = read_runtime(service.name)
                if runtime.get("desired") != "running" or runtime.get("state") == "Failed":
                    continue
                if supervisor_alive(service):
                    continue
                _stop_locked(service, "running")
                try:
                    with _records_lock():
                        _launch(service)
                except UserError as exc:  # its port is taken (yet): say so; the next call tries again
                    merge_runtime(service.folder, message=f"waiting to start again: {exc.message}")
                    continue
        except ServiceBusy:
            continue
        revived.append(listed.name)
    return revived


def _launch(service: LocalService) -> None:
    """Start the supervisor of a service that is not running (it starts gunicorn); do not wait.

    The new launch's token goes in the runtime record and to the supervisor, which writes the record only
    while it carries that token (see locking.py).
    """
    check_port(service.port, busy_hint="free it, or deploy the service again on another port: python -m"
               f" pipelines.deploy --name {service.name} --model {service.model_name}:{service.model_version}"
               " --overwrite --port N")  # fmt: skip
    folder = service.folder
    token = secrets.token_hex(8)
    replace_runtime(folder, {"state": "Transitioning", "restarts": 0, "desired": "running", "launch": token})
    with open(folder / "supervisor.log", "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.local.serving.supervisor", "supervise", str(folder), token],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": pythonpath()},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    merge_runtime(folder, owner=token, supervisor_pid=proc.pid)


def wait_until_healthy(name: str, *, timeout: float = 180.0) -> LocalService:
    """Block until the service is Healthy; UserError (with the log's tail) if it fails or times out."""
    service = load(name)
    outcome = _await_health(service, timeout)
    if outcome == "Healthy":
        return service
    if outcome == "timeout":
        raise UserError(f"service {name!r} did not become healthy within {timeout:.0f} s",
                        hint=f"see {service.folder / 'server.log'}")  # fmt: skip
    raise _start_failure(service)


def _await_health(service: LocalService, timeout: float) -> str:
    """Healthy, Failed (or its supervisor gone) as "failed", or "timeout"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = state(service.name)
        if current == "Healthy":
            return "Healthy"
        if current == "Failed" or not supervisor_alive(service):
            return "failed"
        time.sleep(0.25)
    return "timeout"


def _start_failure(service: LocalService) -> UserError:
    tail = "\n".join(tail_lines(service.folder / "server.log", 15))
    message = read_runtime(service.name).get("message", "")
    return UserError(f"service {service.name!r} failed to start: {message}\n{tail}",
                     hint=f"full log: {service.folder / 'server.log'}")  # fmt: skip


def stop(name: str) -> bool:
    """Stop a service's supervisor and server; False if it was not running. It stays stopped (see revive_all)."""
    with _service_lock(name, "stop"):
        return _stop_locked(load(name), "stopped")


def _stop_locked(service: LocalService, desired: str) -> bool:
    """Stop what runs of a service and record ``desired``; False if nothing ran (the service lock is held).

    The supervisor loses its right to write the record first, then is asked to stop its server; what is
    still alive after the grace period is killed, and the port is seen free before this returns.
    """
    import psutil

    runtime = revoke_launch(service.folder, desired=desired)
    pids = [p for p in (runtime.get("supervisor_pid"), runtime.get("server_pid")) if p]
    procs = [p for p in (own_process(pid, service) for pid in pids) if p is not None]
    if not procs:
        stopped = runtime.get("state") in ("Stopped", "Failed")
        merge_runtime(service.folder, **({} if stopped else {"state": "Stopped"}))
        return False
    with contextlib.suppress(psutil.NoSuchProcess):  # the supervisor stops the server gracefully
        procs[0].send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_SECONDS + 10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            kill_tree(proc)
    psutil.wait_procs(alive, timeout=5)
    server = runtime.get("server_pid")
    if server and group_is_ours(int(server), service):
        kill_group(int(server))  # workers outliving their master keep its process group
    wait_port_free(service.port)
    merge_runtime(service.folder, state="Stopped", server_pid=None, supervisor_pid=None)
    return True


def delete(name: str) -> None:
    """Stop a service and remove its folder (record, keys, logs)."""
    with _service_lock(name, "delete"):
        _stop_locked(load(name), "stopped")
        shutil.rmtree(service_dir(name))


def update(
    name: str,
    *,
    app_insights: bool | None = None,
    model_name: str | None = None,
    model_version: int | None = None,
    timeout: float = 180.0,
) -> LocalService:
    """Change a service's settings; running workers pick them up on their next request.

    A new model (``model_name``, latest version unless ``model_version``) is first loaded in a separate
    process with the service's entry script, whose ``init()`` must succeed, or nothing changes. A running
    service then starts as many new workers, which load the new model while the old ones keep answering, and
    only then tells the old ones to finish their current request and exit: no request is refused or lost
    (rollout.py). Updates of one service are serialised: a second waits until the first has finished, then
    starts from what the first left.
    """
    with _service_lock(name, "update"):
        service = load(name)
        if model_name is not None:
            service = switch_model(service, model_name, model_version, timeout)
        if app_insights is not None:
            service.app_insights = app_insights
        service.updated = now()
        _write_json(service.folder / "service.json", asdict(service))
        return service


def keys(name: str) -> dict[str, str]:
    """The service's primary and secondary keys."""
    load(name)
    return key_store(name).keys()


def regenerate_key(name: str, which: str) -> dict[str, str]:
    """A new primary or secondary key; the running workers accept it (and reject the old) at once."""
    load(name)
    return key_store(name).regenerate(which)


def _service_lock(name: str, operation: str, wait: float | None = None) -> Any:
    """The lock one operation on service ``name`` holds from start to end (see locking.py); a command waits
    up to LOCK_WAIT_SECONDS for the operation before it."""
    validate_name(name)
    return service_lock(deployments_dir(), name, operation, LOCK_WAIT_SECONDS if wait is None else wait)


@contextlib.contextmanager
def _records_lock() -> Iterator[None]:
    """An exclusive lock on the deployments folder (threads and processes alike)."""
    import fcntl

    root = deployments_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
