"""The record of a local deployment: its folder, name rule, ``service.json`` and the state it is in.

One folder per service, ``AMLOPS_HOME/deployments/<name>/``:

- ``service.json``  what was deployed (model, entry script, port, workers, body limit, app insights);
- ``keys.json``     primary and secondary keys (0600, see keys.py);
- ``runtime.json``  written by the supervisor: state (Azure's names plus Stopped), pids, restarts;
- ``server.log``    gunicorn's, the inference server's and the scoring script's output;
- ``requests.log``  one JSON line per request with status and latency, when App Insights is enabled;
- ``supervisor.log`` the supervisor's own lines;
- ``workers/<pid>`` the model each running worker has loaded (for a model update's worker replacement);
- ``model-check.log`` the output of the last model that failed to load in ``update --model``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.local.serving.locking import read_json
from pipelines.local.serving.processes import supervisor_alive
from pipelines.local.workspace.keys import KeyStore
from pipelines.settings import PROJECT_ROOT, amlops_home

DEFAULT_ENTRY_SCRIPT = PROJECT_ROOT / "scoring" / "score.py"
DEFAULT_MAX_BODY_BYTES = 1 << 20
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")


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


def read_record(folder: Path) -> LocalService:
    """The record in a service folder, read as it is now (the supervisor's view)."""
    return LocalService(**json.loads((folder / "service.json").read_text()))


def list_services() -> list[LocalService]:
    """All local services, by name."""
    root = deployments_dir()
    if not root.is_dir():
        return []
    return [LocalService(**json.loads(p.read_text())) for p in sorted(root.glob("*/service.json"))]


def key_store(name: str, folder: Path | None = None) -> KeyStore:
    """The service's keys (in ``folder``, default its folder in this workspace)."""
    path = (folder or service_dir(name)) / "keys.json"
    return KeyStore(path, f"python -m pipelines.deploy keys --name {name} --regen primary")


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
    if not supervisor_alive(service):
        return "Unhealthy" if runtime.get("desired") == "running" else "Stopped"
    return recorded


def _down_message(service: LocalService, current: str) -> str:
    """What to do about a service in state ``current`` if its supervisor is gone unasked, else ""."""
    if current != "Unhealthy" or supervisor_alive(service):
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


def now() -> str:
    """A UTC timestamp to the second, as the records carry them."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
