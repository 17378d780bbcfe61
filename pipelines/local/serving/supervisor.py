"""The supervisor of a local deployment: the process that runs gunicorn and starts it again when it dies.

``python -m pipelines.local.serving.supervisor supervise <folder> <launch token>`` (started detached by
``deployments.start``) runs gunicorn bound to 127.0.0.1 with N sync workers, each loading the inference
server's Flask app wrapped by the key-auth middleware (key_auth.py) and the scoring script with its
``init()``. gunicorn replaces a worker that dies; the supervisor restarts gunicorn if it dies, and gives
up (state Failed) when it keeps dying at start-up (e.g. ``init()`` fails). It writes the runtime record
only while the record carries its launch token (see locking.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from pipelines.local.serving.locking import merge_runtime
from pipelines.local.serving.processes import kill_group, pythonpath
from pipelines.local.serving.records import LocalService, now, read_record
from pipelines.settings import PROJECT_ROOT

QUICK_EXIT_SECONDS = 20.0
MAX_QUICK_EXITS = 3
HEALTH_INTERVAL_SECONDS = 0.5
STOP_GRACE_SECONDS = 20.0
# gunicorn's --timeout, as the inference server's own CLI sets it (its WORKER_TIMEOUT variable)
WORKER_TIMEOUT_SECONDS = 300


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


def model_settings(service: LocalService) -> dict[str, str]:
    """The variables that choose the model a worker loads; each worker sets them again from service.json."""
    return {
        "AML_APP_ROOT": service.app_root,
        "AZUREML_MODEL_DIR": service.model_dir,
        "AMLOPS_MODEL_NAME": service.model_name,
    }


def server_env(service: LocalService) -> dict[str, str]:
    """The environment Azure's inference image gives the server, pointed at the local model copy."""
    from azureml_inference_server_http import __version__ as server_version

    threads = max(1, (os.cpu_count() or 1) // service.workers)
    inherited = {k: v for k, v in os.environ.items() if k != "AML_CORS_ORIGINS"}  # the service's own setting
    return {
        **inherited,
        "PYTHONPATH": pythonpath(),
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
    """Run the service's server until SIGTERM, restarting it if it dies; 1 if it gave up (state Failed).

    It writes the runtime record only while the record carries ``token``, its launch's (see locking.py).
    """
    read_record(folder)  # a folder without a record is no service to supervise
    return _Supervisor(folder, token).run()


class _Supervisor:
    """The supervisor's loop and what it counts: restarts, and exits at start-up in a row."""

    def __init__(self, folder: Path, token: str) -> None:
        self.folder = folder
        self.token = token
        self.stopping = False
        self.restarts = 0
        self.quick_exits = 0

    def record(self, **fields: Any) -> None:
        merge_runtime(self.folder, owner=self.token, **fields)

    def on_term(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        self.record(state="Transitioning", supervisor_pid=os.getpid(), restarts=0, message="")
        proc = None
        while not self.stopping:
            proc, started, healthy = self._serve()
            if self.stopping:
                break
            if not self._after_exit(proc, started, healthy):
                return 1
        self._shut_down(proc)
        return 0

    def _serve(self) -> tuple[subprocess.Popen[bytes], float, bool]:
        """Start gunicorn with the record as it is now and watch it until it exits or a stop is asked."""
        service = read_record(self.folder)  # as updated since
        started = time.monotonic()
        with open(self.folder / "server.log", "a") as log:
            proc = subprocess.Popen(
                server_command(service), cwd=PROJECT_ROOT, env=server_env(service),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers orphaned by a dead master are killed
            )  # fmt: skip
        self.record(state="Transitioning", server_pid=proc.pid, restarts=self.restarts)
        _log(f"started gunicorn pid {proc.pid} on 127.0.0.1:{service.port} with {service.workers} worker(s)")
        healthy = False
        while not self.stopping and proc.poll() is None:
            if not healthy and _healthy(service):
                healthy = True
                self.quick_exits = 0
                self.record(state="Healthy", message="")
                _log("healthy")
            time.sleep(HEALTH_INTERVAL_SECONDS)
        return proc, started, healthy

    def _after_exit(self, proc: subprocess.Popen[bytes], started: float, healthy: bool) -> bool:
        """Record gunicorn's exit and wait before the next start; False if it keeps dying at start-up."""
        code = proc.returncode
        kill_group(proc.pid)
        quick = time.monotonic() - started < QUICK_EXIT_SECONDS and not healthy
        self.quick_exits = self.quick_exits + 1 if quick else 0
        self.restarts += 1
        _log(f"gunicorn exited with code {code}")
        if self.quick_exits >= MAX_QUICK_EXITS:
            message = f"the server exited with code {code} at start-up {self.quick_exits} times in a row"
            self.record(state="Failed", server_pid=None, message=message, restarts=self.restarts)
            _log(message + "; giving up")
            return False
        self.record(state="Transitioning", server_pid=None, restarts=self.restarts,
                    message=f"restarting after exit code {code}")  # fmt: skip
        time.sleep(min(2.0**self.quick_exits, 10.0) if quick else 0.2)
        return True

    def _shut_down(self, proc: subprocess.Popen[bytes] | None) -> None:
        """Stop gunicorn gracefully (killed after STOP_GRACE_SECONDS), then what is left of its group."""
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            kill_group(proc.pid)
        self.record(state="Stopped", server_pid=None, supervisor_pid=None)
        _log("stopped")


def _healthy(service: LocalService) -> bool:
    try:
        with urllib.request.urlopen(service.health_uri, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _log(message: str) -> None:
    print(f"{now()} supervisor: {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``supervise <folder> <token>``: the entry point of a service's supervisor process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "supervise":
        print(
            "usage: python -m pipelines.local.serving.supervisor supervise <service folder> <launch token>",
            file=sys.stderr,
        )
        return 2
    return supervise(Path(args[1]), args[2])


if __name__ == "__main__":
    sys.exit(main())
