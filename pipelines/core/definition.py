"""What a pipeline module builds and what its run checks see: the types every backend and CLI share."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pipelines.settings import Settings


@dataclass
class PipelineDefinition:
    """A pipeline as built: SDK step objects plus what the CLI and the backends need to know."""

    name: str
    description: str
    steps: list[Any]
    parameters: dict[str, Any]
    experiment_name: str
    schedule: Any
    settings: Settings
    module: str  # the ``python -m`` module whose ``run`` verb executes this pipeline
    dataset_param: str | None = None
    # the same pipeline rebuilt with {compute name: ComputeTarget} (the Azure backend's SDK objects)
    with_compute_targets: Callable[[dict[str, Any]], PipelineDefinition] | None = None


Builder = Callable[[Settings, str | None], PipelineDefinition]


@dataclass(frozen=True)
class RunCheck:
    """What a module's ``check_run`` sees before a local run starts: settings, data header, arguments."""

    settings: Settings
    given: frozenset[str]  # settings the user chose: named with --set, or not at their default value
    data_file: Path  # the (first) CSV file of the input data
    columns: list[str]  # its header
    head: Any  # its first rows (a pandas DataFrame)
    args: argparse.Namespace
    data_path: Path | None = None  # the resolved input: a CSV file or a folder
    model: Any = None  # the registered model the run uses (registry.RegisteredModel), if any


def chosen_settings(settings: Settings, assignments: dict[str, str] | None = None) -> frozenset[str]:
    """The settings the user chose (RunCheck.given): named in ``assignments`` or not at their default."""
    defaults = Settings()
    changed = {f.name for f in fields(Settings) if getattr(settings, f.name) != getattr(defaults, f.name)}
    return frozenset(assignments or ()) | changed
