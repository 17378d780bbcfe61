"""Local run records: one folder per run under ``AMLOPS_HOME/runs/<run id>/``.

``run.json`` holds the run's status with Azure's names (NotStarted, Queued, Running, Completed,
Failed, Canceled), its steps, parameters and results; ``logs/<step>.log`` each step's output;
``outputs/<name>/`` each step output. ``run.json`` is always replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from pathlib import Path
from typing import Any

from pipelines.atomic_files import write_json
from pipelines.errors import UserError
from pipelines.settings import amlops_home

STATUSES = ("NotStarted", "Queued", "Running", "Completed", "Failed", "Canceled")
FINAL = ("Completed", "Failed", "Canceled")
RUN_ID_MAX = 200  # a run id names a folder: well under the file system's 255 bytes
RUN_ID_PATTERN = (
    rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{RUN_ID_MAX - 1}}}$"  # what new_run_id makes, and --run-id takes
)
_RUN_ID = re.compile(RUN_ID_PATTERN)


def runs_dir() -> Path:
    path = amlops_home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_run_id(prefix: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return f"{prefix}_{stamp}_{secrets.token_hex(3)}"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_folder(run_id: str) -> Path:
    """The folder of a run; UserError for an id that is no run id (too long, or a character no id has)."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        shown = run_id if not isinstance(run_id, str) or len(run_id) <= 60 else run_id[:60] + "..."
        raise UserError(
            f"bad run id {shown!r}: a run id is 1-{RUN_ID_MAX} letters, digits, '_', '-' or '.'",
            hint="list runs with: python -m pipelines.workspace runs",
        )
    return runs_dir() / run_id


def write_record(run_id: str, record: dict[str, Any]) -> None:
    write_json(run_folder(run_id) / "run.json", record)


def close_record(run_id: str, record: dict[str, Any], status: str, message: str) -> dict[str, Any]:
    """End a record its process left unfinished: ``status`` for it and for its steps still Running, the
    record's own error or else ``message``; written and returned."""
    record.update(status=status, ended=now(), error=record.get("error") or {"message": message})
    for step in record.get("steps", []):
        if step.get("status") == "Running":
            step["status"] = status
    write_record(run_id, record)
    return record


def read_record(run_id: str) -> dict[str, Any]:
    path = run_folder(run_id) / "run.json"
    if not path.is_file():
        raise UserError(f"no run {run_id!r}", hint="list runs with: python -m pipelines.workspace runs")
    return json.loads(path.read_text())


def list_records() -> list[dict[str, Any]]:
    out = []
    for path in runs_dir().glob("*/run.json"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(out, key=lambda r: r.get("created", ""), reverse=True)
