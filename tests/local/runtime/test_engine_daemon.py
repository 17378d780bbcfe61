"""The warm engine: a later ``run`` is a fork of a daemon that has MLflow imported, in the command's own
environment and terminal; it is cancelled with its command and leaves nothing running; stale code or
settings never reach it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pipelines.local.runtime import engine_daemon, runs
from tests.conftest import PROJECT_ROOT
from tests.local.runtime.test_engine_host import _start, _step_running, _wait_for

pytestmark = pytest.mark.slow  # runs pipelines and a daemon process (not in -m "not slow")


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "AMLOPS_HOME": str(home), "AMLOPS_ENGINE_DAEMON": "1", **extra}


@pytest.fixture
def warm(amlops_home: Path, monkeypatch: pytest.MonkeyPatch):
    """A daemon serving this test's workspace (stopped at the end)."""
    monkeypatch.setenv("AMLOPS_ENGINE_DAEMON", "1")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "pipelines.local.runtime.engine_daemon"],
        cwd=PROJECT_ROOT, env=_env(amlops_home, AMLOPS_ENGINE_IDLE="120"),
    )  # fmt: skip
    path = engine_daemon.socket_path()
    assert path is not None
    _wait_for(lambda: path.exists() or daemon.poll() is not None, timeout=120)
    assert daemon.poll() is None
    yield daemon
    daemon.terminate()
    daemon.wait(timeout=30)


def _tiny(home: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    from pipelines.datagen import write_csv

    data = tmp_path / "tiny.csv"
    if not data.exists():
        write_csv(data, 50, seed=1)
    return subprocess.run(
        [sys.executable, "-m", "tests.tiny_pipeline", "run", "--data", str(data), *args],
        cwd=PROJECT_ROOT, env=_env(home, **env), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _served(home: Path) -> str:
    log = home / "engine" / "daemon.log"
    return log.read_text() if log.exists() else ""


def test_a_warm_run_is_the_same_run_in_the_commands_environment_and_terminal(
    warm: subprocess.Popen, amlops_home: Path, tmp_path: Path
) -> None:
    done = _tiny(
        amlops_home, tmp_path, "--json", "--set", "label=instant", AMLOPS_TINY_NOTE="from-the-command"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # stdout holds the summary alone; progress went to stderr
    assert summary["status"] == "Completed" and summary["mlflow_run_id"]
    assert f"run {summary['run_id']} in process" in _served(amlops_home)
    assert "count: 50 rows, label instant" in done.stderr
    record = runs.read_record(summary["run_id"])
    assert record["status"] == "Completed"
    step_log = (Path(summary["folder"]) / "logs" / "count.log").read_text()
    assert "note from-the-command" in step_log  # the step saw the command's environment
    from mlflow import MlflowClient

    from pipelines.local.workspace.registry import tracking_uri

    assert MlflowClient(tracking_uri()).get_run(summary["mlflow_run_id"]).info.status == "FINISHED"
    # the daemon itself runs nothing: its fork ended
    _wait_for(
        lambda: not [c for c in psutil.Process(warm.pid).children() if c.status() != psutil.STATUS_ZOMBIE]
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_warm_run_ends_canceled_when_its_command_is_stopped(
    warm: subprocess.Popen, tmp_path: Path, amlops_home: Path, sig: signal.Signals
) -> None:
    run_id = f"amlops-tiny_warm_{sig.name.lower()}"
    command = _start(tmp_path, amlops_home, run_id)  # its environment inherits AMLOPS_ENGINE_DAEMON=1
    try:
        _wait_for(lambda: _step_running(run_id))
        assert f"run {run_id} in process" in _served(amlops_home)
        command.send_signal(sig)
        command.wait(timeout=60)
        _wait_for(lambda: runs.read_record(run_id)["status"] in ("Canceled", "Failed"), timeout=30)
        assert runs.read_record(run_id)["status"] == "Canceled"
        daemon = psutil.Process(warm.pid)  # the run's fork and its step are gone; the daemon stays
        _wait_for(
            lambda: not [c for c in daemon.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE], 30
        )
        assert warm.poll() is None
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()


def test_a_cold_run_leaves_a_daemon_that_stops_when_idle(
    amlops_home: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AMLOPS_ENGINE_DAEMON", "1")
    monkeypatch.setenv("AMLOPS_ENGINE_IDLE", "3")
    done = _tiny(amlops_home, tmp_path, AMLOPS_ENGINE_IDLE="3")
    assert done.returncode == 0, done.stderr
    assert "in process" not in _served(amlops_home)  # no daemon served this one
    path = engine_daemon.socket_path()
    assert path is not None
    _wait_for(lambda: "serving" in _served(amlops_home), timeout=120)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct((amlops_home / "engine").stat().st_mode & 0o777) == "0o700"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    _wait_for(lambda: "stopped" in _served(amlops_home), timeout=60)  # three idle seconds, then gone
    assert not path.exists()


def test_sigterm_stops_the_daemon_without_leaving_its_socket(warm: subprocess.Popen) -> None:
    path = engine_daemon.socket_path()
    assert path is not None and path.exists()
    warm.terminate()
    assert warm.wait(timeout=30) == 0
    assert not path.exists()


def test_a_stale_socket_does_not_keep_a_new_daemon_away(
    amlops_home: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AMLOPS_ENGINE_DAEMON", "1")
    path = engine_daemon.socket_path()
    assert path is not None
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a daemon killed without tidying up leaves its socket file, listening to nobody
    stale.close()
    assert path.exists() and engine_daemon.WarmEngine.connect() is None
    try:
        done = _tiny(amlops_home, tmp_path, AMLOPS_ENGINE_IDLE="30")
        assert done.returncode == 0, done.stderr
        _wait_for(lambda: "serving" in _served(amlops_home), timeout=120)
        warm = engine_daemon.WarmEngine.connect()
        assert warm is not None
        warm.close()
    finally:
        lock = next((amlops_home / "engine").glob("*.lock"))
        os.kill(int(lock.read_text().split()[0]), signal.SIGTERM)


def test_a_broken_hand_over_leaves_the_daemon_serving(
    warm: subprocess.Popen, amlops_home: Path, tmp_path: Path
):
    path = engine_daemon.socket_path()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(path))
        conn.sendall(b"not a request")
    _wait_for(lambda: "hand-over failed" in _served(amlops_home), timeout=30)
    done = _tiny(amlops_home, tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    assert f"run {json.loads(done.stdout)['run_id']} in process" in _served(amlops_home)


def test_changed_settings_or_code_get_another_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AMLOPS_ENGINE_DAEMON", "1")
    first = engine_daemon.socket_path()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")  # read when MLflow is imported
    assert engine_daemon.socket_path() != first
    monkeypatch.setenv("AMLOPS_HOME", str(tmp_path / ("x" * 120)))  # a long workspace path: a short socket
    assert engine_daemon.socket_path() not in (None, first) and len(str(engine_daemon.socket_path())) < 100
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / f"amlops-{os.getuid()}").mkdir(mode=0o755)  # a folder others may enter: no daemon
    os.chmod(tmp_path / f"amlops-{os.getuid()}", 0o755)
    assert engine_daemon.socket_path() is None
    assert engine_daemon.WarmEngine.connect() is None
    monkeypatch.setenv("AMLOPS_ENGINE_DAEMON", "0")
    assert not engine_daemon.enabled()


def test_the_fingerprint_follows_the_projects_source(monkeypatch: pytest.MonkeyPatch) -> None:
    source = PROJECT_ROOT / "pipelines" / "processes.py"
    before = engine_daemon.fingerprint()
    stat = source.stat()
    try:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert engine_daemon.fingerprint() != before
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert engine_daemon.fingerprint() == before


def test_the_commands_side_reads_lines_that_arrive_together() -> None:
    """A run that ends at once may send its PID and EXIT lines in one packet."""
    ours, theirs = socket.socketpair()
    theirs.sendall(b"PID 4242\nEXIT 3\n")
    theirs.close()
    warm = engine_daemon.WarmEngine(ours)
    assert warm._line() == "PID 4242"
    assert warm.wait() == 3
