"""The run queue without real pipelines: the pool bound, FIFO order, cancel, and the restart rule.

The dispatcher starts ``<python> -m <module> run --run-id ID ...``; here ``<python>`` is a small fake
that records when it ran, sleeps and writes a Completed record, so the queue logic is tested in
seconds. Real pipeline runs through the real service are in test_service_e2e.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.local.runtime import runs
from pipelines.local.workspace import run_queue

FAKE = """#!{python}
import json, os, sys, time
args = sys.argv[1:]
run_id = args[args.index("--run-id") + 1]
folder = os.path.join(os.environ["AMLOPS_HOME"], "runs", run_id)
with open(os.path.join({trace!r}), "a") as fh:
    fh.write(f"start {{run_id}} {{time.time()}}\\n")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0.4")))
record = json.load(open(os.path.join(folder, "run.json")))
record.update(status=os.environ.get("FAKE_STATUS", "Completed"), ended="now")
if os.environ.get("FAKE_STATUS") != "crash":
    json.dump(record, open(os.path.join(folder, "run.json"), "w"))
with open({trace!r}, "a") as fh:
    fh.write(f"end {{run_id}} {{time.time()}}\\n")
sys.exit(3 if os.environ.get("FAKE_STATUS") == "crash" else 0)
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> tuple[Path, Path]:
    trace = tmp_path / "trace.txt"
    script = tmp_path / "fake-python"
    script.write_text(FAKE.format(python=sys.executable, trace=str(trace)))
    script.chmod(0o755)
    return script, trace


def queue_one(n: int = 1) -> list[str]:
    """Queue ``n`` runs of a fake published pipeline (no validation needed for the queue itself)."""
    sub = run_queue.Submission(module="fake", args=[], record={"pipeline": "fake", "status": "Queued"})
    return [run_queue.enqueue(sub) for _ in range(n)]


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def states() -> dict[str, str]:
    return {r["run_id"]: r["state"] for r in run_queue.rows()}


def test_bounded_pool_runs_everything_in_order(fake_python, monkeypatch) -> None:
    script, trace = fake_python
    ids = queue_one(6)
    spawned: list[str] = []  # the dispatcher's own order (two processes started together may log either way)
    real_popen = subprocess.Popen

    def recording_popen(argv, *args, **kwargs):
        if "--run-id" in argv:
            spawned.append(argv[argv.index("--run-id") + 1])
        return real_popen(argv, *args, **kwargs)

    monkeypatch.setattr(run_queue.subprocess, "Popen", recording_popen)
    queue = run_queue.RunQueue(workers=2, poll_seconds=0.05, python=str(script), prepare_tracking=False)
    queue.start()
    try:
        wait_for(lambda: all(s == "Completed" for s in states().values()))
    finally:
        queue.stop()
    events = [line.split() for line in trace.read_text().splitlines()]
    starts = [e[1] for e in events if e[0] == "start"]
    assert spawned == ids  # first in, first started
    assert sorted(starts) == sorted(ids)  # none lost, none run twice
    running, peak = 0, 0
    for kind, _, _ in sorted(events, key=lambda e: float(e[2])):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    assert all(runs.read_record(i)["status"] == "Completed" for i in ids)


def test_a_run_that_dies_without_a_result_is_failed_with_a_reason(fake_python, monkeypatch) -> None:
    script, _ = fake_python
    monkeypatch.setenv("FAKE_STATUS", "crash")
    (run_id,) = queue_one()
    queue = run_queue.RunQueue(workers=1, poll_seconds=0.05, python=str(script), prepare_tracking=False)
    queue.start()
    try:
        wait_for(lambda: states()[run_id] not in ("Queued", "Starting", "Running"))
    finally:
        queue.stop()
    record = runs.read_record(run_id)
    assert record["status"] == "Failed"
    assert "exit status 3" in record["error"]["message"]


def test_cancel_queued_and_running(fake_python, monkeypatch) -> None:
    script, trace = fake_python
    monkeypatch.setenv("FAKE_SLEEP", "30")
    first, second = queue_one(2)
    queue = run_queue.RunQueue(workers=1, poll_seconds=0.05, python=str(script), prepare_tracking=False)
    queue.start()
    try:
        wait_for(lambda: trace.exists() and f"start {first}" in trace.read_text())
        assert run_queue.cancel(second) == "Canceled"
        assert run_queue.cancel(first) == "Canceling"
        wait_for(lambda: states()[first] == "Canceled", timeout=10)
        time.sleep(0.3)
    finally:
        queue.stop()
    assert runs.read_record(first)["status"] == "Canceled"
    assert runs.read_record(second)["status"] == "Canceled"
    assert f"start {second}" not in trace.read_text()  # a canceled queued run never starts


# ---- the restart rule ------------------------------------------------------------------------------------
def _mark(run_id: str, state: str, pid: int | None = None, created: float | None = None) -> None:
    with run_queue.connect() as conn:
        conn.execute(
            "UPDATE run_queue SET state = ?, pid = ?, pid_created = ? WHERE run_id = ?",
            (state, pid, created, run_id),
        )


def test_restart_rule(fake_python) -> None:
    import psutil

    gone, done, claimed, alive, waiting = queue_one(5)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _mark(gone, "Running", dead.pid, None)  # its process ended while the service was down
    record = runs.read_record(done) | {"status": "Completed"}
    runs.write_record(done, record)
    _mark(done, "Running", dead.pid, None)  # it finished (and recorded it) while the service was down
    _mark(claimed, "Starting")  # claimed, but its process never started
    survivor = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--run-id", alive], start_new_session=True
    )
    try:
        _mark(alive, "Running", survivor.pid, psutil.Process(survivor.pid).create_time())
        adopted = run_queue.recover()
        assert [run_id for run_id, _ in adopted] == [alive]
        now = states()
        assert now == {
            gone: "Failed",
            done: "Completed",
            claimed: "Queued",
            alive: "Running",
            waiting: "Queued",
        }
        assert "ended while the workspace service was down" in runs.read_record(gone)["error"]["message"]

        script, _ = fake_python
        queue = run_queue.RunQueue(workers=1, poll_seconds=0.05, python=str(script), prepare_tracking=False)
        queue.start()  # adopts the survivor: the queued ones wait for its slot
        try:
            time.sleep(0.5)
            assert states()[claimed] == "Queued"
            survivor.send_signal(signal.SIGKILL)
            survivor.wait()
            wait_for(lambda: states()[waiting] == "Completed")
        finally:
            queue.stop()
        assert states() == {
            gone: "Failed",
            done: "Completed",
            claimed: "Completed",
            alive: "Failed",
            waiting: "Completed",
        }
    finally:
        if survivor.poll() is None:
            survivor.kill()
            survivor.wait()


def test_a_pid_reused_by_another_process_is_not_adopted() -> None:
    (run_id,) = queue_one()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _mark(run_id, "Running", other.pid, None)  # same pid, but not running this run id
        assert run_queue.recover() == []
        assert states()[run_id] == "Failed"
    finally:
        other.kill()
        other.wait()


def test_stub_written_for_queued_runs_and_json_args() -> None:
    (run_id,) = queue_one()
    row = run_queue.get_row(run_id)
    args = json.loads(row["args"])
    assert args[-1] == "--json" and json.loads(args[args.index("--extra") + 1])["created"] == row["submitted"]
    assert runs.read_record(run_id)["status"] == "Queued"
