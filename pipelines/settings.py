"""One place for the project's settings: a frozen dataclass read from AMLOPS_* environment variables.

Every setting can also be overridden on the command line with ``--set NAME=VALUE``; the same names are
used in ``.env`` files (``AMLOPS_<NAME>``) and in the published pipelines' parameter lists.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pipelines.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

TASKS = ("regression", "classification", "forecasting")


@dataclass(frozen=True)
class Settings:
    """What the pipelines are built from. Field names are the ``--set`` names."""

    # data
    dataset: str = "bike-no"
    label: str = "cnt"
    time_column: str = "date"  # empty: random 80/20 split (also when the default is not in the data)
    cutoff_date: str = "2012-08-31"
    # AutoML
    task: str = "regression"
    primary_metric: str = ""  # empty: the task's default (see default_metric)
    timeout_minutes: int = 1  # AutoML experiment_timeout_minutes (whole minutes, as the SDK takes them)
    iterations: int = 0  # AutoML iterations (FLAML trials) cap; 0: no cap, the time budget decides
    n_cross_validations: int = 3
    forecast_horizon: int = 14
    allowed_models: str = ""  # comma-separated AutoML model names; empty: all
    blocked_models: str = ""
    # registry / Azure
    model_name: str = "bike-demand"
    experiment_name: str = "bike-demand-train"
    compute_name: str = "cpu-cluster"
    vm_size: str = "STANDARD_DS3_V2"
    max_nodes: int = 2
    # batch scoring
    mini_batch_size: str = "1MB"
    key_columns: str = "instant,date"  # input columns copied next to each prediction
    batch_experiment_name: str = "bike-demand-batch"
    batch_compute_name: str = "cpu-cluster"
    node_count: int = 1
    process_count_per_node: int = 2
    error_threshold: int = 10
    run_invocation_timeout: int = 60
    run_max_try: int = 3
    # Azure only: the workspace Environment the ParallelRunStep loads the model in, e.g. AzureML-AutoML for
    # a model Azure AutoML trained (it needs AutoML's runtime); empty: environments/batch.yml
    batch_environment: str = ""
    # schedule (Azure's ScheduleRecurrence vocabulary)
    schedule_frequency: str = "Week"
    schedule_interval: int = 1
    schedule_week_days: str = "Monday"
    schedule_hours: str = "3"
    schedule_minutes: str = "0"
    schedule_time_zone: str = "UTC"
    seed: int = 42

    @property
    def metric(self) -> str:
        """The primary metric, defaulting by task as AutoML does."""
        return self.primary_metric or default_metric(self.task)

    def with_overrides(self, assignments: dict[str, str]) -> Settings:
        """A copy with ``NAME=VALUE`` strings applied; unknown names and bad values raise UserError."""
        values: dict[str, Any] = {}
        known = {f.name: f for f in fields(self)}
        for name, raw in assignments.items():
            if name not in known:
                raise UserError(
                    f"unknown setting {name!r}",
                    hint="run with --help to list the settings (" + ", ".join(sorted(known)) + ")",
                )
            values[name] = _coerce(name, known[name].type, raw)
        new = dataclasses.replace(self, **values)
        new.validate()
        return new

    def validate(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"task {self.task!r} is not supported", hint="use one of " + ", ".join(TASKS))
        if self.timeout_minutes <= 0:
            raise UserError("timeout_minutes must be positive", hint="e.g. --set timeout_minutes=1")
        if self.n_cross_validations < 2:
            raise UserError("n_cross_validations must be at least 2", hint="e.g. --set n_cross_validations=3")
        if not re.fullmatch(r"\d+([kKmMgG][bB])*", self.mini_batch_size):
            raise UserError(
                f"mini_batch_size {self.mini_batch_size!r} is not a size",
                hint="use a byte size such as 1MB, 512KB or 1048576 (or a file count for file datasets)",
            )
        if int(re.match(r"\d+", self.mini_batch_size).group()) == 0:
            raise UserError(
                f"mini_batch_size must be more than 0, got {self.mini_batch_size!r}",
                hint="use a byte size such as 1MB or 512KB (or a file count for file datasets)",
            )
        try:
            if self.cutoff_date:
                dt.date.fromisoformat(self.cutoff_date)
        except ValueError:
            raise UserError(
                f"cutoff_date {self.cutoff_date!r} is not a date", hint="use YYYY-MM-DD, e.g. 2012-08-31"
            ) from None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_metric(task: str) -> str:
    return {"classification": "AUC_weighted"}.get(task, "normalized_root_mean_squared_error")


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise UserError(
            f"setting {name} expects {'an integer' if kind == 'int' else 'a number'}, got {raw!r}",
            hint=f"e.g. --set {name}=1",
        ) from None
    return str(raw)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from AMLOPS_<NAME> environment variables (and a ``.env`` file in the project root)."""
    env = dict(_read_dotenv(PROJECT_ROOT / ".env"))
    env.update(os.environ if environ is None else environ)
    assignments = {
        f.name: env[f"AMLOPS_{f.name.upper()}"] for f in fields(Settings) if f"AMLOPS_{f.name.upper()}" in env
    }
    try:
        return Settings().with_overrides(assignments)
    except UserError as exc:  # name the variable: no command line the user typed holds the bad value

        def fails(name: str) -> bool:
            try:
                Settings().with_overrides({name: assignments[name]})
            except UserError:
                return True
            return False

        culprit = next((f"AMLOPS_{n.upper()}" for n in assignments if fails(n)), "an AMLOPS_* variable")
        raise UserError(
            f"{culprit}: {exc.message}", hint=f"fix or unset {culprit} (in the environment or the .env file)"
        ) from None


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def amlops_home() -> Path:
    """The local workspace folder (``AMLOPS_HOME``, default ``.amlops/`` in the project)."""
    home = Path(os.environ.get("AMLOPS_HOME") or PROJECT_ROOT / ".amlops").resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def parse_assignments(pairs: list[str] | None, option: str = "--set") -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a pair without '=' raises UserError."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"{option} expects NAME=VALUE, got {pair!r}", hint=f"e.g. {option} label=cnt")
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out
