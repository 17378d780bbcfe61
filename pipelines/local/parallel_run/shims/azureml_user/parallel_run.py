"""``azureml_user.parallel_run.EntryScript`` for the local ParallelRunStep engine.

Azure's batch workers provide this module; entry scripts use it as ``EntryScript().logger``. The local
engine puts this folder on the workers' ``sys.path`` and describes the worker through ``AMLOPS_PRS_*``
environment variables, so unchanged Azure entry scripts import it and log to the worker's log file in
the job's report folder. Outside a worker (e.g. in unit tests) it logs to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["EntryScript"]

_FORMAT = "%(asctime)s|%(name)s|%(levelname)s|%(process)d|%(funcName)s()|%(message)s"


class _Singleton(type):
    _instances: dict[type, Any] = {}

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls not in cls._instances:
            cls._instances[cls] = super().__call__(*args, **kwargs)
        return cls._instances[cls]


class EntryScript(metaclass=_Singleton):
    """The entry script's view of its worker: a logger and the run's folders (one instance per process)."""

    def __init__(self, logging_level: str | int | None = None) -> None:
        level = logging_level or os.environ.get("AMLOPS_PRS_LOGGING_LEVEL", "INFO")
        self._level = logging.getLevelName(level) if isinstance(level, str) else level
        self._logger: logging.Logger | None = None

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (self.__class__, ())

    @property
    def logger(self) -> logging.Logger:
        """A logger writing to this worker's file under ``logs/user/entry_script_log/`` in the report folder."""
        if self._logger is None:
            logger = logging.getLogger("ParallelRunStep.EntryScript")
            logger.setLevel(self._level if isinstance(self._level, int) else logging.INFO)
            logger.propagate = False
            log_file = os.environ.get("AMLOPS_PRS_LOG_FILE")
            if log_file:
                Path(log_file).parent.mkdir(parents=True, exist_ok=True)
                handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
            else:
                handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(_FORMAT))
            logger.addHandler(handler)
            self._logger = logger
        return self._logger

    @property
    def log_dir(self) -> str:
        """The folder of user logs (``logs/user`` in the report folder)."""
        return os.environ.get("AMLOPS_PRS_LOG_DIR", "logs")

    @property
    def working_dir(self) -> str:
        """The job's working folder (the entry script's source directory)."""
        return os.environ.get("AMLOPS_PRS_WORKING_DIR", os.getcwd())

    @property
    def output_dir(self) -> str:
        """The step's output folder (where append_row results go); entry scripts may write there too."""
        return os.environ.get("AMLOPS_PRS_OUTPUT_DIR", "output")

    @property
    def agent_name(self) -> str:
        """This worker's name, e.g. ``process000``."""
        return os.environ.get("AMLOPS_PRS_AGENT_NAME", "process000")

    @property
    def node_id(self) -> str:
        """The (simulated) node this worker belongs to."""
        return os.environ.get("AMLOPS_PRS_NODE_ID", "0")
