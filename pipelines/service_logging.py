"""Logging for the long-running services' threads: timestamped lines on stderr, level from AMLOPS_LOG_LEVEL."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def level() -> int:
    """AMLOPS_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR; default INFO) as a logging level."""
    name = os.environ.get("AMLOPS_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        from pipelines.errors import UserError

        raise UserError(
            f"AMLOPS_LOG_LEVEL={name!r} is not a log level", hint="use DEBUG, INFO, WARNING or ERROR"
        )
    return value


def configure() -> int:
    """Send the ``amlops`` loggers (and uvicorn's) to stderr with timestamps; returns the level set."""
    chosen = level()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "amlops", False)]
    handler.amlops = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    for name in ("amlops", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(chosen)
    return chosen


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"amlops.{name}")
