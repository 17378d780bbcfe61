"""The real workspace service (a subprocess on 127.0.0.1) running real pipeline runs of the tiny test pipeline.

Concurrent submissions all complete with distinct ids; SIGKILL while runs are queued and running,
then a restart: every run ends in a final state, queued ones still run, the schedule's due time fires
once. Every process started here (the service and the runs it started) is stopped at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

from benchmarks.pipeline_service import kill_workspace_processes
from pipelines.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")

PREFIX = "/pipelines/v1.0/PipelineRuns"
FINAL = ("Completed", "Failed", "Canceled")


@dataclass
class Service:
    """A workspace service subprocess with its own AMLOPS_HOME."""

    home: Path
    data: Path
    workers: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    url: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AMLOPS_"))}
        return env | {"AMLOPS_HOME": str(self.home), "AMLOPS_DATA_DIR": str(self.data)} | self.extra_env

    def start(self, timeout: float = 90) -> None:
        info = self.home / "service" / "service.json"
        info.unlink(missing_ok=True)
        log = open(self.home / "serve.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.workspace", "serve", "--port", "0", "--workers", str(self.workers)],
            cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.home / "serve.log").read_text()[-2000:]
            try:
                self.url = json.loads(info.read_text())["url"]
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return
            except (OSError, ValueError, KeyError, requests.RequestException):
                pass
            time.sleep(0.2)
        raise AssertionError("the service did not start: " + (self.home / "serve.log").read_text()[-2000:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def key(self) -> str:
        return json.loads((self.home / "service" / "keys.json").read_text())["primary"]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key()}"}

    def run(self, run_id: str) -> dict:
        return requests.get(f"{self.url}/runs/{run_id}", headers=self.headers(), timeout=10).json()

    def wait_final(self, run_ids: list[str], timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            status = {i: self.run(i)["status"] for i in run_ids}
            if all(s in FINAL for s in status.values()) or time.monotonic() > deadline:
                return status
            time.sleep(0.5)

    def stop_all(self) -> None:
        """Stop the service and every process that works in this service's AMLOPS_HOME."""
        self.kill(signal.SIGTERM)
        kill_workspace_processes(self.home)


def make_service(root: Path, workers: int, **extra_env: str) -> Service:
    from pipelines.datagen import write_csv

    home, data = root / "home", root / "data"
    home.mkdir(parents=True)
    write_csv(data / "tiny.csv", 200, seed=3)
    return Service(home=home, data=data, workers=workers, extra_env=extra_env)


def publish_tiny(svc: Service) -> dict:
    """Publish the tiny test pipeline into the service's workspace (as ``publish`` does, offline)."""
    from pipelines.local.workspace import publishing
    from tests import tiny_pipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AMLOPS_HOME", str(svc.home))
        mp.setenv("AMLOPS_DATA_DIR", str(svc.data))
        return publishing.publish(tiny_pipeline.build(Settings(dataset="tiny")))


@pytest.fixture(scope="module")
def running_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service with 2 run workers and the tiny pipeline published (shared by a module's tests)."""
    svc = make_service(tmp_path_factory.mktemp("service"), workers=2)
    svc.published = publish_tiny(svc)  # type: ignore[attr-defined]
    svc.start()
    try:
        yield svc
    finally:
        svc.stop_all()


@pytest.fixture
def in_service_home(running_service: Service, monkeypatch: pytest.MonkeyPatch) -> Service:
    """Point this test's in-process calls at the running service's workspace."""
    monkeypatch.setenv("AMLOPS_HOME", str(running_service.home))
    monkeypatch.setenv("AMLOPS_DATA_DIR", str(running_service.data))
    return running_service


def submit(svc: Service, url: str, body: dict) -> requests.Response:
    return requests.post(url, json=body, headers=svc.headers(), timeout=60)


def test_concurrent_submissions_get_distinct_ids_and_all_complete(running_service: Service) -> None:
    svc = running_service
    url = f"{svc.url}{PREFIX}/PipelineEndpointSubmit/Id/{svc.published['endpoint_id']}"
    bodies = [{"ExperimentName": "concurrent", "ParameterAssignments": {"seed": i}} for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda b: submit(svc, url, b), bodies))
    assert [a.status_code for a in answers] == [200] * 4
    ids = [a.json()["Id"] for a in answers]
    assert len(set(ids)) == 4
    status = svc.wait_final(ids, timeout=240)
    assert status == {i: "Completed" for i in ids}, status
    seeds = sorted(int(svc.run(i)["parameters"]["seed"]) for i in ids)
    assert seeds == list(range(4))  # each run ran with its own parameter values
    entity = requests.get(f"{svc.url}{PREFIX}/{ids[0]}", headers=svc.headers(), timeout=10).json()
    assert (
        entity["Status"]["StatusCode"] == "Completed" and entity["RunHistoryExperimentName"] == "concurrent"
    )
    logs = requests.get(f"{svc.url}/runs/{ids[0]}/logs", headers=svc.headers(), timeout=10).json()["logs"]
    assert "rows" in logs["count"]
    assert svc.key() not in (svc.home / "serve.log").read_text()  # keys are never logged


def test_sigkill_while_runs_are_queued_and_running_then_restart(tmp_path: Path, monkeypatch) -> None:
    from pipelines.local.workspace import run_queue, schedules

    svc = make_service(tmp_path, workers=1, AMLOPS_TINY_SLEEP="1")
    published = publish_tiny(svc)
    monkeypatch.setenv("AMLOPS_HOME", str(svc.home))
    monkeypatch.setenv("AMLOPS_DATA_DIR", str(svc.data))
    far = schedules.recurrence("Minute", 1, start_time="2099-01-01T00:00:00")
    schedule = schedules.create("fault", far, endpoint=published["endpoint_id"])
    svc.start()
    try:
        url = f"{svc.url}{PREFIX}/PipelineEndpointSubmit/Id/{published['endpoint_id']}"
        ids = [submit(svc, url, {"ExperimentName": "fault"}).json()["Id"] for _ in range(2)]
        due = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)).replace(microsecond=0)
        with schedules.connect() as conn:  # the schedule became due while... now
            conn.execute("UPDATE schedules SET next_due = ? WHERE id = ?", (due.isoformat(), schedule["id"]))

        def ready() -> bool:
            rows = {r["run_id"]: r for r in run_queue.rows()}
            return (
                len(schedules.fires(schedule["id"])) == 1
                and rows[ids[0]]["state"] == "Running"
                and rows[ids[0]]["pid"] is not None
            )

        deadline = time.monotonic() + 60
        while not ready():
            assert time.monotonic() < deadline, run_queue.rows()
            time.sleep(0.1)
        rows = {r["run_id"]: r for r in run_queue.rows()}
        (fired,) = [r for r in rows if r not in ids]
        assert rows[ids[1]]["state"] == "Queued" and rows[fired]["state"] == "Queued"
        orphan = rows[ids[0]]["pid"]

        svc.kill(signal.SIGKILL)
        assert psutil.pid_exists(orphan)  # the running run survives the service
        svc.start()

        status = svc.wait_final([*ids, fired], timeout=240)
        assert status == {i: "Completed" for i in [*ids, fired]}, status
        fires = schedules.fires(schedule["id"])
        assert [(f["due_time"], f["run_id"]) for f in fires] == [(due.isoformat(), fired)]
        from_schedule = [
            r for r in run_queue.rows() if json.loads(r["stub"]).get("schedule_id") == schedule["id"]
        ]
        assert [r["run_id"] for r in from_schedule] == [fired]
        assert svc.run(fired)["schedule_id"] == schedule["id"]
        assert len(run_queue.rows()) == 3  # nothing lost, nothing duplicated
    finally:
        svc.stop_all()
