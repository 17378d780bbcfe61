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

from pipelines.core import defaults
from pipelines.errors import UserError
from steps import model_names

PROJECT_ROOT = Path(__file__).resolve().parent.parent

TASKS = ("regression", "classification", "forecasting")


SETTING_GROUPS = ("data", "automl", "model", "azure", "batch", "schedule")


def setting(default: Any, group: str, help_text: str) -> Any:
    """A Settings field with its group and one-line description (shown by each pipeline's --help)."""
    assert group in SETTING_GROUPS, group
    return dataclasses.field(default=default, metadata={"group": group, "help": help_text})


@dataclass(frozen=True)
class Settings:
    """What the pipelines are built from. Field names are the ``--set`` names; ``describe()`` says what each is."""

    # data
    dataset: str = setting(
        "bike-no", "data", "the training data: a known dataset name, a CSV file or folder, or an http(s) URL"
    )
    label: str = setting("cnt", "data", "the column to predict")
    time_column: str = setting(
        "date",
        "data",
        "the time column: split by time at cutoff_date (empty, or absent from the data: a random 80/20 split)",
    )
    cutoff_date: str = setting(
        "2012-08-31", "data", "the last day of the training period (YYYY-MM-DD); later rows are the test set"
    )
    # AutoML
    task: str = setting("regression", "automl", "regression, classification or forecasting")
    primary_metric: str = setting("", "automl", "the metric AutoML optimises (empty: the task's default)")
    timeout_minutes: int = setting(
        1,
        "automl",
        "AutoML's time budget in whole minutes (experiment_timeout_minutes; Azure needs 15 or more)",
    )
    iterations: int = setting(
        0, "automl", "the most trials AutoML may run (0: no cap, the time budget decides)"
    )
    n_cross_validations: int = setting(3, "automl", "cross-validation folds (2 or more)")
    forecast_horizon: int = setting(14, "automl", "forecasting: how many periods ahead to predict")
    allowed_models: str = setting("", "automl", "comma-separated AutoML model names to try (empty: all)")
    blocked_models: str = setting("", "automl", "comma-separated AutoML model names never to try")
    seed: int = setting(42, "automl", "the random seed of the split and the local AutoML")
    # registry and Azure compute
    model_name: str = setting("bike-demand", "model", "the registered model's name")
    experiment_name: str = setting("bike-demand-train", "model", "the training runs' experiment")
    compute_name: str = setting("cpu-cluster", "azure", "Azure: the AmlCompute cluster training runs on")
    vm_size: str = setting("STANDARD_DS3_V2", "azure", "Azure: the cluster's VM size (when it is created)")
    max_nodes: int = setting(2, "azure", "Azure: the cluster's maximum node count (it scales to zero)")
    # batch scoring
    mini_batch_size: str = setting(
        defaults.PRS_TABULAR_MINI_BATCH_SIZE,
        "batch",
        "ParallelRunStep mini-batch size: bytes for CSV input (1MB, 512KB), files for file input",
    )
    key_columns: str = setting("instant,date", "batch", "input columns copied next to each prediction")
    batch_experiment_name: str = setting("bike-demand-batch", "batch", "the batch scoring runs' experiment")
    batch_compute_name: str = setting("cpu-cluster", "batch", "Azure: the cluster batch scoring runs on")
    node_count: int = setting(1, "batch", "ParallelRunStep node_count")
    process_count_per_node: int = setting(2, "batch", "ParallelRunStep worker processes per node")
    error_threshold: int = setting(
        defaults.PRS_ERROR_THRESHOLD,
        "batch",
        "failed rows allowed before the job aborts (-1: ignore failures)",
    )
    run_invocation_timeout: int = setting(
        defaults.PRS_RUN_INVOCATION_TIMEOUT, "batch", "seconds one run() call may take"
    )
    run_max_try: int = setting(defaults.PRS_RUN_MAX_TRY, "batch", "tries per mini-batch")
    batch_environment: str = setting(
        "",
        "azure",
        "Azure: the Environment batch scoring loads the model in (AzureML-AutoML for a model Azure AutoML trained; empty: environments/batch.yml)",
    )
    deploy_environment: str = setting(
        "",
        "azure",
        "Azure: the Environment deploy serves score.py in (AzureML-AutoML for a model Azure AutoML trained; empty: environments/inference.yml)",
    )
    # schedule (Azure's ScheduleRecurrence vocabulary)
    schedule_frequency: str = setting(
        "Week", "schedule", "the default schedule's frequency: Minute, Hour, Day, Week or Month"
    )
    schedule_interval: int = setting(1, "schedule", "run every N frequency units")
    schedule_week_days: str = setting("Monday", "schedule", "comma-separated week days (Week frequency)")
    schedule_hours: str = setting("3", "schedule", "comma-separated hours of the day (Day or Week frequency)")
    schedule_minutes: str = setting("0", "schedule", "comma-separated minutes of the hour")
    schedule_time_zone: str = setting(
        "UTC", "schedule", "the schedule's time zone (an azureml TimeZone name, e.g. UTC)"
    )

    @classmethod
    def describe(cls, groups: tuple[str, ...] | None = None) -> list[tuple[str, Any, str]]:
        """(name, default, one-line description) of each setting, in the given groups (all if None)."""
        defaults_ = cls()
        return [
            (f.name, getattr(defaults_, f.name), f.metadata["help"])
            for f in fields(cls)
            if groups is None or f.metadata["group"] in groups
        ]

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
        check_model_name(self.model_name)
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


def check_model_name(name: Any) -> str:
    """``name`` if it is a valid model name (steps/model_names.py has the rule), else UserError."""
    trouble = model_names.problem(name)
    if trouble is not None:
        raise UserError(trouble, hint=model_names.RULE)
    return name


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
    """Settings from ``AMLOPS_<NAME>`` environment variables over a ``.env`` file in the project root.

    pydantic-settings reads both (``.env`` with python-dotenv's rules: ``export`` prefixes, quotes and
    inline comments); ``environ``, when given, stands in for the process environment.
    """
    assignments = {name: value for name, value in _read_sources(environ).items() if value is not None}
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


def _read_sources(environ: dict[str, str] | None) -> dict[str, str | None]:
    """The raw ``AMLOPS_*`` text of each setting (None where unset); Settings.with_overrides checks it."""
    from pydantic import create_model
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Source(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="AMLOPS_", env_file=PROJECT_ROOT / ".env", extra="ignore", case_sensitive=False
        )

        @classmethod
        def settings_customise_sources(
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        ):  # type: ignore[no-untyped-def]  # noqa: E501
            return (
                (init_settings, dotenv_settings) if environ is not None else (env_settings, dotenv_settings)
            )

    model = create_model(
        "AmlopsSettings", __base__=Source, **{f.name: (str | None, None) for f in fields(Settings)}
    )
    given = {
        f.name: environ[f"AMLOPS_{f.name.upper()}"]
        for f in fields(Settings)
        if f"AMLOPS_{f.name.upper()}" in (environ or {})
    }
    return model(**given).model_dump()


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
