"""The processes and port of a local deployment: which processes are its own, ending them, its port.

A pid in ``runtime.json`` may outlive its process and be reused by another; ``own_process`` only answers
for a process whose command line is this service's supervisor or its gunicorn.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any

from pipelines.errors import UserError
from pipelines.local.serving.locking import read_json
from pipelines.processes import kill_group  # noqa: F401 - the serving modules kill through it
from pipelines.settings import PROJECT_ROOT


def own_process(pid: int, service: Any) -> Any:
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


def supervisor_alive(service: Any) -> bool:
    """Whether the supervisor recorded in the service's runtime record is running."""
    pid = read_json(service.folder / "runtime.json").get("supervisor_pid")
    return bool(pid) and own_process(pid, service) is not None


def kill_tree(proc: Any) -> None:
    import psutil

    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.kill()


def group_is_ours(pgid: int, service: Any) -> bool:
    """Whether process group ``pgid`` still holds one of this service's gunicorn processes."""
    import psutil

    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(OSError):
            if os.getpgid(proc.info["pid"]) == pgid and own_process(proc.info["pid"], service) is not None:
                return True
    return False


def free_port(exclude: set[int] | None = None) -> int:
    """A port on 127.0.0.1 that nothing listens on and no other local service has recorded."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in (exclude or set()):
            return port
    raise UserError("found no free port on 127.0.0.1", hint="pass --port")


def check_port(port: int, busy_hint: str = "pass another --port") -> None:
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


def wait_port_free(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            check_port(port)
            return
        except UserError:
            time.sleep(0.1)


def pythonpath() -> str:
    """PYTHONPATH for a child process: the project first, then what this process was given."""
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(PROJECT_ROOT), existing]) if existing else str(PROJECT_ROOT)
