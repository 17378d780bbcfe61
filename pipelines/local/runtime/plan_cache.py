"""Plans already read from the SDK objects, kept so a later identical ``run`` need not import the SDK.

Building a pipeline means importing the Azure ML SDK (seconds of one core) and reading its step
objects into a plan; for the same definition code, settings and data reference the result is the
same every time. A plan read once is stored under ``AMLOPS_HOME/plan-cache/``, keyed by everything it
can depend on: the source of the project's ``pipelines`` package, of the modules beside the builder's
own and of ``environments/``, the installed SDK's version, the settings, the data reference, the working
directory and the ``AMLOPS_*`` environment variables. A definition that fails to build is never
stored, so bad settings fail as before. ``AMLOPS_PLAN_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.settings import PROJECT_ROOT, amlops_home

FORMAT = 1


@dataclass(frozen=True)
class CachedPlan:
    """What a ``run`` needs of a built definition: its plan and the names it runs under."""

    plan: Any
    name: str
    description: str
    experiment_name: str


def enabled() -> bool:
    return os.environ.get("AMLOPS_PLAN_CACHE", "1") != "0"


def cached_plan(
    build: Callable[..., Any], settings: Any, data_ref: str, read: Callable[[Any], Any]
) -> CachedPlan:
    """The plan of ``build(settings, data_ref)`` read with ``read``: from the cache, or built and stored."""
    path = _entry(build, settings, data_ref) if enabled() else None
    if path is not None and path.is_file():
        try:
            with open(path, "rb") as fh:
                found = pickle.load(fh)
            if isinstance(found, CachedPlan):
                return found
        except Exception:  # a damaged or outdated entry: build again, and replace it
            pass
    definition = build(settings, data_ref)
    result = CachedPlan(
        plan=read(definition.steps),
        name=definition.name,
        description=definition.description,
        experiment_name=definition.experiment_name,
    )
    if path is not None:
        _store(path, result)
    return result


def _entry(build: Callable[..., Any], settings: Any, data_ref: str) -> Path | None:
    name = getattr(build, "__module__", None)
    qualname = getattr(build, "__qualname__", None)
    module_file = getattr(sys.modules.get(name or ""), "__file__", None)
    if module_file is None or qualname is None:  # e.g. a functools.partial: not cached
        return None
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT, name, qualname, _sdk_version(), sys.version]).encode())
    digest.update(json.dumps(settings.as_dict(), sort_keys=True, default=str).encode())
    digest.update(
        json.dumps(
            [data_ref, os.getcwd(), sorted((k, v) for k, v in os.environ.items() if k.startswith("AMLOPS_"))]
        ).encode()
    )
    sources = sorted((PROJECT_ROOT / "pipelines").rglob("*.py")) + sorted(
        (PROJECT_ROOT / "environments").glob("*")
    )
    beside = sorted(Path(module_file).parent.glob("*.py"))  # the builder's module and its neighbours
    for file in [*sources, *beside]:
        if file.is_file():
            digest.update(str(file).encode())
            digest.update(file.read_bytes())
    return amlops_home() / "plan-cache" / f"{digest.hexdigest()}.pickle"


def _sdk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("azureml-pipeline-core")
    except PackageNotFoundError:
        return ""


def _store(path: Path, entry: CachedPlan) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(entry, fh)
        os.replace(tmp, path)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass  # the cache only saves time; a plan that cannot be kept is built again next time
