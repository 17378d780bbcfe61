"""The engine host: a ``run`` command's engine process is cancelled with its command, never orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipelines.errors import UserError
from pipelines.local.runtime import runs
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")


def _start(tmp_path: Path, home: Path, run_id: str) -> subprocess.Popen:
    from pipelines.datagen import write_csv

    data = tmp_path / "tiny.csv"
    write_csv(data, 50, seed=1)
    env = {**os.environ, "AMLOPS_HOME": str(home), "AMLOPS_TINY_SLEEP": "120"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tiny_pipeline", "run", "--data", str(data), "--run-id", run_id],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_for(predicate, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _step_running(run_id: str) -> bool:
    try:
        record = runs.read_record(run_id)
    except (OSError, ValueError, UserError):
        return False
    return any(s.get("status") == "Running" for s in record.get("steps", []))


def _nothing_left(home: Path) -> bool:
    """No process (engine host or step) of the workspace ``home`` is alive."""
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        try:
            if (
                proc.pid != me
                and proc.status() != psutil.STATUS_ZOMBIE
                and proc.environ().get("AMLOPS_HOME") == str(home)
            ):
                return False
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_run_ends_canceled_when_its_command_is_stopped(
    tmp_path: Path, amlops_home: Path, sig: signal.Signals
) -> None:
    """SIGTERM is forwarded to the engine; after SIGKILL the engine notices it lost its command."""
    run_id = f"amlops-tiny_host_{sig.name.lower()}"
    command = _start(tmp_path, amlops_home, run_id)
    try:
        _wait_for(lambda: _step_running(run_id))
        command.send_signal(sig)
        command.wait(timeout=60)
        _wait_for(lambda: runs.read_record(run_id)["status"] in ("Canceled", "Failed"), timeout=30)
        assert runs.read_record(run_id)["status"] == "Canceled"
        _wait_for(lambda: _nothing_left(amlops_home), timeout=30)  # no engine or step left behind
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
