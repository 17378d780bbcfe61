"""ParallelRunStep entry script for batch scoring: ``init()`` loads the model, ``run(mini_batch)`` scores it.

Runs unchanged on Azure ML and on the local engine (``pipelines.local.parallel_run``). Arguments
(``ParallelRunStep(arguments=[...])``, parsed with ``parse_known_args`` because Azure adds its own):

- ``--model_name NAME`` the registered model (found with ``Model.get_model_path``); default: the model
  folder named by ``AZUREML_MODEL_DIR``;
- ``--model_version N`` optional (0 or none: the latest version);
- ``--model_registry azureml|mlflow`` where the name is looked up: ``azureml`` (default) with
  ``Model.get_model_path`` (SDK v1), ``mlflow`` in the MLflow model registry the tracking URI names (an SDK v2
  job's is the workspace's), the latest version when the worker starts unless ``--model_version`` pins one;
- ``--model PATH`` instead of a name: the MLflow model folder itself (an SDK v2 parallel job's model input);
- ``--key_columns a,b`` input columns copied to each result row (default: ``instant,date`` when present);
- ``--prediction_column NAME`` (default ``prediction``).

``run`` returns one row per scored input row: the key column(s), then the prediction. It decides:

- an empty mini-batch gives an empty result (with the result columns);
- missing or repeated feature columns raise ``ValueError`` naming them (the whole mini-batch fails, and
  is retried and counted by ParallelRunStep);
- a row that breaks the model's input rule (``input_rules.py``, the one the online ``score.py`` applies:
  an empty value, text in a number column, a date that is not one as the model learned them, such as
  ``2/30/2012``) is not scored and not returned, so ParallelRunStep counts it as a failed item
  (``error_threshold``) instead of the model guessing; each is logged with its column and why;
- anything else the model raises propagates: exceptions are never swallowed, so ParallelRunStep's error
  counting sees them.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # Azure puts the source directory on sys.path; a test importing the file may not
    sys.path.append(_HERE)
from input_rules import BadRow, Column, InputError, check_frame, date_checker, signature_columns  # noqa: E402

DEFAULT_KEYS = ("instant", "date")


@dataclass(frozen=True)
class ScoringConfig:
    """What ``run`` needs besides the model: feature, key and prediction column names."""

    features: tuple[str, ...] | None  # None: every column that is not a key
    keys: tuple[str, ...] | None  # None: DEFAULT_KEYS that are present
    prediction_column: str = "prediction"
    columns: tuple[Column, ...] | None = None  # the signature's typed columns: the input rule's


_MODEL: Any = None
_CONFIG: ScoringConfig | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """This script's own arguments; unknown ones (Azure's) are ignored."""
    parser = argparse.ArgumentParser(description="ParallelRunStep batch scoring entry script")
    parser.add_argument("--model_name", default=None, help="registered model name")
    parser.add_argument("--model_version", type=int, default=None, help="model version (default: latest)")
    parser.add_argument(
        "--model_registry", choices=("azureml", "mlflow"), default="azureml",
        help="look --model_name up with Model.get_model_path (azureml) or in the MLflow model registry (mlflow)",
    )  # fmt: skip
    parser.add_argument(
        "--model", default=None, help="the MLflow model folder (a v2 model input), not a name"
    )
    parser.add_argument("--key_columns", default=None, help="comma-separated input columns to keep")
    parser.add_argument("--prediction_column", default="prediction", help="name of the prediction column")
    args, _ = parser.parse_known_args(argv)
    return args


def init() -> None:
    """Load the registered model once per worker process."""
    global _MODEL, _CONFIG
    import mlflow.pyfunc

    args = parse_args()
    name, path = model_location(args)
    _MODEL = mlflow.pyfunc.load_model(path)
    keys = tuple(k.strip() for k in args.key_columns.split(",") if k.strip()) if args.key_columns else None
    _CONFIG = ScoringConfig(
        features=model_features(_MODEL),
        keys=keys,
        prediction_column=args.prediction_column,
        columns=signature_columns(_MODEL),
    )
    _logger().info("loaded model %s from %s; features: %s", name, path, _CONFIG.features)


def model_location(args: argparse.Namespace) -> tuple[str, str]:
    """The model's name and where to load it from: the ``--model`` folder as given, else the name looked up
    in the MLflow registry (``models:/NAME/VERSION``) or with ``Model.get_model_path``."""
    if args.model:
        path = Path(args.model)
        if not (path / "MLmodel").is_file():
            raise ValueError(f"--model {path} is not an MLflow model folder (no MLmodel file in it)")
        return path.name, str(path)
    if args.model_registry == "mlflow":
        if not args.model_name:
            raise ValueError("--model_registry mlflow needs --model_name NAME")
        version = args.model_version or latest_mlflow_version(args.model_name)
        return args.model_name, f"models:/{args.model_name}/{version}"
    from azureml.core.model import Model

    name = args.model_name or _model_name_from_env()
    if args.model_version:
        return name, Model.get_model_path(name, version=args.model_version)
    return name, Model.get_model_path(name)


def latest_mlflow_version(name: str) -> int:
    """The highest version of ``name`` in the MLflow model registry, asked now (not when the job was made)."""
    import mlflow

    if "'" in name:
        raise ValueError(f"model name {name!r} cannot hold a quote")
    versions = [int(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name='{name}'")]
    if not versions:
        raise ValueError(
            f"model {name} has no version in the MLflow model registry at {mlflow.get_registry_uri()}"
        )
    return max(versions)


def run(mini_batch: pd.DataFrame) -> pd.DataFrame:
    """Score one mini-batch: key column(s) + prediction, one row per scored input row."""
    if _MODEL is None or _CONFIG is None:
        raise RuntimeError("init() has not loaded a model")
    refused: list[BadRow] = []
    result = score(_MODEL, mini_batch, _CONFIG, refused)
    if refused:
        log = _logger()
        log.warning(
            "%d of %d rows not scored: they break the model's input rule", len(refused), len(mini_batch)
        )
        for bad in refused[:100]:
            log.warning("row %d of the mini-batch, column %s: %s", bad.row, bad.column, bad.problem)
    return result


def score(
    model: Any, frame: pd.DataFrame, config: ScoringConfig, refused: list[BadRow] | None = None
) -> pd.DataFrame:
    """Predict ``frame`` with ``model`` (anything with ``predict(DataFrame)``); pure, no I/O.

    Rows that break the input rule are left out (and appended to ``refused``, if given).
    """
    keys = list(config.keys) if config.keys is not None else [c for c in DEFAULT_KEYS if c in frame.columns]
    missing_keys = [k for k in keys if k not in frame.columns]
    if missing_keys:
        raise ValueError(f"mini-batch has no key column(s) {', '.join(missing_keys)}; check --key_columns")
    features = (
        list(config.features) if config.features is not None else [c for c in frame.columns if c not in keys]
    )
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ValueError(
            f"mini-batch is missing feature column(s) {', '.join(missing)} the model needs "
            f"(it has: {', '.join(map(str, frame.columns))})"
        )
    columns = [*keys, config.prediction_column]
    ok, inputs, bad = _follow_rule(model, frame, features, config)
    if refused is not None:
        refused.extend(bad)
    usable = frame if bool(ok.all()) else frame[ok]
    if usable.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype=frame[c].dtype) for c in keys} | {config.prediction_column: []}
        )
    predictions = _one_column(model.predict(inputs), len(usable))
    out = usable[keys].reset_index(drop=True)
    out[config.prediction_column] = predictions
    return out[columns]


def _follow_rule(
    model: Any, frame: pd.DataFrame, features: list[str], config: ScoringConfig
) -> tuple[np.ndarray, pd.DataFrame, list[BadRow]]:
    """``check_frame`` with the model's signature and dates; without a signature, only empty values are refused."""
    if config.columns is None:
        complete = frame[features].notna().all(axis=1).to_numpy() if len(frame) else np.ones(0, dtype=bool)
        bad = [BadRow(int(i), "", "an empty value") for i in np.flatnonzero(~complete)]
        return complete, frame.loc[complete, features], bad
    wanted = set(features)
    columns = tuple(c for c in config.columns if c.name in wanted)
    try:
        return check_frame(frame, columns, date_checker(model))
    except InputError as exc:  # a repeated column: every row is affected
        raise ValueError(f"mini-batch has {exc}") from None


def model_features(model: Any) -> tuple[str, ...] | None:
    """The input column names of an MLflow pyfunc model's signature, if it has named inputs."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return None
    return tuple(schema.input_names())


def _one_column(predictions: Any, n_rows: int) -> np.ndarray:
    if isinstance(predictions, pd.DataFrame):
        if predictions.shape[1] != 1:
            raise ValueError(
                f"model returned {predictions.shape[1]} columns; expected one prediction per row"
            )
        predictions = predictions.iloc[:, 0]
    values = np.asarray(predictions)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or len(values) != n_rows:
        raise ValueError(f"model returned {values.shape} predictions for {n_rows} rows")
    return values


def _model_name_from_env() -> str:
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if not model_dir:
        raise ValueError("no model: pass --model_name NAME (ParallelRunStep arguments)")
    return Path(model_dir).parent.name


def _logger() -> Any:
    try:
        from azureml_user.parallel_run import EntryScript

        return EntryScript().logger
    except ImportError:  # outside a ParallelRunStep worker (e.g. unit tests)
        import logging

        return logging.getLogger("scoring")
