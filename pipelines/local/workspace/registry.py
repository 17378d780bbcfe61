"""The local model registry and tracking store: MLflow on SQLite under ``AMLOPS_HOME``.

Also lays registered models out the way Azure's inference and batch containers do
(``<root>/azureml-models/<name>/<version>/<one folder>``), so that the SDK's own
``azureml.core.model.Model.get_model_path(name)`` finds them once ``AML_APP_ROOT=<root>`` is set
(the SDK reads that variable when ``azureml.core.model`` is imported), and sets ``AZUREML_MODEL_DIR``
as Azure does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from pipelines.settings import amlops_home, check_model_name
from steps import model_names


def tracking_uri(home: Path | None = None) -> str:
    return f"sqlite:///{(home or amlops_home()) / 'mlflow.db'}"


def artifact_root(home: Path | None = None) -> Path:
    return (home or amlops_home()) / "mlartifacts"


def mlflow_env(home: Path | None = None) -> dict[str, str]:
    """Environment variables that point MLflow (in this process or a child) at the local store."""
    return {
        "MLFLOW_TRACKING_URI": tracking_uri(home),
        "MLFLOW_REGISTRY_URI": tracking_uri(home),
        "AMLOPS_ARTIFACT_ROOT": str(artifact_root(home)),
    }


def configure_mlflow(home: Path | None = None) -> None:
    """Point this process's MLflow at the local store (idempotent)."""
    import logging

    import mlflow

    os.environ.update(mlflow_env(home))
    # MLflow's SQLite migrations log at INFO on first use; keep the terminal for our progress lines.
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.model_registry.abstract_store"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(home))
    mlflow.set_registry_uri(tracking_uri(home))


def ensure_experiment(name: str) -> str:
    """The id of the experiment ``name``, created with its artifacts under AMLOPS_HOME if new."""
    import fcntl

    import mlflow

    configure_mlflow()
    # One process at a time: MLflow's first use migrates the SQLite schema, and two processes creating
    # the same experiment race; both failed runs started together on a fresh workspace.
    with open(amlops_home() / ".mlflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = artifact_root() / name
        location.mkdir(parents=True, exist_ok=True)
        return mlflow.create_experiment(name, artifact_location=location.as_uri())


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: int
    source: str
    tags: dict[str, str]


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``"name"`` or ``"name:3"`` -> (name, version or None); UserError for a name the model rule refuses."""
    name, colon, version = ref.partition(":")
    if not name or (colon and not version):
        raise UserError(f"bad model reference {model_names.shown(ref)}", hint="use NAME or NAME:VERSION")
    if version and not version.isdigit():
        raise UserError(
            f"model version {model_names.shown(version)} is not a whole number",
            hint="use NAME or NAME:VERSION",
        )
    return check_model_name(name), int(version) if version else None


def get_model(name: str, version: int | None = None) -> RegisteredModel:
    """A registered model version (latest when version is None); UserError if there is none."""
    found = _read_versions(name)  # the store read directly: a command need not import MLflow for this
    if found is not None:
        os.environ.update(mlflow_env())
        if not found:
            raise UserError(
                f"no model named {name!r} is registered",
                hint="train one first: python -m pipelines.train run",
            )
        match = found[-1] if version is None else next((m for m in found if m.version == version), None)
        if match is None:
            raise UserError(
                f"model {name}:{version} is not registered",
                hint="list versions with: python -m pipelines.train models",
            )
        return match
    return _get_model_with_mlflow(name, version)


def _get_model_with_mlflow(name: str, version: int | None = None) -> RegisteredModel:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    configure_mlflow()
    client = MlflowClient()
    try:
        if version is None:
            versions = model_names.versions_of(client, name)
            if not versions:
                raise UserError(
                    f"no model named {name!r} is registered",
                    hint="train one first: python -m pipelines.train run",
                )
            mv = max(versions, key=lambda v: int(v.version))
        else:
            mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise UserError(
            f"model {name}:{version} is not registered",
            hint="list versions with: python -m pipelines.train models",
        ) from None
    return RegisteredModel(name=mv.name, version=int(mv.version), source=mv.source, tags=dict(mv.tags))


def model_details(name: str, version: int | None = None) -> dict:
    """One version's metrics, tags, data hash and figures (local paths where the artifacts are local)."""
    from urllib.parse import unquote, urlparse

    from mlflow import MlflowClient

    model = get_model(name, version)
    tags = model.tags
    figures: dict[str, str] = {}
    run_id = tags.get("figures_run_id")
    if run_id and tags.get("figures"):
        root = MlflowClient().get_run(run_id).info.artifact_uri.rstrip("/")
        for path in tags["figures"].split(","):
            uri = urlparse(f"{root}/{path}")
            figures[Path(path).stem] = unquote(uri.path) if uri.scheme in ("", "file") else f"{root}/{path}"
    return {
        "name": model.name,
        "version": model.version,
        "metrics": {k: float(v) for k, v in sorted(tags.items()) if k.startswith("test_")},
        "data_sha256": tags.get("data_sha256"),
        "run_id": tags.get("run_id"),
        "tags": {k: v for k, v in sorted(tags.items()) if not k.startswith("test_")},
        "figures": figures,
        "source": model.source,
    }


def _read_versions(name: str) -> list[RegisteredModel] | None:
    """``name``'s registered versions, oldest first, read from the SQLite store without MLflow (importing
    it costs seconds); None when the store cannot be read this way (MLflow then answers)."""
    import sqlite3

    db = amlops_home() / "mlflow.db"
    if not db.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT version, source, storage_location FROM model_versions WHERE workspace = 'default' "
                "AND name = ? AND current_stage != 'Deleted_Internal' ORDER BY version",
                (name,),
            ).fetchall()
            tags = conn.execute(
                "SELECT version, key, value FROM model_version_tags WHERE workspace = 'default' AND name = ?",
                (name,),
            ).fetchall()
    except sqlite3.Error:
        return None
    by_version: dict[int, dict[str, str]] = {}
    for version, key, value in tags:
        by_version.setdefault(int(version), {})[key] = value
    _STORAGE.update({(name, int(v)): location for v, _, location in rows if location})
    return [
        RegisteredModel(name=name, version=int(v), source=source, tags=by_version.get(int(v), {}))
        for v, source, _ in rows
    ]


_STORAGE: dict[tuple[str, int], str] = {}  # (name, version) -> the artifacts' URI, as read by _read_versions


def list_models() -> list[RegisteredModel]:
    from mlflow import MlflowClient

    configure_mlflow()
    client = MlflowClient()
    out = [
        RegisteredModel(name=mv.name, version=int(mv.version), source=mv.source, tags=dict(mv.tags))
        for mv in client.search_model_versions("")
    ]
    return sorted(out, key=lambda m: (m.name, m.version))


def materialize_model(name: str, version: int | None = None) -> tuple[Path, Path]:
    """Lay a registered model out as Azure's containers do.

    Returns ``(app_root, model_dir)``: set ``AML_APP_ROOT=app_root`` (for ``Model.get_model_path``) and
    ``AZUREML_MODEL_DIR=model_dir`` (``.../azureml-models/<name>/<version>``) before importing the
    scoring script. The model itself is ``model_dir/<name>`` (an MLflow model folder).
    """
    import mlflow

    model = get_model(name, version)
    # one app root per version, so that Model.get_model_path(name) without a version finds this one
    app_root = amlops_home() / "model-cache" / f"{model.name}-{model.version}"
    model_dir = app_root / "azureml-models" / model.name / str(model.version)
    target = model_dir / model.name
    if not (target / "MLmodel").is_file():
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=".download-"))
        try:
            configure_mlflow()
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model.name}/{model.version}", dst_path=str(tmp)
            )
            if target.exists():
                shutil.rmtree(target)
            os.replace(local, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return app_root, model_dir


def model_env(name: str, version: int | None = None) -> dict[str, str]:
    """Environment variables that make ``Model.get_model_path(name)`` resolve to the local registry."""
    app_root, model_dir = materialize_model(name, version)
    return {"AML_APP_ROOT": str(app_root), "AZUREML_MODEL_DIR": str(model_dir)}


def workspace_models_root() -> Path:
    """An app root where every registered version is laid out as Azure's containers lay out models.

    ``<root>/azureml-models/<name>/<version>/<name>`` links to each version's artifacts, so that with
    ``AML_APP_ROOT=<root>`` an unchanged entry script's ``Model.get_model_path(name[, version])`` finds
    any registered model, latest version by default, as it would inside an Azure ML job. A name that the
    model name rule refuses (registered by other means: too long for a file name, or with characters
    that are not safe in a path) is left out with a warning, so it cannot break every batch run.
    """
    from urllib.parse import unquote, urlparse

    from mlflow import MlflowClient

    configure_mlflow()
    client = MlflowClient()
    root = amlops_home() / "model-cache" / "workspace"
    for mv in client.search_model_versions(""):
        trouble = model_names.problem(mv.name)
        if trouble is not None:
            print(f"warning: version {mv.version} of a registered model is left out of batch runs: {trouble}",
                  file=sys.stderr)  # fmt: skip
            continue
        link = root / "azureml-models" / mv.name / str(mv.version) / mv.name
        if link.is_dir():
            continue
        uri = client.get_model_version_download_uri(mv.name, mv.version)
        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file"):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=link.parent, prefix=".copy-")) / mv.name
        # hard links: free on one file system, and MLflow accepts them (it refuses symlinks out of a model)
        shutil.copytree(unquote(parsed.path), tmp, copy_function=_link_or_copy)
        os.replace(tmp, link)
        shutil.rmtree(tmp.parent, ignore_errors=True)
    (root / "azureml-models").mkdir(parents=True, exist_ok=True)
    return root


def every_model_env(name: str, version: int | None = None) -> dict[str, str]:
    """``Model.get_model_path`` finds every registered model, and ``name`` (without a version) at ``version``.

    As inside an Azure ML job where all registered models are reachable. With the latest version chosen
    this is ``workspace_models_root()``; with an older one, a root of its own where ``name`` holds only
    that version and every other model name links to the workspace root's.
    """
    model = get_model(name, version)
    root = workspace_models_root()
    model_dir = root / "azureml-models" / model.name / str(model.version)
    if model.version != get_model(model.name).version:
        own = amlops_home() / "model-cache" / f"all-with-{model.name}-{model.version}"
        (own / "azureml-models" / model.name).mkdir(parents=True, exist_ok=True)
        for entry in (root / "azureml-models").iterdir():
            link = own / "azureml-models" / entry.name
            if entry.name != model.name and not link.exists():
                link.symlink_to(entry, target_is_directory=True)
        chosen = own / "azureml-models" / model.name / str(model.version)
        if not chosen.exists():
            chosen.symlink_to(model_dir, target_is_directory=True)
        root, model_dir = own, chosen
    return {"AML_APP_ROOT": str(root), "AZUREML_MODEL_DIR": str(model_dir)}


def model_input_columns(name: str, version: int | None = None) -> list[str]:
    """The input column names in a registered model's MLflow signature (empty if it has none)."""
    model = get_model(name, version)
    columns = _signature_columns(_STORAGE.get((model.name, model.version), ""))
    if columns is not None:
        return columns
    from mlflow.models import get_model_info

    configure_mlflow()
    info = get_model_info(f"models:/{model.name}/{model.version}")
    schema = info.signature.inputs if info.signature is not None else None
    return [c for c in (schema.input_names() if schema is not None else []) if isinstance(c, str)]


def mlmodel_file(name: str, version: int | None = None) -> dict[str, Any] | None:
    """The ``MLmodel`` file of a registered model, read from where its artifacts are stored, without MLflow;
    None when they are not in a local folder or the file is not there or not as expected."""
    model = get_model(name, version)
    return _read_mlmodel(_STORAGE.get((model.name, model.version), ""))


def _read_mlmodel(storage: str) -> dict[str, Any] | None:
    from urllib.parse import unquote, urlparse

    import yaml

    parsed = urlparse(storage)
    if parsed.scheme != "file":
        return None
    try:
        meta = yaml.safe_load((Path(unquote(parsed.path)) / "MLmodel").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return meta if isinstance(meta, dict) else None


def _signature_columns(storage: str) -> list[str] | None:
    """The named inputs of the signature in the ``MLmodel`` file of a model stored at ``storage`` (a file
    URI), read without MLflow; None when that file is not there or not as expected."""
    import json

    meta = _read_mlmodel(storage)
    if meta is None:
        return None
    try:
        signature = meta.get("signature")
        if signature is None:
            return []
        inputs = json.loads(signature["inputs"])
        return [c["name"] for c in inputs if isinstance(c.get("name"), str)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
