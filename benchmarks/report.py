"""What every benchmark shares: a line describing the machine, and writing one section of BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

import psutil

from pipelines.atomic_files import write_text


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """Date, cores, CPU model, RAM and the load average now (wall times on a loaded machine are noisy)."""
    ram = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{dt.date.today().isoformat()} on {len(os.sched_getaffinity(0))} cores ({cpu_model()}), {ram:.0f} GiB RAM, "
        f"Python {platform.python_version()}; load average {load}"
    )


def update_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of a Markdown file, keeping the others; atomic."""
    heading = f"## {title}"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = current.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    section = [heading, "", *body.rstrip("\n").splitlines(), ""]
    if start is None:
        new_lines = [*lines, "", *section]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new_lines = [*lines[:start], *section, *lines[end:]]
    write_text(path, "\n".join(new_lines).rstrip("\n") + "\n")


def model_name(report: dict) -> str:
    """What the AutoML step registered: its best trial's learner, or its VotingEnsemble's members."""
    voted = report.get("voting_ensemble")
    if not voted:
        return f"best {report.get('best_estimator')}"
    members = ", ".join(f"{m['model']} x{m['damping']:g}" for m in voted["members"])
    return f"VotingEnsemble of {members}"
