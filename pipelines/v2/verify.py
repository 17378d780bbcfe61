"""Check emitted v2 YAML with azure-ai-ml itself: load, validate, check bindings, round-trip to the same REST body.

azure-ai-ml 1.35.2 bugs met here, each with its workaround (tests/v2/test_verify.py pins them):

- an AutoML node's ``mlflow_model`` output is dumped as ``job_output_type:`` and does not load back: the
  translation writes ``type:``, and ``repair_dump`` rewrites a dump the same way;
- a path dumped after another load in the same process can come out as ``azureml:./src`` (or
  ``azureml:https://...``), which loads as a workspace asset name: ``repair_dump`` drops that prefix;
- ``_validate()`` does not catch an unbound required input or an unknown ``${{inputs.x}}``:
  ``binding_problems`` checks those.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

BINDING = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# ``azureml:`` before a path, not the ``azureml://`` of a registry or datastore URI
BOGUS_ASSET = re.compile(r"(?m)(:\s*)azureml:(\.{1,2}/|/(?!/)|https?://|wasbs?://|abfss?://)")


class VerifyError(ValueError):
    """An emitted file that azure-ai-ml does not accept as it is."""


def kind_of(document: dict[str, Any]) -> str:
    """The azure-ai-ml loader a document needs, from its ``$schema``."""
    schema = str(document.get("$schema", ""))
    name = schema.rsplit("/", 1)[-1].removesuffix(".schema.json")
    if name.endswith("Component"):
        return "component"
    return {
        "pipelineJob": "job",
        "environment": "environment",
        "schedule": "schedule",
        "batchEndpoint": "batch_endpoint",
        "pipelineComponentBatchDeployment": "batch_deployment",
        "managedOnlineEndpoint": "online_endpoint",
        "kubernetesOnlineEndpoint": "online_endpoint",
        "managedOnlineDeployment": "online_deployment",
        "kubernetesOnlineDeployment": "online_deployment",
    }[name]


def quiet_sdk() -> None:
    """Keep azure-ai-ml's "experimental class" notices (one per schema it builds) off the user's terminal."""
    import logging

    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)


def load(path: Path, kind: str) -> Any:
    """The azure-ai-ml entity of one file, loaded by its own loader."""
    quiet_sdk()
    import azure.ai.ml as ml

    # not exported by azure.ai.ml in 1.35.2; load_batch_deployment reads a pipeline deployment as a model one
    from azure.ai.ml.entities._load_functions import load_pipeline_component_batch_deployment, load_schedule

    loader = {
        "component": ml.load_component,
        "job": ml.load_job,
        "environment": ml.load_environment,
        "schedule": load_schedule,
        "batch_endpoint": ml.load_batch_endpoint,
        "batch_deployment": load_pipeline_component_batch_deployment,
        "online_endpoint": ml.load_online_endpoint,
        "online_deployment": ml.load_online_deployment,
    }[kind]
    return loader(source=path)


def repair_dump(text: str) -> str:
    """A dump made loadable again (the 1.35.2 dump bugs listed above)."""
    text = re.sub(r"(?m)^(\s*)job_output_type:", r"\1type:", text)
    return BOGUS_ASSET.sub(r"\1\2", text)


def binding_problems(document: dict[str, Any], where: str) -> list[str]:
    """``${{inputs.x}}``/``${{outputs.y}}`` naming nothing, and required inputs a pipeline node leaves unbound."""
    problems = []
    declared = {"inputs": set(document.get("inputs") or {}), "outputs": set(document.get("outputs") or {})}
    texts = [document.get("command", "")]
    task = document.get("task") or {}
    texts += [
        task.get("program_arguments", ""),
        task.get("append_row_to", ""),
        document.get("input_data", ""),
    ]
    for text in texts:
        for side, name in BINDING.findall(str(text or "")):
            if name not in declared[side]:
                problems.append(f"{where}: ${{{{{side}.{name}}}}} names no declared {side[:-1]}")
    return problems


def node_problems(document: dict[str, Any], folder: Path, where: str) -> list[str]:
    """Pipeline nodes that leave a required component input unbound, or bind one the component lacks."""
    problems = []
    for node_name, node in (document.get("jobs") or {}).items():
        ref = node.get("component")
        if not isinstance(ref, str) or not ref.startswith("./"):
            continue
        component = yaml.safe_load((folder / ref).read_text())
        problems += binding_problems(component, f"{where}: {ref}")
        inputs = component.get("inputs") or {}
        bound = set(node.get("inputs") or {})
        for name, spec in inputs.items():
            if name not in bound and not spec.get("optional") and "default" not in spec:
                problems.append(
                    f"{where}: node {node_name} leaves the required input {name} of {ref} unbound"
                )
        for name in bound - set(inputs):
            problems.append(f"{where}: node {node_name} binds {name}, which {ref} does not declare")
    return problems


def rest_body(entity: Any, base: Path) -> Any:
    """The entity's REST body as plain data, with inline anonymous components parsed (their key order aside)."""
    rest = entity._to_rest_object()
    body = rest.as_dict() if hasattr(rest, "as_dict") else rest
    return _normal(json.loads(json.dumps(body, default=str)), base)


def _normal(value: Any, base: Path | None = None) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "_source":
                continue
            if key == "componentId" and isinstance(item, str) and item.startswith("$schema"):
                item = yaml.safe_load(item)
            if key == "code" and isinstance(item, str) and base is not None:
                item = str((base / item).resolve())  # written relative to its file, dumped absolute
            out[key] = _normal(item, base)
        return out
    if isinstance(value, list):
        return [_normal(v, base) for v in value]
    return value


def component_folder(path: Path) -> Path:
    """Where a file's relative code paths start: its own folder, or for a pipeline that of its components."""
    document = yaml.safe_load(path.read_text()) or {}
    for node in (document.get("jobs") or {}).values():
        ref = node.get("component")
        if isinstance(ref, str) and ref.startswith("./"):
            return (path.parent / ref).parent
    return path.parent


def round_trip(entity: Any, path: Path, kind: str) -> None:
    """Dump ``entity`` next to ``path`` (so relative paths hold), load it back, and compare REST bodies."""
    if kind in (
        "environment",
        "online_endpoint",
        "schedule",
        "batch_endpoint",
        "batch_deployment",
        "online_deployment",
    ):
        return _round_trip_dict(entity, path, kind)
    copy = path.with_name(f".roundtrip-{path.name}")
    try:
        _absolute_parallel_code(entity, component_folder(path))
        entity.dump(copy)
        copy.write_text(repair_dump(copy.read_text()))
        again = load(copy, kind)
        # components referenced by a pipeline sit in components/, so their relative code paths start there
        base = component_folder(path)
        before, after = rest_body(entity, base), rest_body(again, base)
        if before != after:
            where, old, new = first_difference(before, after)
            raise VerifyError(
                f"{path.name}: dumping and loading it again changes its REST body at {where}: {old!r} -> {new!r}"
            )
    finally:
        copy.unlink(missing_ok=True)


def _absolute_parallel_code(entity: Any, base: Path) -> None:
    """azure-ai-ml 1.35.2 dumps a pipeline's inlined parallel component with its ``task.code`` as written,
    relative to the component's file, and loads it back relative to the pipeline's: make it absolute first
    (in the entity being checked only; the files keep their relative paths)."""
    for node in (getattr(entity, "jobs", None) or {}).values():
        component = getattr(node, "component", None)
        task = getattr(component, "task", None)
        code = getattr(task, "code", None)
        if isinstance(code, str) and "://" not in code and not code.startswith(("azureml:", "git+")):
            absolute = str((base / code).resolve())
            task.code = absolute
            if getattr(component, "code", None) == code:
                component.code = absolute


def _round_trip_dict(entity: Any, path: Path, kind: str) -> None:
    """Entities whose ``dump(dest)`` is unreliable in 1.35.2 (an online endpoint ignores ``dest``): dump their
    dict ourselves, load it, and compare the dicts (their REST bodies need a workspace's ids)."""
    copy = path.with_name(f".roundtrip-{path.name}")
    try:
        plain = json.loads(json.dumps(entity._to_dict(), default=str))
        # a dump inlines the component / pipeline job, which 1.35.2 does not load back: keep the file reference
        # (the referenced file is verified on its own)
        reference = {"batch_deployment": "component", "schedule": "create_job"}.get(kind)
        if reference:
            plain[reference] = yaml.safe_load(path.read_text())[reference]
        copy.write_text(repair_dump(yaml.safe_dump(plain, sort_keys=False)))
        again = load(copy, kind)
        if _normal(again._to_dict()) != _normal(entity._to_dict()):
            raise VerifyError(f"{path.name}: dumping and loading it again changes it")
    finally:
        copy.unlink(missing_ok=True)


def verify_folder(folder: Path, files: list[str]) -> dict[str, str]:
    """Load, validate, binding-check and round-trip every file; the kind of each. Raises VerifyError."""
    kinds = {}
    problems: list[str] = []
    for rel in files:
        path = folder / rel
        document = yaml.safe_load(path.read_text())
        kind = kind_of(document)
        try:
            entity = load(path, kind)
        except Exception as exc:  # azure-ai-ml raises marshmallow and its own errors
            raise VerifyError(f"{rel}: azure-ai-ml does not load it: {_first_line(exc)}") from None
        validate = getattr(entity, "_validate", None)
        if validate is not None:
            result = validate()
            if result is not None and not result.passed:
                raise VerifyError(
                    f"{rel}: azure-ai-ml's validation fails: {_first_line(result.error_messages)}"
                )
        if kind == "component":
            problems += binding_problems(document, rel)
        if kind == "job" or (kind == "component" and document.get("type") == "pipeline"):
            problems += node_problems(document, path.parent, rel)
        if problems:
            raise VerifyError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        try:
            round_trip(entity, path, kind)
        except VerifyError:
            raise
        except Exception as exc:  # the dump does not load again
            raise VerifyError(
                f"{rel}: dumped by azure-ai-ml, it does not load again: {_first_line(exc)}"
            ) from None
        kinds[rel] = kind
    return kinds


def first_difference(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any]:
    """The first path at which two plain-data values differ, and the two values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{where}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
    return where or ".", a, b


def _first_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text[:400]
