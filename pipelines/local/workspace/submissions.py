"""Submissions: a request to run a published pipeline, checked against what was published and turned into the
run's command line and its ``run.json`` stub, before anything is queued (run_queue queues what this builds).

Unknown parameter names, values of the wrong type, datasets that cannot be resolved (or that a REST caller may
not name) and settings the pipeline would reject raise UserError here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.params import ParameterTypeError, as_text, coerce, type_phrase
from pipelines.errors import UserError
from pipelines.local.workspace.data_access import DataAccess
from pipelines.settings import Settings

MODEL_VERSION = "model_version"  # the batch pipeline's parameter (0: the latest version)


@dataclass
class Submission:
    """A validated request to run one published pipeline: the command's arguments and the record stub."""

    module: str
    args: list[str]
    record: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def check_value(name: str, default: Any, value: Any) -> str:
    """``value`` as the string ``--set`` takes, if it has the type of the published ``default``."""
    try:
        return as_text(coerce(default, value, strict_strings=True))
    except ParameterTypeError:
        raise UserError(
            f"parameter {name!r} expects {type_phrase(default)} (its default is {default!r}), got {json.dumps(value)}",
            hint="send the value with the type of the published default",
        ) from None


def check_dataset_ref(name: str, ref: Any) -> str:
    """A dataset reference (name, local path or http(s) URL) that the local engine can resolve."""
    from pipelines import datasets

    if not isinstance(ref, str) or not ref.strip():
        raise UserError(
            f"dataset parameter {name!r} expects a dataset name, path or URL, got {json.dumps(ref)}",
            hint='e.g. "bike-no" or an http(s) URL of a CSV file',
        )
    if ref.startswith(("http://", "https://")) or ref in datasets.KNOWN:
        return ref
    try:
        datasets.resolve(ref)
    except UserError as exc:
        raise UserError(f"dataset parameter {name!r}: {exc.message}", hint=exc.hint) from None
    return ref


def prepare(
    published: dict[str, Any],
    *,
    experiment_name: str | None = None,
    parameters: dict[str, Any] | None = None,
    dataset: str | None = None,
    extra: dict[str, Any] | None = None,
    data_access: DataAccess | None = None,
) -> Submission:
    """Validate parameter assignments against a published pipeline and build the run's command.

    Unknown names, values of the wrong type and settings the pipeline would reject raise UserError,
    before anything is queued. With ``data_access`` (a REST submission), the dataset may only be what that
    policy allows, and the run reads what the policy resolved it to.
    """
    defaults: dict[str, Any] = published["parameters"]
    dataset_param = published.get("dataset_param")
    sets, data_ref = _assignments(defaults, dataset_param, parameters or {}, dataset)
    data_arg = None
    if data_ref is not None:
        param = dataset_param or "dataset"
        if data_access is not None:
            data_arg = data_access.resolve(param, data_ref)
        else:
            data_arg = data_ref = check_dataset_ref(param, data_ref)
    if experiment_name:
        sets["experiment_name"] = experiment_name
    # not a setting: the batch run's --model NAME:VERSION (check_value has made it an integer's text)
    version_text = sets.pop(MODEL_VERSION, None)
    model_version = int(version_text) if version_text is not None else None
    frozen = Settings(**published["settings"])
    settings = frozen.with_overrides(sets)  # unknown settings and bad values raise UserError here
    args = _command_args(published["settings"], sets, data_arg, model_version, settings.model_name)
    info = {
        "published_pipeline_id": published["id"],
        "endpoint_id": published.get("endpoint_id"),
        "endpoint_version": published.get("version"),
        **(extra or {}),
    }
    shown = {k: v for k, v in defaults.items()}
    shown.update({k: settings.as_dict().get(k, v) for k, v in sets.items() if k in defaults})
    if model_version is not None:
        shown[MODEL_VERSION] = model_version
    if dataset_param and data_ref is not None:
        shown[dataset_param] = data_ref
    record = {
        "pipeline": published["name"],
        "experiment": settings.experiment_name,
        "status": "Queued",
        "started": None,
        "ended": None,
        "parameters": shown,
        "steps": [],
        "metrics": {},
        "outputs": {},
        "error": None,
        **info,
    }
    return Submission(module=published["module"], args=args, record=record, extra=info)


def _assignments(
    defaults: dict[str, Any], dataset_param: str | None, parameters: dict[str, Any], dataset: str | None
) -> tuple[dict[str, str], Any]:
    """The ``--set`` values (checked against the published defaults) and the dataset reference, if any."""
    sets: dict[str, str] = {}
    data_ref: Any = dataset
    for name, value in parameters.items():
        if name not in defaults:
            raise UserError(
                f"unknown pipeline parameter {name!r}",
                hint="this pipeline's parameters are: " + ", ".join(sorted(defaults)),
            )
        if name == dataset_param:
            if dataset is not None:
                raise UserError(
                    f"dataset parameter {name!r} is assigned twice",
                    hint="assign it in ParameterAssignments or DataSetDefinitionValueAssignments, not both",
                )
            data_ref = value
        else:
            sets[name] = check_value(name, defaults[name], value)
    return sets, data_ref


def _command_args(
    published_settings: dict[str, Any],
    sets: dict[str, str],
    data_arg: str | None,
    model_version: int | None,
    model_name: str,
) -> list[str]:
    """The run command's arguments after ``run --run-id ID``: settings, ``--set``s, ``--data``, ``--model``."""
    args = ["--settings-json", json.dumps(published_settings)]
    for name, value in sets.items():
        args += ["--set", f"{name}={value}"]
    if data_arg is not None:
        args += ["--data", data_arg]
    if model_version is not None:
        if model_version < 0:
            raise UserError(f"{MODEL_VERSION} must be 0 (the latest version) or a registered version number, "
                            f"got {model_version}", hint=f"e.g. {MODEL_VERSION}=1")  # fmt: skip
        args += ["--model", model_name + (f":{model_version}" if model_version else "")]
    return args
