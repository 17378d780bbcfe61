"""The local workspace's run queue: a bounded pool of pipeline-run subprocesses with its state in SQLite.

A submission (REST call or schedule, checked and built by submissions.prepare) becomes a row of ``run_queue`` in ``AMLOPS_HOME/workspace.db``
and a ``run.json`` stub with status ``Queued``; nothing is ever dropped. The workspace service's
dispatcher starts queued runs in submission order, at most ``workers`` at a time, each as
``python -m <module> run --run-id <id> --settings-json ... --set ... [--data ...] --extra ... --json``
in its own session (its output goes to ``runs/<id>/driver.log``); the run writes its own record.

Restart rule (the service stopped, even by SIGKILL): before it dispatches anything, a starting
service recovers every row left ``Starting`` or ``Running``:

- its process is still alive (same pid, same start time, ``--run-id <id>`` on its command line):
  the run is *adopted* and finishes normally (run processes do not die with the service);
- its process is gone and the run recorded a final status: that status is kept;
- its process is gone without a final status: the run is marked ``Failed`` with the reason
  ("its process ended while the workspace service was down"); a started run is never re-executed;
- it was claimed but its process never started: it goes back to the queue.

Queued rows simply stay queued and start in order. Stopping the service therefore never stops a
run; cancel one with ``python -m pipelines.workspace cancel ID`` (works with or without the service).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pipelines import service_logging
from pipelines.errors import UserError
from pipelines.local.runtime import runs
from pipelines.local.workspace.db import connect
from pipelines.local.workspace.submissions import Submission
from pipelines.settings import PROJECT_ROOT

LOG = service_logging.get("run_queue")

ACTIVE = ("Starting", "Running")
DRIVER_LOG = "driver.log"


# ---- queuing -------------------------------------------------------------------------------------
def enqueue(sub: Submission, conn: sqlite3.Connection | None = None) -> str:
    """Queue a prepared submission; returns the new run id. Pass ``conn`` to join a caller's transaction."""
    if conn is None:
        return submit(sub)["run_id"]
    return _insert(sub, conn)["run_id"]


def submit(sub: Submission) -> dict[str, Any]:
    """Queue a prepared submission in one transaction and write its ``run.json`` stub; returns the stub."""
    with connect() as conn:
        record = _insert(sub, conn)
    runs.write_record(record["run_id"], record)
    return record


def _insert(sub: Submission, conn: sqlite3.Connection) -> dict[str, Any]:
    submitted = runs.now()
    for _ in range(20):
        run_id = runs.new_run_id(sub.record["pipeline"])
        record = {"run_id": run_id, "created": submitted, **sub.record}
        extra = {**sub.extra, "created": submitted}
        args = [*sub.args, "--extra", json.dumps(extra), "--json"]
        try:
            conn.execute(
                "INSERT INTO run_queue (run_id, module, args, state, submitted, stub) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, sub.module, json.dumps(args), "Queued", submitted, json.dumps(record, default=str)),
            )
        except sqlite3.IntegrityError:
            continue  # a run id collision (same second, same random suffix): draw again
        return record
    raise RuntimeError("could not draw a unique run id")


def write_stub(run_id: str) -> None:
    """Write a queued run's ``run.json`` stub unless the run has written its own record."""
    row = get_row(run_id)
    if row is None:
        return
    path = runs.run_folder(run_id) / "run.json"
    if not path.is_file():
        runs.write_record(run_id, json.loads(row["stub"]))


# ---- reading -------------------------------------------------------------------------------------
def get_row(run_id: str) -> dict[str, Any] | None:
    with connect() as conn:
        row = conn.execute("SELECT * FROM run_queue WHERE run_id = ?", (run_id,)).fetchone()
    return dict(row) if row else None


def rows(states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Queue rows in submission order (optionally only in ``states``)."""
    with connect() as conn:
        if states:
            marks = ",".join("?" * len(states))
            found = conn.execute(
                f"SELECT * FROM run_queue WHERE state IN ({marks}) ORDER BY seq", states
            ).fetchall()
        else:
            found = conn.execute("SELECT * FROM run_queue ORDER BY seq").fetchall()
    return [dict(r) for r in found]


def counts() -> dict[str, int]:
    with connect() as conn:
        found = conn.execute("SELECT state, COUNT(*) FROM run_queue GROUP BY state").fetchall()
    return {r[0]: r[1] for r in found}


def read_run(run_id: str) -> dict[str, Any]:
    """A run's record (``run.json``, or the queue's stub just after queuing); UserError if unknown.

    A run whose process has started but not yet written its record shows ``Running``.
    """
    try:
        record = runs.read_record(run_id)
    except UserError:
        row = get_row(run_id)
        if row is None:
            raise
        record = json.loads(row["stub"])
    return with_queue_state(record)


def with_queue_state(record: dict[str, Any], states: dict[str, str] | None = None) -> dict[str, Any]:
    """``record`` with status Running if it still says Queued but its process was started."""
    if record.get("status") != "Queued":
        return record
    if states is None:
        row = get_row(record["run_id"])
        state = row["state"] if row else None
    else:
        state = states.get(record["run_id"])
    return record | {"status": "Running"} if state in ACTIVE else record


def list_runs() -> list[dict[str, Any]]:
    """Every run record, newest first, with queue states applied (see ``with_queue_state``)."""
    states = {r["run_id"]: r["state"] for r in rows(ACTIVE)}
    return [with_queue_state(r, states) for r in runs.list_records()]


# ---- cancel --------------------------------------------------------------------------------------
def cancel(run_id: str) -> str:
    """Cancel a run: a queued one never starts; a running one gets SIGTERM (the engine marks it Canceled)."""
    runs.run_folder(run_id)  # rejects malformed ids
    with connect() as conn:
        row = conn.execute("SELECT * FROM run_queue WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise UserError(
                f"no run {run_id!r} in the workspace service's queue",
                hint="only runs started through the service or a schedule can be canceled here",
            )
        state = row["state"]
        if state == "Queued":
            conn.execute(
                "UPDATE run_queue SET state = 'Canceled', ended = ?, reason = ? WHERE run_id = ?",
                (runs.now(), "canceled before it started", run_id),
            )
        elif state in ACTIVE:
            conn.execute("UPDATE run_queue SET cancel_requested = 1 WHERE run_id = ?", (run_id,))
        else:
            return state
    if state == "Queued":
        record = read_run(run_id)
        record.update(status="Canceled", ended=runs.now(), error={"message": "canceled before it started"})
        runs.write_record(run_id, record)
        return "Canceled"
    if row["pid"]:
        _signal_run(run_id, row["pid"], row["pid_created"], signal.SIGTERM)
    return "Canceling"


def _signal_run(run_id: str, pid: int, created: float | None, sig: int) -> bool:
    if live_process(run_id, pid, created) is None:
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def live_process(run_id: str, pid: int | None, created: float | None = None) -> Any:
    """The psutil.Process running ``run_id`` (pid, start time and --run-id must match), else None."""
    import psutil

    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if created is not None and abs(proc.create_time() - created) > 0.5:
            return None
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return proc if _is_run_command(cmdline, run_id) else None


def _is_run_command(cmdline: list[str], run_id: str) -> bool:
    return any(a == "--run-id" and b == run_id for a, b in zip(cmdline, cmdline[1:], strict=False))


def find_process(run_id: str) -> Any:
    """A live process whose command line runs ``run_id`` (for rows claimed before their pid was saved)."""
    import psutil

    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and _is_run_command(
                proc.info["cmdline"] or [], run_id
            ):
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


# ---- finishing and recovery ---------------------------------------------------------------------
def finalize(run_id: str, exit_code: int | None = None, gone_reason: str | None = None) -> str:
    """Settle a run whose process has ended: keep its recorded final status, else fail or cancel it."""
    row = get_row(run_id)
    if row is None:
        raise UserError(f"no queued run {run_id!r}")
    try:
        record = runs.read_record(run_id)
    except UserError:
        record = json.loads(row["stub"])
    status = record.get("status")
    reason = None
    if status not in runs.FINAL:
        if row["cancel_requested"]:
            status, reason = "Canceled", "canceled"
        else:
            status = "Failed"
            detail = _last_error_line(run_id)
            if gone_reason:
                reason = gone_reason + (f"; last output: {detail}" if detail else "")
            else:
                code = f"exit status {exit_code}" if exit_code is not None else "an unknown exit status"
                reason = f"the run process ended with {code} before recording a result" + (
                    f": {detail}" if detail else ""
                )
        runs.close_record(run_id, record, status, reason)
    with connect() as conn:
        conn.execute(
            "UPDATE run_queue SET state = ?, ended = ?, reason = ? WHERE run_id = ?",
            (status, record.get("ended") or runs.now(), reason, run_id),
        )
    return status


def _last_error_line(run_id: str) -> str:
    path = runs.run_folder(run_id) / DRIVER_LOG
    if not path.is_file():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:") :].strip()
    return lines[-1][:300] if lines else ""


def recover() -> list[tuple[str, Any]]:
    """Apply the restart rule (module docstring); returns the (run id, process) pairs to adopt."""
    adopt: list[tuple[str, Any]] = []
    for row in rows(ACTIVE):
        run_id = row["run_id"]
        proc = live_process(run_id, row["pid"], row["pid_created"])
        if proc is None and row["state"] == "Starting":
            proc = find_process(run_id)
        if proc is not None:
            with connect() as conn:
                conn.execute(
                    "UPDATE run_queue SET state = 'Running', pid = ?, pid_created = ? WHERE run_id = ?",
                    (proc.pid, proc.create_time(), run_id),
                )
            adopt.append((run_id, proc))
            continue
        record = runs.read_record(run_id) if (runs.run_folder(run_id) / "run.json").is_file() else {}
        if row["state"] == "Starting" and record.get("status", "Queued") == "Queued":
            with connect() as conn:  # claimed, never started: back to the queue
                conn.execute("UPDATE run_queue SET state = 'Queued', pid = NULL WHERE run_id = ?", (run_id,))
            continue
        finalize(run_id, gone_reason="its process ended while the workspace service was down")
    for row in rows(("Queued",)):
        write_stub(row["run_id"])
    return adopt


# ---- the dispatcher ----------------------------------------------------------------------------
class RunQueue:
    """The service's dispatcher: starts queued runs, at most ``workers`` at once, and settles them."""

    def __init__(
        self,
        workers: int,
        poll_seconds: float = 0.5,
        python: str | None = None,
        prepare_tracking: bool = True,
    ) -> None:
        if workers < 1:
            raise UserError(f"workers must be at least 1, got {workers}", hint="e.g. --workers 2")
        self.workers = workers
        self.poll_seconds = poll_seconds
        self.python = python or sys.executable
        self._active: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._experiments: set[str] = set()
        self.prepare_tracking = prepare_tracking

    def start(self) -> None:
        """Recover what a previous service left, prepare the tracking store, then dispatch in a background thread."""
        if self.prepare_tracking:
            try:  # migrate a new MLflow store once, before runs race to do it (and before requests arrive)
                _prepare_tracking(None)
            except Exception as exc:
                LOG.error("cannot prepare the tracking store: %s", exc)
        for run_id, proc in recover():
            with self._lock:
                self._active[run_id] = proc
            threading.Thread(target=self._watch_adopted, args=(run_id, proc), daemon=True).start()
        self._thread = threading.Thread(target=self._loop, name="run-queue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching; running runs keep running (the next service adopts them)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def notify(self) -> None:
        """Wake the dispatcher (a run was queued or canceled)."""
        self._wake.set()

    def active(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._dispatch()
            except Exception as exc:  # keep dispatching; a broken row must not stop the queue
                LOG.error("dispatch error: %s: %s", type(exc).__name__, exc)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _dispatch(self) -> None:
        with self._lock:
            free = self.workers - len(self._active)
        if free <= 0:
            return
        with connect() as conn:
            claimed = conn.execute(
                "SELECT * FROM run_queue WHERE state = 'Queued' ORDER BY seq LIMIT ?", (free,)
            ).fetchall()
            claimed = [dict(r) for r in claimed]
            for row in claimed:
                conn.execute(
                    "UPDATE run_queue SET state = 'Starting', started = ? WHERE run_id = ?",
                    (runs.now(), row["run_id"]),
                )
        for row in claimed:
            if self._stop.is_set():
                with connect() as conn:
                    conn.execute("UPDATE run_queue SET state = 'Queued' WHERE run_id = ?", (row["run_id"],))
                continue
            self._spawn(row)

    def _spawn(self, row: dict[str, Any]) -> None:
        import psutil

        run_id = row["run_id"]
        experiment = json.loads(row["stub"]).get("experiment")
        if self.prepare_tracking and experiment and experiment not in self._experiments:
            try:  # created here, one at a time: concurrent runs would race to create it
                _prepare_tracking(experiment)
                self._experiments.add(experiment)
            except Exception as exc:
                LOG.error("cannot create experiment %r: %s", experiment, exc)
        folder = runs.run_folder(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        argv = [self.python, "-m", row["module"], "run", "--run-id", run_id, *json.loads(row["args"])]
        try:
            with open(folder / DRIVER_LOG, "ab") as log:
                proc = subprocess.Popen(
                    argv, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True,
                )  # fmt: skip
        except OSError as exc:
            finalize(run_id, gone_reason=f"the run process could not start ({exc})")
            return
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            created = None
        with connect() as conn:
            conn.execute(
                "UPDATE run_queue SET state = 'Running', pid = ?, pid_created = ? WHERE run_id = ?",
                (proc.pid, created, run_id),
            )
            wanted = conn.execute(
                "SELECT cancel_requested FROM run_queue WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
        with self._lock:
            self._active[run_id] = proc
        if wanted:
            proc.send_signal(signal.SIGTERM)
        threading.Thread(target=self._watch_child, args=(run_id, proc), daemon=True).start()

    def _watch_child(self, run_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        self._settle(run_id, code)

    def _watch_adopted(self, run_id: str, proc: Any) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(self.poll_seconds)
        else:
            return
        self._settle(run_id, None)

    def _settle(self, run_id: str, code: int | None) -> None:
        try:
            finalize(run_id, exit_code=code)
        except Exception as exc:
            LOG.error("cannot settle %s: %s: %s", run_id, type(exc).__name__, exc)
        finally:
            with self._lock:
                self._active.pop(run_id, None)
            self._wake.set()


def _prepare_tracking(experiment: str | None) -> None:
    """Create the MLflow store's tables (and ``experiment``) from the dispatcher, one at a time."""
    from pipelines.local.workspace import registry

    registry.configure_mlflow()
    if experiment:
        registry.ensure_experiment(experiment)
    else:
        from mlflow import MlflowClient

        MlflowClient().search_experiments(max_results=1)


def driver_log(run_id: str) -> Path:
    """Where a queued run's own output (the ``run`` command's stdout and stderr) goes."""
    return runs.run_folder(run_id) / DRIVER_LOG
