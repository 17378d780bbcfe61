"""A run's step logs as they grow, until the run ends (``az ml job stream`` for the local workspace).

``follow`` reads each log file from where it last stopped, emits whole lines only, and returns the run's
final status once the run is Completed, Failed or Canceled and every log has been read to its end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.local.runtime import runs
from pipelines.local.workspace import run_queue


@dataclass
class LogCursor:
    """Where each of a run's log files was last read to."""

    run_id: str
    step: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)

    def files(self) -> dict[str, Path]:
        found = {p.stem: p for p in sorted((runs.run_folder(self.run_id) / "logs").glob("*.log"))}
        driver = run_queue.driver_log(self.run_id)
        if driver.is_file():
            found["driver"] = driver
        return (
            {self.step: found[self.step]}
            if self.step and self.step in found
            else ({} if self.step else found)
        )

    def read(self, final: bool = False) -> list[tuple[str, str]]:
        """New whole lines as (log name, line); with ``final``, a last line without its newline too."""
        out: list[tuple[str, str]] = []
        for name, path in self.files().items():
            with open(path, "rb") as fh:
                fh.seek(self.offsets.get(name, 0))
                chunk = fh.read()
                self.offsets[name] = fh.tell()
            text = self.partial.pop(name, "") + chunk.decode("utf-8", errors="replace")
            lines = text.split("\n")
            tail = lines.pop()
            if tail and final:
                lines.append(tail)
            elif tail:
                self.partial[name] = tail
            out += [(name, line) for line in lines]
        return out


def follow(
    run_id: str,
    emit: Callable[[str, str], None],
    step: str | None = None,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> str:
    """Emit every log line of ``run_id`` (all steps, or ``step``) until the run ends; its final status.

    Returns the status it still has when ``timeout`` seconds pass first.
    """
    cursor = LogCursor(run_id, step)
    started = time.monotonic()
    while True:
        status = run_queue.read_run(run_id).get("status", "")
        done = status in runs.FINAL
        for name, line in cursor.read(final=done):
            emit(name, line)
        if done or (timeout is not None and time.monotonic() - started >= timeout):
            return status
        time.sleep(poll_seconds)
