"""Shared fixtures: every test gets its own local workspace folder (AMLOPS_HOME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The demo data: CI sets AMLOPS_DATA_DIR; a checkout beside the shared data folder finds it there.
if (
    not os.environ.get("AMLOPS_DATA_DIR")
    and (PROJECT_ROOT.parent / "shared" / "data" / "bike-no.csv").is_file()
):
    os.environ["AMLOPS_DATA_DIR"] = str(PROJECT_ROOT.parent / "shared" / "data")
# No warm engine left behind by the tests' runs (each test has its own workspace, so each would leave
# one); tests/local/runtime/test_engine_daemon.py turns it on for its own runs.
os.environ["AMLOPS_ENGINE_DAEMON"] = "0"


@pytest.fixture(autouse=True)
def amlops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh local workspace for each test; AMLOPS_DATA_DIR is kept from the environment."""
    home = tmp_path / "amlops-home"
    home.mkdir()
    monkeypatch.setenv("AMLOPS_HOME", str(home))
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_RUN_ID",
        "AML_APP_ROOT",
        "AZUREML_MODEL_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    _forget_mlflow_state()
    return home


def _forget_mlflow_state() -> None:
    """MLflow keeps the active experiment, run and tracking/registry URIs per process: an earlier test's would
    name an experiment this test's fresh store does not have (``No Experiment with id=1 exists``) or a store
    this test does not use."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return
    while fluent.active_run() is not None:
        fluent.end_run()
    fluent._active_experiment_id = None
    # a URI an earlier test set with mlflow.set_tracking_uri/set_registry_uri outranks MLFLOW_TRACKING_URI
    import mlflow

    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None: back to the environment's
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]


@pytest.fixture
def bike_csv() -> Path:
    """The demo data, resolved as the pipelines resolve it (AMLOPS_DATA_DIR, cache, public URL)."""
    from pipelines.datasets import resolve

    return resolve("bike-no")


@pytest.fixture(scope="session")
def bike_csv_session() -> Path:
    """bike_csv for session-scoped fixtures (resolved into the data folder or a session cache)."""
    from pipelines.datasets import resolve

    return resolve("bike-no")


def cli(
    module: str, *args: str, home: Path, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m module args...`` against the local workspace ``home``."""
    full_env = {**os.environ, "AMLOPS_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, bike_csv_session: Path) -> tuple[Path, dict]:
    """One short training run (4 AutoML iterations) shared by the tests that need a registered model."""
    home = tmp_path_factory.mktemp("trained-home")
    done = cli("pipelines.train", "run", "--set", "iterations=4", "--json", home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    return home, json.loads(done.stdout)


class JsonHandler(BaseHTTPRequestHandler):
    """Base of the tests' fake HTTP services on 127.0.0.1: JSON answers, no access log."""

    def _send(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass
