"""The reuse cache of the local engine (``allow_reuse``): a step's key, and its outputs kept under it.

A step's key hashes what Azure's would: its kind and name, its source directory's snapshot (less what
``.amlignore``/``.gitignore`` exclude), its arguments with parameters by value, what it runs and how, and
the content of its data inputs. A later step with the same key gets the stored outputs and metrics instead
of running again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.core.plan import (
    AutoMLStepPlan,
    CommandStepPlan,
    DataRef,
    ParallelRunStepPlan,
    ParamRef,
    ScriptStepPlan,
    StepPlan,
)
from pipelines.local.runtime import runs
from pipelines.settings import amlops_home


def reuse_key(step: StepPlan, params: dict[str, Any], path_of: Callable[[str], Path]) -> str:
    """The key of ``step`` with these parameter values; ``path_of`` gives the path of each data input."""
    digest = hashlib.sha256()
    digest.update(json.dumps([step.kind, step.name], default=str).encode())
    source = getattr(step, "source_directory", None)
    if source is not None:
        for path in snapshot_files(Path(source)):
            digest.update(str(path.relative_to(source)).encode())
            digest.update(path.read_bytes())
    digest.update(json.dumps(_key_arguments(step, params), default=str).encode())
    for name in step.inputs:
        digest.update(name.encode())
        digest.update(content_hash(path_of(name)).encode())
    return digest.hexdigest()


def _key_arguments(step: StepPlan, params: dict[str, Any]) -> list[str]:
    return _key_values(getattr(step, "arguments", []), params) + [
        json.dumps(getattr(step, "settings", {}).__dict__ if hasattr(step, "settings") else {}, default=str),
        json.dumps(_config_for_key(step, params), default=str, sort_keys=True),
    ]


def _key_values(args: list[Any], params: dict[str, Any]) -> list[str]:
    """Arguments as the reuse key sees them: data by name (its content is hashed apart), parameters by value."""
    return [
        f"data:{a.name}" if isinstance(a, DataRef) else str(params[a.name]) if isinstance(a, ParamRef) else a
        for a in args
    ]


def _config_for_key(step: StepPlan, params: dict[str, Any]) -> dict[str, Any]:
    """What a step runs and how, besides its arguments: changing it means a new run, not a reused one."""
    if isinstance(step, ScriptStepPlan):
        names = sorted(step.variables)
        values = _key_values([step.variables[n] for n in names], params)
        return {"script_name": step.script_name, "variables": dict(zip(names, values, strict=True))}
    if isinstance(step, AutoMLStepPlan) and step.model_format != "pickle":
        return {"model_format": step.model_format, "validation_data": step.validation_data}
    if isinstance(step, CommandStepPlan):
        names = sorted(step.variables)
        values = _key_values([step.variables[n] for n in names], params)
        command = _key_values(step.command, params)
        return {"command": command, "variables": dict(zip(names, values, strict=True))}
    if isinstance(step, ParallelRunStepPlan):
        options = {k: params[v.name] if isinstance(v, ParamRef) else v for k, v in step.options.items()}
        return {"entry_script": step.entry_script, "input_kinds": step.input_kinds, "options": options}
    return {}


def restore(key: str, outputs: dict[str, Path]) -> bool:
    """Copy the outputs stored under ``key`` into ``outputs``; False when nothing complete is stored."""
    cache = amlops_home() / "reuse" / key
    if not (cache / "complete").is_file():
        return False
    for name, folder in outputs.items():
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(cache / name, folder)
    return True


def log_reused_metrics(key: str, client: Any, run_id: str) -> None:
    """The metrics the reused run logged, logged again to this step's run (as its record shows them)."""
    saved = amlops_home() / "reuse" / key / "metrics.json"
    metrics = json.loads(saved.read_text()) if saved.is_file() else {}
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)


def store(key: str, outputs: dict[str, Path], metrics: dict[str, float], run_id: str) -> None:
    """Keep a step's outputs for later identical runs: built in a folder of this run's own, then renamed,
    so two runs storing the same key at once cannot mix their files (the later rename wins)."""
    cache = amlops_home() / "reuse" / key
    tmp = cache.with_name(f"{key}.partial-{run_id}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)  # a step without outputs is reused too: the key alone says it ran
    for name, folder in outputs.items():
        shutil.copytree(folder, tmp / name)
    (tmp / "metrics.json").write_text(json.dumps(metrics))
    (tmp / "complete").write_text(runs.now())
    shutil.rmtree(cache, ignore_errors=True)
    try:
        os.replace(tmp, cache)
    except OSError:  # another run stored the same outputs in the meantime: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def snapshot_files(source: Path) -> list[Path]:
    """The files of a step's source directory that make its snapshot, as Azure hashes it for ``allow_reuse``:
    all but those its ``.amlignore`` (else ``.gitignore``) excludes, read with the SDK's own rules. Compiled
    files and the local workspace (when it lies inside the source directory) are not part of it either."""
    from azureml._project.ignore_file import get_project_ignore_file

    ignore = get_project_ignore_file(str(source))
    home = amlops_home().resolve()
    files = []
    for path in sorted(source.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or home in path.resolve().parents:
            continue
        if not ignore.is_file_excluded(str(path.relative_to(source))):
            files.append(path)
    return files


def content_hash(path: Path) -> str:
    """A hash of a file, or of a folder's files (names and bytes); a missing path hashes as empty."""
    digest = hashlib.sha256()
    files = (
        sorted(p for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else [path]
        if path.exists()
        else []
    )
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
