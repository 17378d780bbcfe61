"""Measuring a command as a user runs it: wall time, CPU of all its processes, peak RSS of its process tree."""

from __future__ import annotations

import json
import resource
import subprocess
import time
from dataclasses import dataclass

import psutil

from pipelines.settings import PROJECT_ROOT


@dataclass(frozen=True)
class Measured:
    """One command: wall seconds, CPU seconds of all its processes, peak RSS of all of them together."""

    label: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    rows: int
    detail: dict
    other_cpu_seconds: float = 0.0  # CPU time other processes on the machine used meanwhile

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds

    def ideal_rows_per_second(self, cores: int) -> float:
        """Rows/s if the same CPU work were spread perfectly over all cores."""
        return self.rows / (self.cpu_seconds / cores)


def measure(
    label: str, argv: list[str], env: dict[str, str], rows: int, engine: psutil.Process | None = None
) -> Measured:
    """Run ``argv``; sample the RSS of its whole process tree; CPU time from getrusage of children.

    ``engine``: a warm engine daemon the command hands its run to. Its own RSS and that of its forks
    (the run and the run's workers) count with the command's, and the CPU of the forks it reaps with
    the command's CPU (the daemon's ``children_user``/``children_system`` times)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    engine_before = _reaped_cpu(engine)
    busy_before = _busy_cpu_seconds()
    start = time.perf_counter()
    proc = psutil.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT_ROOT)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            tree = [proc, *proc.children(recursive=True)]
            if engine is not None:
                tree += [engine, *engine.children(recursive=True)]
            for p in tree:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except psutil.NoSuchProcess:
            pass
        peak = max(peak, total)
        time.sleep(0.02)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    engine_cpu = _reaped_cpu(engine, wait=True) - engine_before
    busy = _busy_cpu_seconds() - busy_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + engine_cpu
    text = out.decode().strip()
    detail = json.loads(text) if text.startswith("{") else {}
    # this process's own sampling is small; what is left over is other work competing for the cores
    return Measured(label, seconds, cpu, peak / 2**20, rows, detail, max(0.0, busy - cpu))


def _reaped_cpu(engine: psutil.Process | None, wait: bool = False) -> float:
    """CPU seconds of the children ``engine`` has reaped; with ``wait``, after its forks have ended and been
    reaped (the daemon reaps them within a second)."""
    if engine is None:
        return 0.0
    deadline = time.monotonic() + 10
    while wait and engine.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    times = engine.cpu_times()
    return times.children_user + times.children_system


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent not idle (all processes, all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def plain_script(load_model: str) -> str:
    """The plain alternative the batch benchmarks race: one process, read_csv -> predict -> to_csv, timed by
    phase (printed as JSON). ``load_model`` is the line that loads the model, from ``sys.argv[3]``."""
    return (
        "\nimport json, sys, time\nt0 = time.perf_counter()\nimport mlflow.pyfunc\nimport pandas as pd\n"
        + load_model
        + "\nt1 = time.perf_counter()\nframe = pd.read_csv(sys.argv[1])\nt2 = time.perf_counter()\n"
        "features = list(model.metadata.get_input_schema().input_names())\n"
        'frame["prediction"] = model.predict(frame[features])\nt3 = time.perf_counter()\n'
        'frame[["instant", "date", "prediction"]].to_csv(sys.argv[2], index=False)\nt4 = time.perf_counter()\n'
        'print(json.dumps({"startup": t1 - t0, "read": t2 - t1, "predict": t3 - t2, "write": t4 - t3, '
        '"rows": len(frame)}))\n'
    )
