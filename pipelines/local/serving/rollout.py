"""A new model for a running service (``update --model``), without a refused or lost request.

The new model is first loaded with the service's entry script in a throwaway process (its ``init()`` must
pass, or nothing changes). A running gunicorn then starts as many new workers (SIGTTIN), which load the
model now in ``service.json`` while the old ones keep answering, and only then stops as many old ones
(SIGTTOU), each after its current request. If that fails, the record goes back to the model that works.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.local.serving.locking import write_json
from pipelines.local.serving.processes import own_process, supervisor_alive
from pipelines.local.serving.records import LocalService, now, read_runtime
from pipelines.local.serving.supervisor import server_env
from pipelines.settings import PROJECT_ROOT


def switch_model(service: LocalService, model_name: str, version: int | None, timeout: float) -> LocalService:
    """Point the service at a registered model (latest version unless ``version``) and roll its workers.

    The caller holds the service's lock; the record is written here, and back if the roll fails.
    """
    from pipelines.local.workspace import registry

    model = registry.get_model(model_name, version)
    env = registry.model_env(model.name, model.version)
    new = replace(service, model_name=model.name, model_version=model.version, app_root=env["AML_APP_ROOT"],
                  model_dir=env["AZUREML_MODEL_DIR"], updated=now())  # fmt: skip
    _preflight(new, timeout)
    running = _server_process(service)
    write_json(service.folder / "service.json", asdict(new))
    if running is not None:
        try:
            _roll_workers(new, running, timeout)
        except UserError:
            write_json(service.folder / "service.json", asdict(service))  # back to the model that works
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
    if not pid or not supervisor_alive(service):
        return None
    return own_process(pid, service)


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
