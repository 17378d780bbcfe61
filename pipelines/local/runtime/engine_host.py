"""Run the local engine in its own process, warmed up while the command line builds the pipeline.

A ``run`` command needs the Azure ML SDK (to build the pipeline from its classes) and MLflow (to
track the run), and importing each costs seconds of one core. The command starts this host first:
the host imports MLflow, its SQLite store and the engine on the other core while the command imports
the SDK and builds the plan. The command then sends the ``RunRequest`` (pickled, on the host's
stdin) and waits; the host runs it, writing progress to the same terminal, and the final record is
the run folder's ``run.json``.

The command forwards SIGTERM (how the workspace service cancels a run) to the host; a host whose
command dies cancels its run, so no run is left "Running" behind a dead command.

When an earlier run left a warm engine (``engine_daemon.py``), the request goes to it instead and no
host is started; after a cold run, the command leaves one for the next.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from pipelines.settings import PROJECT_ROOT


class EngineHost:
    """The command's side: start the host, hand it the request, wait, return the final record."""

    def __init__(self) -> None:
        from pipelines.local.runtime.engine_daemon import WarmEngine

        self.warm = WarmEngine.connect()  # a warm engine left by an earlier run (engine_daemon.py)
        self.proc: subprocess.Popen[bytes] | None = None if self.warm else self._start()

    @staticmethod
    def _start() -> subprocess.Popen[bytes]:
        from pipelines.local.runtime.engine_daemon import project_env

        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.local.runtime.engine_host"],
            stdin=subprocess.PIPE,
            env=project_env(),
            cwd=PROJECT_ROOT,
        )

    def run(self, request: Any, to_stderr: bool) -> dict[str, Any]:
        from pipelines.errors import UserError
        from pipelines.local.runtime import runs

        if self.warm is not None and self.warm.start(request, to_stderr):
            code = self.warm.wait()
        else:
            self.warm = None
            code = self._hand_over(request, to_stderr)
        try:
            record = runs.read_record(request.run_id)
        except (OSError, ValueError, UserError):  # no record yet, or a half-written one
            record = None
        if record is None or record.get("status") not in runs.FINAL:
            stub = {"run_id": request.run_id, "pipeline": request.pipeline_name, "steps": []}
            message = f"the local engine process exited with status {code}"
            record = runs.close_record(request.run_id, dict(record or stub), "Failed", message)
        return record

    def _hand_over(self, request: Any, to_stderr: bool) -> int:
        from pipelines.local.runtime.engine import in_main_thread

        if self.proc is None:
            self.proc = self._start()
        assert self.proc.stdin is not None
        try:
            pickle.dump({"request": request, "to_stderr": to_stderr}, self.proc.stdin)
            self.proc.stdin.close()
        except OSError:
            pass  # the host is gone: its exit status tells
        previous = signal.signal(signal.SIGTERM, self._forward) if in_main_thread() else None
        try:
            return self._wait()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def close(self) -> None:
        """Stop a host that was not given a request (the command failed before the run); after a cold
        run, leave a warm engine for the next one."""
        from pipelines.local.runtime.engine_daemon import start_detached

        if self.warm is not None:
            self.warm.close()
            return
        if self.proc is not None and self.proc.poll() is None:
            try:
                if self.proc.stdin is not None and not self.proc.stdin.closed:
                    self.proc.stdin.close()  # the host exits on an empty stdin
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        start_detached()

    def _wait(self) -> int:
        assert self.proc is not None
        while True:
            try:
                return self.proc.wait()
            except KeyboardInterrupt:  # Ctrl-C reached the host too: wait for it to cancel the run
                continue

    def _forward(self, signum: int, frame: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)


def _cancel_when_orphaned(parent: int) -> None:
    """If the command that started this host dies, cancel the run as SIGTERM would."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def main() -> int:
    threading.Thread(target=_cancel_when_orphaned, args=(os.getppid(),), daemon=True).start()
    # the slow imports, done while the command builds the pipeline
    import mlflow  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    from pipelines.local.runtime import engine

    gc.freeze()
    data = sys.stdin.buffer.read()
    if not data:
        return 0  # the command stopped before its run started
    message = pickle.loads(data)
    engine.run_plan(message["request"], out=sys.stderr if message["to_stderr"] else sys.stdout)
    return 0


if __name__ == "__main__":
    code = main()
    # the run's record, logs and MLflow rows are written and closed: leave without tearing down MLflow,
    # SQLAlchemy and the rest module by module (the command waits for this process to end)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
