"""A registered stand-in for the training pipeline's model, for deployment tests and serving benchmarks.

It is built the way the register step builds the real one (``steps/raw_model.py``: raw columns in,
its own featurization, a LightGBM regressor, logged as an MLflow pyfunc with a signature and an input
example of raw rows), only faster: no AutoML search, a fixed number of trees.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LEAKING_COLUMNS = ("casual", "registered")


def raw_rows(csv: Path, label: str = "cnt", n: int | None = None) -> pd.DataFrame:
    """Rows of the dataset as a client sends them: raw columns without the label or the leaking ones."""
    frame = pd.read_csv(csv)
    frame = frame.drop(columns=[c for c in (label, *LEAKING_COLUMNS) if c in frame.columns])
    return frame if n is None else frame.head(n)


class LeanColumnsModel:
    """Raw columns in, like the project's model, but featurized with numpy only (dates by a format fixed at fit).

    The serving benchmark's second model: a ``predict`` of a few milliseconds (a pandas date parse per
    call and scikit-learn's LightGBM wrapper), beside the project's own cheaper one.
    """

    def __init__(self, frame: pd.DataFrame, estimator: Any = None) -> None:
        self.numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        self.dates = {
            c: pd.tseries.api.guess_datetime_format(str(frame[c].iloc[0]))
            for c in frame.columns
            if c not in self.numeric
        }
        self.estimator = estimator

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        parts = [frame[c].to_numpy(dtype=np.float64) for c in self.numeric]
        for column, fmt in self.dates.items():
            days = (
                pd.to_datetime(frame[column], format=fmt, errors="coerce").to_numpy().astype("datetime64[D]")
            )
            months = days.astype("datetime64[M]")
            years = days.astype("datetime64[Y]")
            parts += [
                years.astype(np.int64) + 1970.0,
                months.astype(np.int64) % 12 + 1.0,
                (days - months).astype(np.int64) + 1.0,
                (days.astype(np.int64) + 3) % 7 + 0.0,
                (days - years).astype(np.int64) + 1.0,
            ]
        return np.column_stack(parts).astype(np.float64)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.estimator.predict(self.features(frame))


def register_demo_model(
    csv: Path, name: str = "bike-demand", n_trees: int = 20, label: str = "cnt", kind: str = "raw"
) -> int:
    """Train a small LightGBM on ``csv`` and register it in the local registry as ``name``; the version.

    ``kind="raw"``: the project's raw-columns model (steps/raw_model.py); ``"lean"``: LeanColumnsModel.
    """
    import cloudpickle
    import lightgbm
    import mlflow
    from mlflow.models import infer_signature

    from pipelines.local.workspace import registry

    steps_dir = str(PROJECT_ROOT / "steps")
    if steps_dir not in sys.path:  # the register step runs with steps/ as its source directory
        sys.path.insert(0, steps_dir)
    import raw_model

    frame = pd.read_csv(csv)
    features = raw_rows(csv, label)
    estimator = lightgbm.LGBMRegressor(n_estimators=n_trees, num_leaves=31, n_jobs=1, verbose=-1)
    if kind == "lean":
        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # loadable without this module
        model: Any = LeanColumnsModel(features)
        estimator.fit(model.features(features), frame[label].to_numpy())
        model.estimator = estimator
    else:
        featurizer = raw_model.RawFeaturizer().fit(features)
        estimator.fit(featurizer.transform(features), frame[label].to_numpy())
        model = raw_model.RawColumnsModel(
            featurizer=featurizer, estimator=estimator, task="regression", label=label
        )

    registry.configure_mlflow()
    sample = features.head(5)
    with tempfile.TemporaryDirectory() as tmp:
        pickle_path = Path(tmp) / "model.pkl"
        pickle_path.write_bytes(cloudpickle.dumps(model))
        if kind == "lean":
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        mlflow.set_experiment(experiment_id=registry.ensure_experiment("deploy-tests"))
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=raw_model.RawModelPyfunc(),
                artifacts={"model": str(pickle_path)},
                code_paths=raw_model.code_paths(),
                signature=infer_signature(sample, np.asarray(model.predict(sample))),
                input_example=sample.head(2),
                metadata=model.input_metadata() if hasattr(model, "input_metadata") else None,
                registered_model_name=name,
                pip_requirements=[],  # skip MLflow's requirement inference (a subprocess that loads the model)
            )
    return int(info.registered_model_version)


@contextlib.contextmanager
def using_env(env: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration, restoring (or removing) each one afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def using_home(home: Path) -> Iterator[Path]:
    """Point ``AMLOPS_HOME`` at ``home`` for the duration (restoring the previous value)."""
    with using_env({"AMLOPS_HOME": str(home)}):
        yield home


def shared_model_home(base: Path, csv: Path, name: str = "bike-demand", n_trees: int = 10) -> Path:
    """A local workspace under ``base`` with ``name`` registered and materialized once, reused by later callers."""
    home = Path(base) / f"model-home-{name}-{n_trees}"
    marker = home / ".registered"
    if not marker.is_file():
        home.mkdir(parents=True, exist_ok=True)
        with using_home(home):
            from pipelines.local.workspace.registry import model_env

            version = register_demo_model(csv, name=name, n_trees=n_trees)
            model_env(name, version)
        marker.write_text(str(version))
    return home
