"""Process groups the project starts (steps, workers, servers) and how to end them with what they started."""

from __future__ import annotations

import os
import signal


def kill_group(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to the process group ``pid`` leads; False if it is already gone (or not ours)."""
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
