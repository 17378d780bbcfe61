"""The SDK v2 reader: a pipeline job YAML (``az ml job create --file``) into the SDK-neutral plan.

The YAML is loaded and validated by azure-ai-ml's own ``load_job`` (which loads component files with
the same loader as ``load_component``) and ``_validate()``, so what ``az ml`` refuses is refused here,
with the first error as one line naming the node and the field. What azure-ai-ml 1.35.2 lets through
is checked here: an unbound required input, a ``${{inputs.x}}`` naming no input, a binding to a
pipeline input or node output that does not exist, a literal of the wrong type, a missing local path.

Command nodes become CommandStepPlans, AutoML nodes (regression, classification, forecasting)
AutoMLStepPlans writing ``best_model`` as an MLflow model, parallel nodes ParallelRunStepPlans.
Sweep nodes, pipeline components nested in pipelines, other node types, remote data (``azureml:``
data assets, datastore and web URIs) and components or environments from registries are refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.plan import (
    Arg,
    AutoMLStepPlan,
    CommandStepPlan,
    DataRef,
    DatasetSource,
    ParallelRunStepPlan,
    ParamRef,
    Plan,
    PlanError,
    StepPlan,
    order_steps,
)
from pipelines.core.v2_terms import (  # noqa: F401 - part of this module's vocabulary
    ASSET_REF,
    AUTOML_TASKS,
    DATA_TYPES,
    LITERAL_TYPES,
    OPTIONAL_BLOCK,
    PARENT_INPUT,
    PARENT_OUTPUT,
    PRIMARY_METRICS,
    REFERENCE,
    V2Error,
)
from pipelines.core.v2_terms import data_names as _data_names
from pipelines.core.v2_terms import environment_name as _environment_name
from pipelines.core.v2_terms import template as _template
from pipelines.errors import UserError


@dataclass
class V2Pipeline:
    """A read pipeline job: its plan and what ``show`` and the run record say about it."""

    source: Path
    name: str
    description: str
    experiment_name: str
    plan: Plan
    node_types: dict[str, str] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)  # pipeline inputs without a value: need --set
    input_types: dict[str, str] = field(default_factory=dict)  # literal pipeline input -> its type
    models: dict[str, str] = field(default_factory=dict)  # dataset name -> "name[:version]" in the registry


def read_pipeline(path: str | Path, data_paths: Mapping[str, str] | None = None) -> V2Pipeline:
    """Load, validate and read a v2 pipeline job YAML; UserError (one line) for anything not runnable.

    ``data_paths`` gives pipeline data inputs a local path in place of the YAML's (``--set``), so a job
    whose data is in Azure (a URL, a datastore) runs here on a local copy.
    """
    source = Path(path)
    if not source.is_file():
        raise UserError(f"no pipeline file {path}", hint="give the path of a pipeline job YAML")
    job = _load(source)
    reader = _Reader(job, source, dict(data_paths or {}))
    return reader.read()


def _load(source: Path) -> Any:
    import yaml

    try:
        head = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise UserError(f"{source} is not readable YAML: {first}") from None
    kind = head.get("type") if isinstance(head, dict) else None
    if kind != "pipeline":
        raise UserError(
            f"{source} is {f'a {kind} YAML' if kind else 'not a job YAML (it has no type)'}, not a pipeline job",
            hint="the local engine runs pipeline jobs (type: pipeline); make the component a node of one",
        )
    from azure.ai.ml import load_job
    from azure.ai.ml.entities import PipelineJob

    for name in list(
        logging.root.manager.loggerDict
    ):  # experimental-class notes, upload warnings: noise here
        if name.startswith("azure"):
            logging.getLogger(name).setLevel(logging.ERROR)

    try:
        job = load_job(source)
    except Exception as exc:  # marshmallow's ValidationError or azure-ai-ml's own exceptions
        raise _load_error(exc) from None
    if not isinstance(job, PipelineJob):
        raise UserError(
            f"{source} is a {getattr(job, 'type', type(job).__name__)} job, not a pipeline job",
            hint="the local engine runs pipeline jobs (type: pipeline); wrap the job as a node of one",
        )
    result = job._validate()
    errors = {k: v for k, v in result.error_messages.items() if not k.endswith(".compute") and k != "compute"}
    if errors:  # a compute is Azure's to check: locally every node runs on this machine
        where, message = next(iter(errors.items()))
        raise _path_error(where, message)
    return job


def _load_error(exc: Exception) -> UserError:
    """azure-ai-ml's error for a file it refuses, as one line: the first error's path and message."""
    import json

    text = str(exc)
    start, end = text.find("{"), text.rfind("}")
    if start >= 0 and end > start:
        try:
            errors = json.loads(text[start : end + 1]).get("errors") or []
        except ValueError:
            errors = []
        if errors:
            return _path_error(errors[0].get("path") or "", str(errors[0].get("message")))
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    rest = " ".join(line.strip() for line in text.splitlines()[1:4] if line.strip())
    return UserError(f"azure-ai-ml refuses the YAML: {first} {rest}".strip()[:400])


def _path_error(where: str, message: str) -> UserError:
    """An error at a YAML path such as ``jobs.train.inputs.lr``, naming its node and field."""
    refused = re.findall(r"Value '([^']*)' passed is not in set \[([^\]]*)\]", message)
    if refused:  # a union of schemas: each alternative's allowed values, as one list
        allowed = [v.strip(" '") for _, values in refused for v in values.split(",")]
        message = f"{refused[0][0]!r} is not one of: {', '.join(dict.fromkeys(allowed))}"
    message = " ".join(message.split())[:300]
    match = re.match(r"^jobs\.([^.]+)\.?(.*)$", where)
    if match:
        return V2Error(match.group(1), f"field {match.group(2) or 'type'}", message)
    return V2Error(None, f"field {where or '(pipeline)'}", message)


class _Reader:
    def __init__(self, job: Any, source: Path, data_paths: dict[str, str]) -> None:
        self.job = job
        self.data_paths = data_paths
        self.source = source
        self.base = source.resolve().parent
        self.plan = Plan(steps=[])
        self.node_types: dict[str, str] = {}
        self.required: list[str] = []
        self.models: dict[str, str] = {}
        self.pipeline_literals: dict[str, str] = {}  # literal pipeline input -> its type

    def read(self) -> V2Pipeline:
        self._pipeline_inputs()
        nodes = dict(self.job.jobs)
        for name, node in nodes.items():
            self.node_types[name] = str(node.type)
        self.nodes = nodes
        for name, node in nodes.items():
            self.plan.steps.append(self._node(name, node))
        self._pipeline_outputs()
        try:
            self.plan.steps = order_steps(self.plan)
        except PlanError as exc:
            raise UserError(str(exc), hint="check the ${{parent.jobs...}} bindings") from None
        return V2Pipeline(
            source=self.source,
            name=self.job.display_name or self.job.name or self.source.stem,
            description=self.job.description or "",
            experiment_name=self.job.experiment_name or self.source.resolve().parent.name,
            plan=self.plan,
            node_types=self.node_types,
            required=self.required,
            input_types=self.pipeline_literals,
            models=self.models,
        )

    # ---- pipeline inputs and outputs -----------------------------------------------------------
    def _pipeline_inputs(self) -> None:
        for name, item in self.job.inputs.items():
            value = item._data
            kind = getattr(value, "type", None)
            if kind is None:  # a literal: 20, 1.8, "time-based", true
                self.plan.parameters[name] = value
                self.pipeline_literals[name] = _literal_type(value)
            elif kind in LITERAL_TYPES:
                self.plan.parameters[name] = value.default
                self.pipeline_literals[name] = kind
                if value.default is None and not value.optional:
                    self.required.append(name)
            elif name in self.data_paths:  # --set NAME=PATH replaces the YAML's path (the caller checks it)
                local = Path(self.data_paths[name]).expanduser().resolve()
                self._local_source(name, local, str(kind), getattr(value, "mode", None))
            else:
                self._data_source(None, f"pipeline input {name}", name, value)

    def _pipeline_outputs(self) -> None:
        declared = set(self.job.outputs)
        unbound = declared - set(self.plan.outputs)
        if unbound:
            raise V2Error(
                None, f"pipeline output {sorted(unbound)[0]}", "no node writes it",
                hint="bind a node output to it with ${{parent.outputs.NAME}}",
            )  # fmt: skip

    # ---- nodes ---------------------------------------------------------------------------------
    def _node(self, name: str, node: Any) -> StepPlan:
        kind = str(node.type)
        if kind == "command":
            return self._command(name, node)
        if kind == "automl":
            return self._automl(name, node)
        if kind == "parallel":
            return self._parallel(name, node)
        what = {
            "sweep": "sweep nodes (hyperparameter search) are not supported locally",
            "pipeline": "a pipeline component nested in a pipeline is not supported locally",
        }.get(kind, f"node type {kind} is not supported locally")
        raise V2Error(
            name, "field type", what, hint="the local engine runs command, automl and parallel nodes"
        )

    def _component(self, name: str, node: Any) -> Any:
        component = node.component
        if isinstance(component, str):
            raise V2Error(
                name, "field component", f"{component} is registered in a workspace or registry",
                hint="the local engine runs components from local YAML files or written inline",
            )  # fmt: skip
        return component

    def _code(self, name: str, code: Any, base: Path) -> Path:
        if code is None:
            return base
        text = str(code)
        if text.startswith(("azureml:", "azureml://", "http://", "https://")):
            raise V2Error(name, "field code", f"{text} is not a local folder", hint="give code: a local path")
        folder = (base / text).resolve()
        if not folder.exists():
            raise V2Error(name, "field code", f"{text} does not exist (looked in {base})")
        return folder if folder.is_dir() else folder.parent

    def _command(self, name: str, node: Any) -> CommandStepPlan:
        component = self._component(name, node)
        base = Path(component.base_path or self.base)
        source = self._code(name, component.code, base)
        values, outputs = self._bind(name, node, component)
        command = _template(name, "command", component.command or "", values, outputs)
        variables: dict[str, Arg] = {str(k): str(v) for k, v in (node.environment_variables or {}).items()}
        for key, value in values.items():
            if isinstance(value, DataRef):
                variables[f"AZURE_ML_INPUT_{key}"] = value
        for key, ref in outputs.items():
            variables[f"AZURE_ML_OUTPUT_{key}"] = ref
        deterministic = getattr(component, "is_deterministic", True)
        return CommandStepPlan(
            name=name,
            source_directory=source,
            command=command,
            inputs=_data_names(values),
            outputs=[ref.name for ref in outputs.values()],
            allow_reuse=True if deterministic is None else bool(deterministic),
            compute_target=self._compute(node),
            environment=_environment_name(component.environment),
            variables=variables,
        )

    def _compute(self, node: Any) -> str | None:
        compute = node.compute or getattr(self.job.settings, "default_compute", None)
        return str(compute).removeprefix("azureml:") if compute else None

    # ---- inputs and outputs of one node ----------------------------------------------------------
    def _bind(self, name: str, node: Any, component: Any) -> tuple[dict[str, Any], dict[str, DataRef]]:
        """The node's inputs (value: literal text, ParamRef, DataRef or None when unbound) and outputs."""
        declared = dict(component.inputs or {})
        for key in node.inputs:
            if key not in declared:
                raise V2Error(name, f"input {key}", "the component declares no such input",
                              hint="inputs: " + (", ".join(declared) or "none"))  # fmt: skip
        values: dict[str, Any] = {}
        for key, spec in declared.items():
            given = node.inputs[key]._data if key in node.inputs else None
            values[key] = self._input(name, key, spec, given)
        outputs: dict[str, DataRef] = {}
        for key, spec in (component.outputs or {}).items():
            given = node.outputs[key]._data if key in node.outputs else None
            outputs[key] = self._output(name, key, spec, given)
        return values, outputs

    def _input(self, name: str, key: str, spec: Any, given: Any) -> Any:
        kind = getattr(spec, "type", None)
        if given is None:
            if getattr(spec, "default", None) is not None:
                return _literal_text(spec.default)
            if getattr(spec, "optional", False):
                return None
            raise V2Error(name, f"input {key}", "required input is not bound",
                          hint=f"give it a value or a binding under jobs.{name}.inputs.{key}")  # fmt: skip
        if isinstance(given, str) and REFERENCE.search(given):
            return self._binding(name, key, kind, given)
        if hasattr(given, "type") and not isinstance(given, str | int | float | bool):
            if isinstance(given.path, str) and REFERENCE.search(
                given.path
            ):  # {type: mltable, path: ${{...}}}
                return self._binding(name, key, str(given.type), given.path)
            if getattr(given, "path", None) is None:
                raise V2Error(name, f"input {key}", "a data input needs a path")
            return self._data_source(name, f"input {key}", f"{name}.{key}", given)
        if kind in DATA_TYPES:
            raise V2Error(name, f"input {key}", f"expects {kind} data, got the value {given!r}",
                          hint="give {type: ..., path: ./local/path} or a ${{parent...}} binding")  # fmt: skip
        return _check_literal(name, key, kind, given)

    def _binding(self, name: str, key: str, kind: str | None, text: str) -> Any:
        match = REFERENCE.fullmatch(text.strip())
        if not match:
            raise V2Error(name, f"input {key}", f"{text!r} mixes text and a binding; bind the whole value")
        ref = match.group(1)
        parent_input = PARENT_INPUT.match(ref)
        if parent_input:
            pname = parent_input.group(1)
            if pname in self.plan.datasets:
                return DataRef(pname)
            if pname not in self.pipeline_literals:
                known = ", ".join(list(self.job.inputs)) or "none"
                raise V2Error(name, f"input {key}", f"${{{{{ref}}}}} names no pipeline input",
                              hint=f"pipeline inputs: {known}")  # fmt: skip
            if kind in DATA_TYPES:
                raise V2Error(
                    name, f"input {key}", f"expects {kind} data, but pipeline input {pname} is a value"
                )
            return ParamRef(pname)
        parent_output = PARENT_OUTPUT.match(ref)
        if parent_output:
            other, out = parent_output.groups()
            if other not in self.nodes:
                raise V2Error(name, f"input {key}", f"${{{{{ref}}}}} names no node of this pipeline",
                              hint="nodes: " + ", ".join(self.nodes))  # fmt: skip
            if out not in _node_outputs(self.nodes[other]):
                raise V2Error(name, f"input {key}", f"node {other} has no output {out}",
                              hint="its outputs: " + ", ".join(_node_outputs(self.nodes[other])))  # fmt: skip
            return DataRef(f"{other}.{out}")
        raise V2Error(name, f"input {key}", f"${{{{{ref}}}}} is not a binding the local engine knows",
                      hint="use ${{parent.inputs.NAME}} or ${{parent.jobs.NODE.outputs.NAME}}")  # fmt: skip

    def _output(self, name: str, key: str, spec: Any, given: Any) -> DataRef:
        ref = DataRef(f"{name}.{key}")
        if isinstance(given, str):
            match = re.fullmatch(r"\$\{\{\s*parent\.outputs\.([A-Za-z0-9_]+)\s*\}\}", given.strip())
            if not match:
                raise V2Error(
                    name, f"output {key}", f"{given!r} is not a ${{{{parent.outputs.NAME}}}} binding"
                )
            self.plan.outputs[match.group(1)] = ref.name
        elif given is not None and getattr(given, "path", None):
            raise V2Error(name, f"output {key}", f"path {given.path} is remote storage",
                          hint="leave the path out: outputs go to the run folder (and --output DIR)")  # fmt: skip
        kind = getattr(given, "type", None) or getattr(spec, "type", None) or "uri_folder"
        if kind == "uri_file" and self.node_types[name] == "command":
            raise V2Error(name, f"output {key}", "uri_file outputs are not supported locally",
                          hint="declare it uri_folder and write the file inside it")  # fmt: skip
        return ref

    def _data_source(self, node: str | None, where: str, data_name: str, item: Any) -> DataRef:
        """A data input given as a path: a local file or folder, or a model in the local registry."""
        kind = str(item.type)
        path = str(item.path)
        local = (self.base / path).resolve()
        if not local.exists() and ASSET_REF.fullmatch(path.removeprefix("azureml:")):
            path = "azureml:" + path.removeprefix("azureml:")  # azure-ai-ml drops the prefix of name:version
        if (
            path.startswith("azureml:")
            and not path.startswith("azureml://")
            and kind in ("mlflow_model", "custom_model")
        ):
            self.models[data_name] = _model_ref(path)
            self.plan.datasets[data_name] = DatasetSource(data_name, (path,), "mount", "file", kind)
            return DataRef(data_name)
        if path.startswith(("azureml:", "http://", "https://", "wasbs://", "abfss://", "adl://")):
            raise V2Error(node, where, f"{path} is remote data (a data asset or storage in Azure)",
                          hint="the local engine reads local paths: give path: ./a/local/folder")  # fmt: skip
        if not local.exists():
            raise V2Error(node, where, f"path {path} does not exist (looked in {self.base})")
        if kind == "uri_file" and not local.is_file():
            raise V2Error(node, where, f"uri_file path {path} is not a file")
        if kind in ("uri_folder", "mltable", "mlflow_model", "custom_model") and not local.is_dir():
            raise V2Error(node, where, f"{kind} path {path} is not a folder")
        if kind == "mltable" and not (local / "MLTable").is_file():
            raise V2Error(node, where, f"mltable folder {path} has no MLTable file")
        return self._local_source(data_name, local, kind, getattr(item, "mode", None))

    def _local_source(self, data_name: str, local: Path, kind: str, mode: Any) -> DataRef:
        table = kind == "mltable" or (kind == "uri_file" and local.suffix.lower() == ".csv")
        self.plan.datasets[data_name] = DatasetSource(
            data_name, (str(local),), "download" if str(mode or "ro_mount") == "download" else "mount",
            "tabular" if table else "file", kind,
        )  # fmt: skip
        return DataRef(data_name)

    # ---- AutoML and parallel nodes (v2_nodes.py) ------------------------------------------------
    def _automl(self, name: str, node: Any) -> AutoMLStepPlan:
        from pipelines.core.v2_nodes import read_automl

        return read_automl(self, name, node)

    def _parallel(self, name: str, node: Any) -> ParallelRunStepPlan:
        from pipelines.core.v2_nodes import read_parallel

        return read_parallel(self, name, node)


def _node_outputs(node: Any) -> list[str]:
    names = list(node.outputs)
    component = getattr(node, "component", None)
    if component is not None and not isinstance(component, str):
        names += [k for k in (component.outputs or {}) if k not in names]
    if str(node.type) == "automl" and "best_model" not in names:
        names.append("best_model")
    return names


def _literal_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _literal_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_literal(name: str, key: str, kind: str | None, value: Any) -> str:
    """A literal input's text, after checking it fits the component input's type."""
    ok = True
    if kind == "integer":
        ok = not isinstance(value, bool) and re.fullmatch(r"[-+]?\d+", str(value).strip()) is not None
    elif kind == "number":
        try:
            ok = not isinstance(value, bool) and float(value) == float(value)
        except (TypeError, ValueError):
            ok = False
    elif kind == "boolean":
        ok = isinstance(value, bool) or str(value).lower() in ("true", "false")
    if not ok:
        raise V2Error(name, f"input {key}", f"expects {kind}, got {value!r}")
    return _literal_text(value)


def _model_ref(path: str) -> str:
    """``azureml:name:version`` / ``azureml:name@latest`` -> ``name[:version]`` for the local registry."""
    ref = path.removeprefix("azureml:")
    return ref.removesuffix("@latest")
