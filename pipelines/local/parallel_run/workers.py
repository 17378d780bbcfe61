"""The worker processes the scheduler starts: one fresh interpreter each, talking over two pipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

from pipelines.local.parallel_run.results import Record
from pipelines.local.parallel_run.worker import CONFIG_ENV
from pipelines.processes import kill_group

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Worker:
    """One worker process and its two pipes."""

    def __init__(self, slot: int, generation: int, engine: Any) -> None:
        self.slot = slot
        self.generation = generation
        self.node = slot // engine.per_node
        self.name = f"process{slot:03d}" + (f".{generation}" if generation else "")
        self.ready = False
        self.task: Record | None = None
        self.deadline = float("inf")
        self.buffer = b""
        self.closed = False
        task_read, self._task_write = os.pipe()
        result_read, result_write = os.pipe()
        user_logs = engine.report_dir / "logs" / "user"
        stdout_dir = user_logs / "stdout" / str(self.node)
        stdout_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "task_fd": task_read,
            "result_fd": result_write,
            "entry_script": str(engine.entry_script),
            "source_dir": str(engine.source_dir),
            "arguments": list(engine.options.arguments),
            "staging_dir": str(engine.staging_dir),
            "output_action": engine.options.output_action,
            "headered_output": engine.options.headered_output,
            "threads": engine.threads,
            "preload": engine.preload,
        }
        env = dict(engine.base_env)
        env[CONFIG_ENV] = json.dumps(config)
        env["AMLOPS_PRS_AGENT_NAME"] = self.name
        env["AMLOPS_PRS_NODE_ID"] = str(self.node)
        env["AMLOPS_PRS_LOG_FILE"] = str(
            user_logs / "entry_script_log" / str(self.node) / f"{self.name}.log.txt"
        )
        with (
            open(stdout_dir / f"{self.name}.stdout.txt", "wb") as out,
            open(stdout_dir / f"{self.name}.stderr.txt", "wb") as err,
        ):
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.local.parallel_run.worker"],
                cwd=engine.source_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(task_read, result_write),
                start_new_session=True,
            )
        os.close(task_read)
        os.close(result_write)
        self.result_fd = result_read
        os.set_blocking(result_read, False)
        if engine.model_env is not None:
            self.send({"env": engine.model_env})

    def send(self, message: dict[str, Any]) -> bool:
        """Write one task line; False if the worker is gone."""
        try:
            os.write(self._task_write, (json.dumps(message) + "\n").encode("utf-8"))
            return True
        except (BrokenPipeError, OSError):
            return False

    def read_events(self) -> tuple[list[dict[str, Any]], bool]:
        """Events available now, and whether the pipe reached EOF (the worker exited)."""
        eof = False
        while True:
            try:
                chunk = os.read(self.result_fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self.buffer += chunk
        events = []
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                events.append(json.loads(line))
        return events, eof

    def kill(self) -> None:
        """Kill the worker and anything it started."""
        kill_group(self.proc.pid)
        self.proc.wait()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for fd in (self._task_write, self.result_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def exit_description(self) -> str:
        code = self.proc.wait()
        if code < 0:
            try:
                return f"worker {self.name} died from signal {signal.Signals(-code).name}"
            except ValueError:
                return f"worker {self.name} died from signal {-code}"
        return f"worker {self.name} exited with code {code}"
