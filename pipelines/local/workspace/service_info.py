"""Where the running workspace service listens: its folder and ``service.json`` (pid, URL, port).

Publishing reads it to print the running service's real URLs; the service writes it when it starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipelines.atomic_files import write_json
from pipelines.local.runtime import runs
from pipelines.settings import amlops_home


def service_dir() -> Path:
    path = amlops_home() / "service"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_service_info(host: str, port: int, workers: int) -> None:
    """Record where the service listens (for ``status``), atomically."""
    write_json(service_dir() / "service.json", {
        "pid": os.getpid(), "url": f"http://{host}:{port}", "host": host, "port": port, "workers": workers,
        "started": runs.now(),
    }, indent=None)  # fmt: skip


def read_service_info() -> dict[str, Any] | None:
    """The running service's pid and URL, or None if no live service wrote them."""
    import psutil

    path = service_dir() / "service.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if psutil.pid_exists(int(info.get("pid", 0))) else None
