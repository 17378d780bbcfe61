"""The pieces every v2 document builder shares: schema URLs, names, the translation result, errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.plan import PlanError

SCHEMA = "https://azuremlschemas.azureedge.net/latest/{}.schema.json"
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
# the MLTable file written next to a step's CSV files so that AutoML (v2 takes MLTable data) reads them
MLTABLE_CSV = (
    "{paths: [{pattern: ./*.csv}], transformations: "
    '[{read_delimited: {delimiter: ",", header: all_files_same_headers, encoding: utf8}}]}'
)
# the flags ParallelRunStep adds to its own arguments (the entry script's own follow them)
PRS_FLAGS = {
    "--client_sdk_version", "--scoring_module_name", "--mini_batch_size", "--error_threshold",
    "--output_action", "--logging_level", "--run_invocation_timeout", "--run_max_try",
    "--create_snapshot_at_runtime", "--append_row_file_name", "--output", "--process_count_per_node",
    "--allowed_failed_count", "--allowed_failed_percent", "--partition_keys", "--node_count",
}  # fmt: skip
PRS_INDEXED_FLAG = re.compile(r"^--(input_ds|input_pipeline_param|input_fds|side_input)_\d+$")
AUTOML_TASKS = ("regression", "classification", "forecasting")
FREQUENCIES = {"Minute": "minute", "Hour": "hour", "Day": "day", "Week": "week", "Month": "month"}


class UnsupportedConstruct(PlanError):
    """A v1 construct with no v2 equivalent: the message names it and what to use instead."""


@dataclass
class Translation:
    """The v2 documents of one pipeline: ``files`` maps a path relative to the output folder to a document.

    ``copies`` maps a relative path to a project file copied there (conda specs); ``mapped`` and
    ``differences`` are what the exporter prints.
    """

    name: str
    job_file: str
    component_file: str
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    copies: dict[str, Path] = field(default_factory=dict)
    mapped: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What translating one plan needs: where the project's folders are and where the files go."""

    name: str
    description: str
    experiment_name: str
    out_dir: Path  # the absolute output folder (code paths are written relative to it)
    environments_dir: Path | None = None
    default_compute: str | None = None
    # a ParallelRunStep's --model_name is looked up in the MLflow registry by the entry script, when it runs
    mlflow_model_lookup: bool = False
    # the environment of a script step reading an AutoML node's best_model (None: the step's own)
    automl_model_environment: str | None = None


def ident(name: str) -> str:
    """A v2 node, input or output name for a v1 name (a Python identifier: lowercase, digits, underscores)."""
    text = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return text if text[:1].isalpha() or text[:1] == "_" else f"_{text}"


def component_name(pipeline: str, step: str) -> str:
    """A v2 component name (lowercase letters, digits and underscores, starting with a letter)."""
    text = re.sub(r"[^a-z0-9_]", "_", f"{pipeline}_{step}".lower())
    return text if text[:1].isalpha() else f"c_{text}"


def literal_input(default: Any) -> dict[str, Any]:
    if isinstance(default, bool):
        return {"type": "boolean", "default": default}
    if isinstance(default, int):
        return {"type": "integer", "default": default}
    if isinstance(default, float):
        return {"type": "number", "default": default}
    return {"type": "string", "default": "" if default is None else str(default)}
