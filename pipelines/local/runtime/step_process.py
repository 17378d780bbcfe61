"""How the local engine runs a step's process: a subprocess (or a warm interpreter, see warm.py) in the
step's directory, its output logged and its last ``error:`` line kept; SIGTERM cancels the run and
ends the step's process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipelines.core.plan import CommandStepPlan, ScriptStepPlan, StepPlan
from pipelines.local.runtime import warm


class StepFailed(Exception):
    """A step ended with a non-zero exit status."""

    def __init__(self, step: str, exit_code: int, message: str) -> None:
        super().__init__(f"step {step} failed: {message}")
        self.step = step
        self.exit_code = exit_code
        self.message = message


class StepProcess:
    """The process side of a LocalRun: warm interpreters, the step's subprocess, and cancelation."""

    def _prestart(self, index: int) -> None:
        """Start a warm interpreter for step ``index`` if it is a script step (see warm.py)."""
        if index >= len(self.plan.steps) or self._canceled:
            return
        step = self.plan.steps[index]
        script = step.script_name if isinstance(step, ScriptStepPlan) else command_script(step)
        if script and step.name not in self._hosts:
            env = self._step_env("")
            del env["MLFLOW_RUN_ID"]
            host = warm.WarmHost.for_script(Path(step.source_directory) / script, env)
            if host is not None:
                self._hosts[step.name] = host

    def _discard_hosts(self) -> None:
        for host in self._hosts.values():
            host.discard()
        self._hosts.clear()

    def _subprocess(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        env: dict,
        log_path: Path,
        host: warm.WarmHost | None = None,
    ) -> None:
        if self._canceled:  # SIGTERM came between the step's start and its process
            if host is not None:
                host.discard()
            raise KeyboardInterrupt
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            proc = host.launch(argv[1:], cwd, env) if host is not None else None
            if proc is None:
                proc = subprocess.Popen(
                    argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    start_new_session=True, bufsize=1,
                )  # fmt: skip
            self._child = proc
            if self._canceled:  # SIGTERM came while the process was being started
                self._on_term(signal.SIGTERM, None)
            last_error = ""
            tail: list[str] = []
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                text = line.rstrip()
                if text.startswith("error:"):
                    last_error = text[len("error:") :].strip()
                if text:
                    tail = (tail + [text])[-5:]
                if text.startswith(f"{name}:"):
                    self._say("    " + text)
            code = proc.wait()
            self._child = None
        if self._canceled:
            raise KeyboardInterrupt
        if code != 0:
            message = last_error or (tail[-1] if tail else f"exit status {code}")
            if code < 0:  # killed (e.g. out of memory): the last line it printed is not the reason
                killer = (
                    signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
                )
                message = f"killed by signal {killer}" + (f" (its last line: {tail[-1]})" if tail else "")
            raise StepFailed(name, code, message)

    def _on_term(self, signum: int, frame: Any) -> None:
        self._canceled = True
        if self._child is not None and self._child.poll() is None:
            try:
                os.killpg(self._child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


SHELL_SYNTAX = set("|&;<>()$`\\\"'*?[]#~{}\n")


def command_argv(line: str) -> list[str]:
    """How to run a command line: ``python x.py ...`` with this interpreter when it is that plain, else the
    shell (``bash -c``), as Azure runs a command job's command."""
    import shlex

    words = line.split()
    if words and words[0] in ("python", "python3") and not (set(line) & SHELL_SYNTAX):
        return [sys.executable, *shlex.split(line)[1:]]
    return ["bash", "-c", line]


def command_script(step: StepPlan) -> str | None:
    """The script a command step runs with ``python`` when its command is that plain (for a warm start)."""
    if not isinstance(step, CommandStepPlan):
        return None
    line = "".join(p if isinstance(p, str) else "x" for p in step.command)
    argv = command_argv(line)
    if argv[0] != sys.executable or len(argv) < 2 or not argv[1].endswith(".py"):
        return None
    return argv[1]
