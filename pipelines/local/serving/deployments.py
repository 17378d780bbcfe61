"""Local real-time deployments: score.py served by azureml-inference-server-http under gunicorn, supervised.

One folder per service, ``AMLOPS_HOME/deployments/<name>/``:

- ``service.json``  what was deployed (model, entry script, port, workers, body limit, app insights);
- ``keys.json``     primary and secondary keys (0600, see keys.py);
- ``runtime.json``  written by the supervisor: state (Azure's names plus Stopped), pids, restarts;
- ``server.log``    gunicorn's, the inference server's and the scoring script's output;
- ``requests.log``  one JSON line per request with status and latency, when App Insights is enabled;
- ``supervisor.log`` the supervisor's own lines;
- ``workers/<pid>`` the model each running worker has loaded (for a model update's worker replacement);
- ``model-check.log`` the output of the last model that failed to load in ``update --model``.

Processes: a small supervisor (``python -m pipelines.local.serving.deployments supervise <folder>``, detached)
runs gunicorn bound to 127.0.0.1 with N sync workers, each loading the inference server's Flask app
wrapped by the key-auth middleware (key_auth.py) and the scoring script with its ``init()``. gunicorn
replaces a worker that dies; the supervisor restarts gunicorn if it dies, and gives up (state Failed)
when it keeps dying at start-up (e.g. ``init()`` fails).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.local.serving.locking import (
    LOCK_WAIT_SECONDS,
    ServiceBusy,
    merge_runtime,
    read_json,
    replace_runtime,
    revoke_launch,
    service_lock,
)
from pipelines.local.serving.locking import write_json as _write_json
from pipelines.local.workspace.keys import KeyStore
from pipelines.settings import PROJECT_ROOT, amlops_home

DEFAULT_ENTRY_SCRIPT = PROJECT_ROOT / "scoring" / "score.py"
DEFAULT_MAX_BODY_BYTES = 1 << 20
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
QUICK_EXIT_SECONDS = 20.0
MAX_QUICK_EXITS = 3
HEALTH_INTERVAL_SECONDS = 0.5
STOP_GRACE_SECONDS = 20.0
# gunicorn's --timeout, as the inference server's own CLI sets it (its WORKER_TIMEOUT variable)
WORKER_TIMEOUT_SECONDS = 300


@dataclass
class LocalService:
    """The record of one local deployment (``service.json``)."""

    name: str
    model_name: str
    model_version: int
    entry_script: str
    port: int
    workers: int
    app_root: str
    model_dir: str
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    app_insights: bool = False
    scoring_timeout_ms: int | None = None  # None: the inference server's own default (as on ACI)
    cors_origins: str = ""  # the inference server's AML_CORS_ORIGINS: browser origins allowed to call
    created: str = ""
    updated: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def base_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def scoring_uri(self) -> str:
        return f"{self.base_uri}/score"

    @property
    def swagger_uri(self) -> str:
        return f"{self.base_uri}/swagger.json"

    @property
    def swagger_ui_uri(self) -> str:
        return f"{self.base_uri}/swagger-ui/"

    @property
    def health_uri(self) -> str:
        return f"{self.base_uri}/"

    @property
    def folder(self) -> Path:
        return service_dir(self.name)

    def describe(self) -> dict[str, Any]:
        """The record plus its URIs, state and file locations (what ``show`` prints)."""
        runtime = read_runtime(self.name)
        current = state(self.name)
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("extra_env", "app_root")},
            "model": f"{self.model_name}:{self.model_version}",
            "state": current,
            "restarts": runtime.get("restarts", 0),
            "message": runtime.get("message", "") or _down_message(self, current),
            "scoring_uri": self.scoring_uri,
            "swagger_uri": self.swagger_uri,
            "swagger_ui_uri": self.swagger_ui_uri,
            "health_uri": self.health_uri,
            "folder": str(self.folder),
            "keys_file": str(self.folder / "keys.json"),
            "server_log": str(self.folder / "server.log"),
            "request_log": str(self.folder / "requests.log"),
        }


def deployments_dir() -> Path:
    return amlops_home() / "deployments"


def service_dir(name: str) -> Path:
    return deployments_dir() / name


def validate_name(name: str) -> str:
    """Azure's web service naming rule (3-32 chars, lowercase letters, digits, dashes)."""
    if not NAME_PATTERN.match(name or ""):
        raise UserError(
            f"service name {_shown(name)} is not valid",
            hint="use 3-32 lowercase letters, digits or dashes, starting with a letter (e.g. bike-demand-svc)",
        )
    return name


def _shown(name: str) -> str:
    """A name quoted for an error line, cut short if it is long."""
    return repr(name) if len(name or "") <= 40 else f"{name[:40]!r}... ({len(name)} characters)"


def load(name: str) -> LocalService:
    """The record of a local service; UserError if there is none (also for a name no service can have)."""
    path = service_dir(name) / "service.json"
    if not NAME_PATTERN.match(name or "") or not path.is_file():
        known = ", ".join(s.name for s in list_services()) or "none"
        raise UserError(f"no local service named {_shown(name)}", hint=f"deployed services: {known}")
    return LocalService(**json.loads(path.read_text()))


def list_services() -> list[LocalService]:
    """All local services, by name."""
    root = deployments_dir()
    if not root.is_dir():
        return []
    return [LocalService(**json.loads(p.read_text())) for p in sorted(root.glob("*/service.json"))]


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
    if not script.is_file():
        raise UserError(f"entry script {script} not found", hint="pass the path of a score.py")
    if max_body_bytes < 1:
        raise UserError("the body limit must be positive", hint="e.g. --max-body-bytes 1048576")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise UserError("workers must be at least 1", hint="e.g. --workers 2")
    if scoring_timeout_ms is not None and scoring_timeout_ms < 1:
        raise UserError("the scoring timeout must be at least 1 ms", hint="e.g. --scoring-timeout-ms 60000")
    with _service_lock(name, "deploy"):
        folder = service_dir(name)
        previous = load(name) if (folder / "service.json").is_file() else None
        if previous is not None and not overwrite:  # deployed by another command while this one waited
            raise UserError(f"service {name!r} already exists", hint="pass --overwrite, or delete it first")
        if previous is not None:
            key_store(name).keys()  # a damaged key file stops the overwrite here, with what to do
            _stop_locked(previous, "stopped")
            port = port or previous.port
        with _records_lock():  # port choice and record together: concurrent deploys never share a port
            taken = {s.port for s in list_services() if s.name != name}
            if port in taken:
                raise UserError(f"port {port} belongs to another local service", hint="pass another --port")
            chosen_port = port or _free_port(exclude=taken)
            _check_port(chosen_port)
            stamp = _now()
            service = LocalService(
                name=name,
                model_name=model.name,
                model_version=model.version,
                entry_script=str(script),
                port=chosen_port,
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
            folder.mkdir(parents=True, exist_ok=True)
            key_store(name).keys()
            _write_json(folder / "service.json", asdict(service))
            replace_runtime(folder, {"state": "Stopped"})
        if progress is not None:
            progress(f"deploying {model.name}:{model.version} as local service {name!r} on 127.0.0.1:{chosen_port}"
                     " (starting the server, loading the model)...")  # fmt: skip
        return _start_locked(service, timeout)


def default_workers() -> int:
    """One gunicorn worker per core (each with one model thread)."""
    return max(1, os.cpu_count() or 1)


def start(name: str, *, timeout: float = 180.0) -> LocalService:
    """Start a stopped service (its supervisor and server) and wait until it answers its health route."""
    with _service_lock(name, "start"):
        service = load(name)
        if _supervisor_alive(service):
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
                if _supervisor_alive(service):
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
    _check_port(service.port, busy_hint="free it, or deploy the service again on another port: python -m"
                f" pipelines.deploy --name {service.name} --model {service.model_name}:{service.model_version}"
                " --overwrite --port N")  # fmt: skip
    folder = service.folder
    token = secrets.token_hex(8)
    replace_runtime(folder, {"state": "Transitioning", "restarts": 0, "desired": "running", "launch": token})
    with open(folder / "supervisor.log", "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.local.serving.deployments", "supervise", str(folder), token],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
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
        if current == "Failed" or not _supervisor_alive(service):
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
    procs = [p for p in (_own_process(pid, service) for pid in pids) if p is not None]
    if not procs:
        stopped = runtime.get("state") in ("Stopped", "Failed")
        merge_runtime(service.folder, **({} if stopped else {"state": "Stopped"}))
        return False
    with contextlib.suppress(psutil.NoSuchProcess):  # the supervisor stops the server gracefully
        procs[0].send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_SECONDS + 10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            _kill_tree(proc)
    psutil.wait_procs(alive, timeout=5)
    server = runtime.get("server_pid")
    if server and _group_is_ours(int(server), service):
        _kill_group(int(server))  # workers outliving their master keep its process group
    _wait_port_free(service.port)
    merge_runtime(service.folder, state="Stopped", server_pid=None, supervisor_pid=None)
    return True


def _wait_port_free(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _check_port(port)
            return
        except UserError:
            time.sleep(0.1)


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
    only then tells the old ones to finish their current request and exit: no request is refused or lost.
    Updates of one service are serialised: a second waits until the first has finished, then starts from
    what the first left.
    """
    with _service_lock(name, "update"):
        service = load(name)
        if model_name is not None:
            service = _switch_model(service, model_name, model_version, timeout)
        if app_insights is not None:
            service.app_insights = app_insights
        service.updated = _now()
        _write_json(service.folder / "service.json", asdict(service))
        return service


def model_settings(service: LocalService) -> dict[str, str]:
    """The variables that choose the model a worker loads; each worker sets them again from service.json."""
    return {
        "AML_APP_ROOT": service.app_root,
        "AZUREML_MODEL_DIR": service.model_dir,
        "AMLOPS_MODEL_NAME": service.model_name,
    }


def _switch_model(
    service: LocalService, model_name: str, version: int | None, timeout: float
) -> LocalService:
    from pipelines.local.workspace import registry

    model = registry.get_model(model_name, version)
    env = registry.model_env(model.name, model.version)
    new = replace(service, model_name=model.name, model_version=model.version, app_root=env["AML_APP_ROOT"],
                  model_dir=env["AZUREML_MODEL_DIR"], updated=_now())  # fmt: skip
    _preflight(new, timeout)
    running = _server_process(service)
    _write_json(service.folder / "service.json", asdict(new))
    if running is not None:
        try:
            _roll_workers(new, running, timeout)
        except UserError:
            _write_json(service.folder / "service.json", asdict(service))  # back to the model that works
            with contextlib.suppress(OSError):
                running.send_signal(signal.SIGHUP)  # workers that loaded the new model are replaced too
            raise
    return new


def _preflight(service: LocalService, timeout: float) -> None:
    """Load the entry script and the model as a worker would, in a throwaway process: init() must pass."""
    loader = "from azureml_inference_server_http.server.entry import app"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", loader], cwd=PROJECT_ROOT, env=server_env(service),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise UserError(
            f"{service.model_name}:{service.model_version} did not load within {timeout:.0f} s; the service is"
            " unchanged", hint="pass a longer --timeout",
        ) from None  # fmt: skip
    if proc.returncode != 0:
        log = service.folder / "model-check.log"
        log.write_text(proc.stdout + proc.stderr)
        # the first exception line of the traceback is the script's own; the server's wrapper comes last
        raised = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")
        reason = next((line for line in (proc.stdout + proc.stderr).splitlines() if raised.match(line)), "")
        raise UserError(
            f"{service.model_name}:{service.model_version} does not load with {Path(service.entry_script).name}"
            f" (init() failed: {reason.strip() or f'exit code {proc.returncode}'}); the service is unchanged",
            hint=f"its output: {log}",
        )


def _server_process(service: LocalService) -> Any:
    """The running gunicorn master of a service, or None."""
    pid = read_runtime(service.name).get("server_pid")
    if not pid or not _supervisor_alive(service):
        return None
    return _own_process(pid, service)


def _roll_workers(service: LocalService, master: Any, timeout: float) -> None:
    """Replace the workers by as many that have loaded the record's model before the old ones stop (TTIN/TTOU)."""
    ready_dir = service.folder / "workers"
    old = {p.pid for p in master.children()}  # (each worker drops the markers of gone ones as it starts)
    wanted = f"{service.model_name}:{service.model_version}"
    deadline = time.monotonic() + timeout

    def wait_until(condition: Any, what: str) -> None:
        while not condition():
            if time.monotonic() > deadline or not master.is_running():
                raise UserError(f"{what} within {timeout:.0f} s", hint=f"see {service.folder / 'server.log'}")
            time.sleep(0.05)

    def workers() -> tuple[list[int], int]:
        """New workers' pids, and how many old ones are left."""
        pids = [p.pid for p in master.children()]
        return [pid for pid in pids if pid not in old], sum(1 for pid in pids if pid in old)

    # One signal at a time, each seen to act: the kernel merges a signal sent again before it is handled.
    for n in range(1, len(old) + 1):  # as many new workers, loading the model now in service.json ...
        master.send_signal(signal.SIGTTIN)
        wait_until(lambda: len(workers()[0]) >= n, "gunicorn did not start a new worker")  # noqa: B023
    wait_until(
        lambda: all(_worker_model(ready_dir, pid) == wanted for pid in workers()[0]),
        f"the new workers did not load {wanted}",
    )
    for n in range(1, len(old) + 1):  # ... then as many fewer: gunicorn stops the oldest after its request
        master.send_signal(signal.SIGTTOU)
        wait_until(lambda: workers()[1] <= len(old) - n, "the old workers did not stop")  # noqa: B023


def _worker_model(ready_dir: Path, pid: int) -> str | None:
    try:
        return (ready_dir / str(pid)).read_text()
    except OSError:
        return None


def key_store(name: str, folder: Path | None = None) -> KeyStore:
    """The service's keys (in ``folder``, default its folder in this workspace)."""
    path = (folder or service_dir(name)) / "keys.json"
    return KeyStore(path, f"python -m pipelines.deploy keys --name {name} --regen primary")


def keys(name: str) -> dict[str, str]:
    """The service's primary and secondary keys."""
    load(name)
    return key_store(name).keys()


def regenerate_key(name: str, which: str) -> dict[str, str]:
    """A new primary or secondary key; the running workers accept it (and reject the old) at once."""
    load(name)
    return key_store(name).regenerate(which)


def state(name: str) -> str:
    """Healthy, Transitioning, Unhealthy, Failed or Stopped.

    A service that should be running but whose supervisor is gone (killed, or the machine restarted) is
    Unhealthy until the workspace service, or ``start``, brings it back; Stopped is only for one stopped
    by its user.
    """
    service = load(name)
    runtime = read_runtime(name)
    recorded = runtime.get("state", "Stopped")
    if recorded == "Failed":
        return "Failed"
    if not _supervisor_alive(service):
        return "Unhealthy" if runtime.get("desired") == "running" else "Stopped"
    return recorded


def _down_message(service: LocalService, current: str) -> str:
    """What to do about a service in state ``current`` if its supervisor is gone unasked, else ""."""
    if current != "Unhealthy" or _supervisor_alive(service):
        return ""
    return (
        "not running although it was not stopped: the workspace service (python -m pipelines.workspace"
        f" serve) starts it again within seconds; or run: python -m pipelines.deploy start --name {service.name}"
    )


def read_runtime(name: str) -> dict[str, Any]:
    return read_json(service_dir(name) / "runtime.json")


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a text file (empty if it does not exist)."""
    if not path.is_file():
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 256 * 1024))
        return fh.read().decode(errors="replace").splitlines()[-n:]


# --- the supervisor -------------------------------------------------------------------------------


def server_command(service: LocalService) -> list[str]:
    """gunicorn serving the inference server's app behind the key-auth middleware, on 127.0.0.1 only."""
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"127.0.0.1:{service.port}",
        "--workers", str(service.workers),
        "--worker-class", "sync",
        "--timeout", str(worker_timeout(service.scoring_timeout_ms)),
        "--graceful-timeout", "10",
        "--error-logfile", "-",
        "--log-level", "info",
        "--no-control-socket",  # gunicorn's default socket path is shared by every instance
        "pipelines.local.serving.key_auth:from_environment()",
    ]  # fmt: skip


def worker_timeout(scoring_timeout_ms: int | None) -> int:
    """gunicorn's silent-worker timeout (s): longer than the scoring timeout, so a slow run() gets the server's
    own answer (500 "Scoring timeout after N ms") instead of its worker being killed mid-request."""
    if scoring_timeout_ms is None:
        return WORKER_TIMEOUT_SECONDS
    return max(WORKER_TIMEOUT_SECONDS, -(-scoring_timeout_ms // 1000) + 30)


def server_env(service: LocalService) -> dict[str, str]:
    """The environment Azure's inference image gives the server, pointed at the local model copy."""
    from azureml_inference_server_http import __version__ as server_version

    threads = max(1, (os.cpu_count() or 1) // service.workers)
    inherited = {k: v for k, v in os.environ.items() if k != "AML_CORS_ORIGINS"}  # the service's own setting
    return {
        **inherited,
        "PYTHONPATH": _pythonpath(),
        **model_settings(service),
        "AZUREML_ENTRY_SCRIPT": service.entry_script,
        "AMLOPS_DEPLOYMENT_DIR": str(service.folder),
        "SERVICE_NAME": service.name,
        "AML_APP_INSIGHTS_ENABLED": "false",
        "HTTP_X_MS_SERVER_VERSION": f"azmlinfsrv/{server_version}",
        "OMP_NUM_THREADS": str(threads),
        **({"SCORING_TIMEOUT_MS": str(service.scoring_timeout_ms)} if service.scoring_timeout_ms else {}),
        **({"AML_CORS_ORIGINS": service.cors_origins} if service.cors_origins else {}),
        **service.extra_env,
    }


def supervise(folder: Path, token: str) -> int:
    """Run the service's server until SIGTERM, restarting it if it dies; the supervisor's main loop.

    It writes the runtime record only while the record carries ``token``, its launch's (see locking.py).
    """
    service = LocalService(**json.loads((folder / "service.json").read_text()))
    stopping = False

    def _merge_runtime(folder: Path, **fields: Any) -> None:
        merge_runtime(folder, owner=token, **fields)

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    restarts = 0
    quick_exits = 0
    _merge_runtime(folder, state="Transitioning", supervisor_pid=os.getpid(), restarts=0, message="")
    while not stopping:
        service = LocalService(**json.loads((folder / "service.json").read_text()))  # as updated since
        started = time.monotonic()
        with open(folder / "server.log", "a") as log:
            proc = subprocess.Popen(
                server_command(service), cwd=PROJECT_ROOT, env=server_env(service),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers orphaned by a dead master are killed
            )  # fmt: skip
        _merge_runtime(folder, state="Transitioning", server_pid=proc.pid, restarts=restarts)
        _log(f"started gunicorn pid {proc.pid} on 127.0.0.1:{service.port} with {service.workers} worker(s)")
        healthy = False
        while not stopping and proc.poll() is None:
            if not healthy and _healthy(service):
                healthy = True
                quick_exits = 0
                _merge_runtime(folder, state="Healthy", message="")
                _log("healthy")
            time.sleep(HEALTH_INTERVAL_SECONDS)
        if stopping:
            break
        code = proc.returncode
        _kill_group(proc.pid)
        quick = time.monotonic() - started < QUICK_EXIT_SECONDS and not healthy
        quick_exits = quick_exits + 1 if quick else 0
        restarts += 1
        _log(f"gunicorn exited with code {code}")
        if quick_exits >= MAX_QUICK_EXITS:
            message = f"the server exited with code {code} at start-up {quick_exits} times in a row"
            _merge_runtime(folder, state="Failed", server_pid=None, message=message, restarts=restarts)
            _log(message + "; giving up")
            return 1
        _merge_runtime(folder, state="Transitioning", server_pid=None, restarts=restarts,
                       message=f"restarting after exit code {code}")  # fmt: skip
        time.sleep(min(2.0**quick_exits, 10.0) if quick else 0.2)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _kill_group(proc.pid)
    _merge_runtime(folder, state="Stopped", server_pid=None, supervisor_pid=None)
    _log("stopped")
    return 0


def _healthy(service: LocalService) -> bool:
    try:
        with urllib.request.urlopen(service.health_uri, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _log(message: str) -> None:
    print(f"{_now()} supervisor: {message}", flush=True)


def _own_process(pid: int, service: LocalService) -> Any:
    """The process ``pid`` if it is this service's supervisor or gunicorn (never another process)."""
    import psutil

    try:
        proc = psutil.Process(int(pid))
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if proc.status() == psutil.STATUS_ZOMBIE:
        return None
    ours = f"supervise {service.folder}" in cmdline or (
        "gunicorn" in cmdline and f"127.0.0.1:{service.port}" in cmdline
    )
    return proc if ours else None


def _supervisor_alive(service: LocalService) -> bool:
    pid = read_runtime(service.name).get("supervisor_pid")
    return bool(pid) and _own_process(pid, service) is not None


def _kill_tree(proc: Any) -> None:
    import psutil

    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.kill()


def _group_is_ours(pgid: int, service: LocalService) -> bool:
    """Whether process group ``pgid`` still holds one of this service's gunicorn processes."""
    import psutil

    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(OSError):
            if os.getpgid(proc.info["pid"]) == pgid and _own_process(proc.info["pid"], service) is not None:
                return True
    return False


def _kill_group(pgid: int) -> None:
    """Kill what is left of a server's process group (workers outliving their master)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


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


def _free_port(exclude: set[int] | None = None) -> int:
    """A port on 127.0.0.1 that nothing listens on and no other local service has recorded."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in (exclude or set()):
            return port
    raise UserError("found no free port on 127.0.0.1", hint="pass --port")


def _check_port(port: int, busy_hint: str = "pass another --port") -> None:
    if not 0 < port < 65536:
        raise UserError(
            f"port {port} is not valid", hint="use 1024-65535, or leave --port out to pick a free one"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as gunicorn binds: TIME_WAIT is no conflict
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise UserError(f"port {port} on 127.0.0.1 is in use", hint=busy_hint) from None


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(PROJECT_ROOT), existing]) if existing else str(PROJECT_ROOT)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    """``supervise <folder>``: the entry point of a service's supervisor process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "supervise":
        print(
            "usage: python -m pipelines.local.serving.deployments supervise <service folder> <launch token>",
            file=sys.stderr,
        )
        return 2
    return supervise(Path(args[1]), args[2])


if __name__ == "__main__":
    sys.exit(main())
