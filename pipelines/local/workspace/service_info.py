"""Where the running workspace service listens: its folder and ``service.json`` (pid, URL, port).

Publishing reads it to print the running service's real URLs; the service writes it when it starts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from pipelines.settings import amlops_home


def service_dir() -> Path:
    path = amlops_home() / "service"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_service_info(host: str, port: int, workers: int) -> None:
    """Record where the service listens (for ``status``), atomically."""
    path = service_dir() / "service.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({
        "pid": os.getpid(), "url": f"http://{host}:{port}", "host": host, "port": port, "workers": workers,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }))  # fmt: skip
    os.replace(tmp, path)


def read_service_info() -> dict[str, Any] | None:
    """The running service's pid and URL, or None if no live service wrote them."""
    import psutil

    path = service_dir() / "service.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if psutil.pid_exists(int(info.get("pid", 0))) else None
