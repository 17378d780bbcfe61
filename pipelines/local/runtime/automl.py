"""The local AutoMLStep: an AutoMLConfig's settings, mapped onto FLAML.

Run by the engine as ``python -m pipelines.local.runtime.automl --settings JSON --training-data DIR
--model-out DIR --metrics-out DIR``. Writes the two AutoML TrainingOutputs: ``Model``
(``model.pkl``, a raw-columns model, see steps/raw_model.py) and ``Metrics`` (``metrics.json``).

Mapping: task (regression, classification, forecasting -> FLAML ts_forecast), primary_metric ->
the FLAML metric with the same optimum, experiment_timeout_minutes -> time_budget, iterations ->
max_iter, n_cross_validations -> n_splits (CV), allowed/blocked models -> estimator_list,
enable_early_stopping -> early_stop, enable_voting_ensemble/enable_stack_ensemble -> ensemble
(FLAML's stacked ensemble of the best models), forecasting time column / horizon -> time_col / period.
A regression with a date column may learn its label relative to a line over time (trend.py); it is
then cross-validated on folds of whole weeks, and its ensemble is a VotingEnsemble chosen on
time-ordered validation (voting.py) instead of FLAML's stacked ensemble.

As on Azure, where ``experiment_timeout_minutes`` bounds the whole AutoML experiment, the budget
covers the whole step: FLAML's search gets what is left after start-up and featurization, less a
reserve for the final ensemble fit and saving the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipelines.settings import PROJECT_ROOT

STEPS_DIR = PROJECT_ROOT / "steps"
if str(STEPS_DIR) not in sys.path:  # the model class is pickled as the step scripts see it: ``raw_model``
    sys.path.insert(0, str(STEPS_DIR))

import metrics as metric_defs  # noqa: E402

from pipelines.local.runtime import automl_progress, trend, voting  # noqa: E402

MIN_WEEKS = 10  # fewer weeks of data: cross-validation folds are not made of whole weeks
SAVE_RESERVE = 2.0  # seconds of the budget kept for saving the model


class _Trended(NamedTuple):
    """A regression's line over time (``raw_model.RatioTrend``), each training row's day as the line counts
    it, and the rows the line was judged on in time order (features, label, days) for the VotingEnsemble."""

    line: Any
    days: np.ndarray
    timeline: tuple[pd.DataFrame, np.ndarray, np.ndarray]


# AutoML model names -> FLAML estimator names, by task
MODEL_NAMES: dict[str, dict[str, list[str]]] = {
    "regression": {
        "LightGBM": ["lgbm"],
        "XGBoostRegressor": ["xgboost", "xgb_limitdepth"],
        "RandomForest": ["rf"],
        "ExtremeRandomTrees": ["extra_tree"],
        "KNN": ["kneighbor"],
    },
    "classification": {
        "LightGBM": ["lgbm"],
        "XGBoostClassifier": ["xgboost", "xgb_limitdepth"],
        "RandomForest": ["rf"],
        "ExtremeRandomTrees": ["extra_tree"],
        "LogisticRegression": ["lrl2", "lrl1"],
        "KNN": ["kneighbor"],
    },
    "forecasting": {
        "LightGBM": ["lgbm"],
        "XGBoostRegressor": ["xgboost", "xgb_limitdepth"],
        "RandomForest": ["rf"],
        "ExtremeRandomTrees": ["extra_tree"],
        "Arima": ["arima"],
        "AutoArima": ["sarimax"],
        "ExponentialSmoothing": ["holt-winters"],
    },
}


class AutoMLSettingsError(ValueError):
    """The AutoMLConfig asks for something the local engine cannot map."""


def __getattr__(name: str) -> Any:
    """``raw_model`` is imported on first use: it loads MLflow, which ``check_settings`` does not need."""
    if name == "raw_model":
        import raw_model

        return raw_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_settings(task: str, primary_metric: str, allowed: list[str], blocked: list[str]) -> None:
    """Raise AutoMLSettingsError for a metric or model names this engine cannot map (checked before a run)."""
    flaml_metric(primary_metric, task)
    estimator_list(task, allowed, blocked)


def estimator_list(task: str, allowed: list[str], blocked: list[str]) -> list[str] | str:
    """FLAML estimators for AutoML's allowed/blocked model names ("auto" when neither is set)."""
    names = MODEL_NAMES[task]
    unknown = [m for m in allowed + blocked if m not in names]
    if unknown:
        raise AutoMLSettingsError(
            f"model(s) {', '.join(unknown)} are not available on the local engine for {task}; "
            f"use: {', '.join(names)}"
        )
    if not allowed and not blocked:
        return "auto"
    chosen = allowed or list(names)
    out = [est for m in chosen if m not in blocked for est in names[m]]
    if not out:
        raise AutoMLSettingsError("allowed_models/blocked_models leave no model to try")
    return out


def flaml_metric(primary_metric: str, task: str) -> str:
    if primary_metric not in metric_defs.TASK_METRICS[task]:
        raise AutoMLSettingsError(
            f"primary_metric {primary_metric!r} does not fit task {task}; use one of "
            + ", ".join(metric_defs.TASK_METRICS[task])
        )
    return metric_defs.PRIMARY_METRICS[primary_metric][1]


def train(
    frame: pd.DataFrame,
    settings: dict[str, Any],
    log_file: Path | None = None,
    say: Callable[[str], None] | None = None,
    mlflow_run_id: str | None = None,
    validation: pd.DataFrame | None = None,
) -> tuple[Any, dict]:
    """Fit FLAML per the AutoML settings; returns (raw-columns model, metrics dict).

    With ``log_file``, each trial is passed to ``say`` as it finishes (see automl_progress) and, with
    ``mlflow_run_id``, recorded as a child run of that run. ``validation`` (an SDK v2 node's
    ``validation_data``) is FLAML's holdout set instead of a split of ``frame``.
    """
    import raw_model
    from flaml import AutoML

    task = settings["task"]
    label = settings["label_column_name"]
    if label not in frame.columns:
        raise AutoMLSettingsError(f"label_column_name {label!r} is not a column of the training data")
    frame = frame.dropna(subset=[label])
    y = frame[label]
    x_raw = frame.drop(columns=[label])
    featurizer = raw_model.RawFeaturizer().fit(x_raw)
    time_col = settings.get("time_column_name") if task == "forecasting" else None
    budget = float(settings.get("experiment_timeout_minutes") or 15) * 60
    trended = _trend(x_raw, y, featurizer, settings, say)
    line = trended.line if trended else None
    wanted = bool(settings.get("enable_ensemble", True)) and task != "forecasting"
    # with a trend, a VotingEnsemble chosen on time-ordered validation (voting.py); FLAML's stacked
    # ensemble of ratio models, chosen on shuffled folds, predicted far worse after the training period
    ensemble, voting_wanted = wanted and line is None, wanted and line is not None
    search_budget = search_time(budget, ensemble or voting_wanted)
    fit_kwargs = _fit_kwargs(settings, search_budget, ensemble, log_file)
    features = None if task == "forecasting" else featurizer.transform(x_raw)
    y_fit, scale, groups = y, 1.0, None
    if trended:  # the search learns label / line, weighted by line² (its loss: the label's error)
        weights = line.line(trended.days)
        groups = _weeks(trended.days)
        y_fit = y / weights
        fit_kwargs["sample_weight"] = weights**2
        scale = float(np.sqrt(np.mean(weights**2)))
        if validation is not None:
            validation = validation.dropna(subset=[label]).copy()
            val_weights = line.at(validation)
            validation[label] = validation[label] / val_weights
            fit_kwargs["sample_weight_val"] = val_weights**2
            scale = float(np.sqrt(np.mean(val_weights**2)))  # the loss is the holdout's
    automl = AutoML()
    watcher = _watch_trials(log_file, settings["primary_metric"], y, say, mlflow_run_id, scale)
    started = time.monotonic()
    try:
        _fit(
            automl,
            task,
            x_raw,
            features,
            y_fit,
            featurizer,
            settings,
            time_col,
            label,
            fit_kwargs,
            validation,
            groups,
        )
    finally:
        trials = watcher.stop() if watcher else []
    if automl.best_estimator is None:
        raise AutoMLSettingsError(
            "AutoML found no model within the time budget; raise experiment_timeout_minutes"
        )
    estimator, voted = automl, None
    if voting_wanted:
        sample_weight = fit_kwargs["sample_weight"]

        def fit_all(member: Any) -> Any:
            member.fit(features, y_fit, sample_weight=sample_weight)
            return member

        left = max(0.1 * budget, _time_left(budget))  # the ensemble's share of the reserve at least
        built = voting.build(automl, trended.timeline, fit_all, deadline=time.monotonic() + left)
        if built is not None:
            estimator, voted = built
            if say:
                say(voted.describe())
    elapsed = time.monotonic() - started
    found = getattr(automl, "classes_", None)
    classes = list(found) if found is not None and len(found) else None
    model = raw_model.RawColumnsModel(
        featurizer=featurizer,
        estimator=estimator,
        task=task,
        label=label,
        time_column=time_col,
        classes=[c.item() if hasattr(c, "item") else c for c in classes] if classes else None,
        trained_with={
            "rows": len(frame),
            "flaml_estimator": "VotingEnsemble" if voted else automl.best_estimator,
        },
        trend=line,
    )
    report = _report(automl, settings, y, (budget, search_budget), ensemble, elapsed, trials, scale)
    report["trend"] = dataclasses.asdict(line) if line is not None else None
    report["model"] = "VotingEnsemble" if voted else automl.best_estimator
    report["voting_ensemble"] = _voting_report(voted, y) if voted else None
    if validation is not None:
        report["validation_rows"] = len(validation)
    if say and trials:
        lower, _ = metric_defs.PRIMARY_METRICS[settings["primary_metric"]]
        for row in automl_progress.summary_table(trials, settings["primary_metric"], lower):
            say(row)
    return model, report


def _trend(
    x_raw: pd.DataFrame,
    y: pd.Series,
    featurizer: Any,
    settings: dict[str, Any],
    say: Callable[[str], None] | None,
) -> _Trended | None:
    """The line a regression learns its label relative to, chosen on time-ordered validation (see
    trend.py); None without a date column, for another metric than NRMSE, or when no trend is worth it."""
    if settings["task"] != "regression" or settings["primary_metric"] != "normalized_root_mean_squared_error":
        return None
    column = trend.time_column(featurizer, settings.get("time_column_name"))
    if column is None:
        return None
    import raw_model

    fmt = featurizer.date_formats.get(column)
    days = raw_model.RatioTrend.days_of(x_raw[column], fmt)
    order = np.argsort(np.nan_to_num(days, nan=np.inf), kind="stable")
    if len(order) > trend.MAX_ROWS:  # large data: rows evenly spaced in time, featurized only those
        order = order[np.linspace(0, len(order) - 1, trend.MAX_ROWS).round().astype(int)]
    target = y.to_numpy(dtype=float)
    features = featurizer.transform(x_raw.iloc[order])
    choice = trend.choose(features, y.iloc[order], days[order])
    if say:
        say(choice.describe())
    if choice.damping is None:
        return None
    line = trend.make_line(days, target, column, fmt, choice.damping)
    return _Trended(line, days, (features, target[order], days[order]))


def _weeks(days: np.ndarray) -> np.ndarray | None:
    """Each row's week (rows without a date: a group of their own), for cross-validation folds made of whole
    weeks; None when there are too few weeks for that."""
    weeks = np.where(np.isnan(days), -1, np.floor(np.nan_to_num(days) / 7)).astype(np.int64)
    return weeks if len(np.unique(weeks)) >= MIN_WEEKS else None


def _voting_report(selection: voting.Selection, y: pd.Series) -> dict[str, Any]:
    """The VotingEnsemble's members and scores, as NRMSE (the label's RMSE over its range)."""
    span = float(y.max() - y.min()) or 1.0
    return {
        "members": [
            {"model": c.learner, "damping": c.damping, "weight": round(1 / len(selection.members), 4)}
            for c in selection.members
        ],
        "validation": "time-ordered: trained before each origin, scored on the rows just after it",
        "validation_nrmse": selection.rmse / span,
        "candidates_validation_nrmse": {str(c): v / span for c, v in selection.single.items()},
    }


def _fit_kwargs(
    settings: dict[str, Any], search_budget: float, ensemble: bool, log_file: Path | None
) -> dict[str, Any]:
    """FLAML's ``fit`` arguments for the AutoML settings (besides the data and how it is split)."""
    task = settings["task"]
    fit_kwargs: dict[str, Any] = {
        "metric": flaml_metric(settings["primary_metric"], task),
        "estimator_list": estimator_list(
            task, settings.get("allowed_models") or [], settings.get("blocked_models") or []
        ),
        "time_budget": search_budget,
        "ensemble": ensemble,
        "early_stop": bool(settings.get("enable_early_stopping", True)),
        "seed": int(settings.get("seed", 42)),
        "verbose": 1,
        "log_file_name": str(log_file) if log_file else "",
        "log_type": "all",
        "mlflow_logging": False,  # trials are recorded by automl_progress, as child runs of the step
        "n_jobs": -1,
    }
    if settings.get("iterations"):
        fit_kwargs["max_iter"] = int(settings["iterations"])
    return fit_kwargs


def _report(
    automl: Any,
    settings: dict[str, Any],
    y: pd.Series,
    budgets: tuple[float, float],
    ensemble: bool,
    elapsed: float,
    trials: list,
    scale: float = 1.0,
) -> dict[str, Any]:
    """The metrics the step writes: the best model's primary metric, its FLAML config, the trials.
    ``scale`` turns FLAML's loss into the label's (a trend's weighted ratio loss times the line's RMS)."""
    budget, search_budget = budgets
    score = _primary_score(automl.best_loss * scale, settings["primary_metric"], y)
    report = {
        "primary_metric": settings["primary_metric"],
        "best_score": score,
        "best_estimator": automl.best_estimator,
        "best_config": automl.best_config,
        "best_loss_flaml": automl.best_loss,
        "time_budget_s": budget,
        "search_budget_s": round(search_budget, 2),
        "ensemble": ensemble,
        "seconds": round(elapsed, 2),
        "trials": [
            {"iteration": t.iteration, "model": t.estimator, "metric": t.metric, "seconds": t.seconds}
            for t in trials
        ],
    }
    return report


def _watch_trials(
    log_file: Path | None,
    primary_metric: str,
    y: pd.Series,
    say: Callable[[str], None] | None,
    mlflow_run_id: str | None,
    scale: float = 1.0,
) -> automl_progress.TrialWatcher | None:
    """Start following FLAML's trial log (None without a log file)."""
    if log_file is None:
        return None
    log_file.unlink(missing_ok=True)
    lower, _ = metric_defs.PRIMARY_METRICS[primary_metric]
    recorder = automl_progress.ChildRuns(mlflow_run_id, primary_metric) if mlflow_run_id else None
    if say:
        say(f"trials as they finish (METRIC: {primary_metric}):")
        say(automl_progress.header())
    return automl_progress.TrialWatcher(
        log_file=log_file,
        to_metric=lambda loss: _primary_score(loss * scale, primary_metric, y),
        lower_is_better=lower,
        say=say or (lambda _text: None),
        recorder=recorder,
    ).start()


def _fit(
    automl: Any,
    task: str,
    x_raw: pd.DataFrame,
    features: pd.DataFrame | None,
    y: pd.Series,
    featurizer: Any,
    settings: dict[str, Any],
    time_col: str | None,
    label: str,
    fit_kwargs: dict[str, Any],
    validation: pd.DataFrame | None = None,
    groups: np.ndarray | None = None,
) -> None:
    if task == "forecasting":
        if validation is not None:
            raise AutoMLSettingsError("the local AutoML takes no validation data for forecasting")
        if not time_col or time_col not in x_raw.columns:
            raise AutoMLSettingsError(f"forecasting needs the time column {time_col!r} in the training data")
        data = x_raw.copy()
        data[time_col] = pd.to_datetime(data[time_col], format="mixed")
        data[label] = y.to_numpy()
        data = data.sort_values(time_col)
        data = data[[time_col] + [c for c in data.columns if c != time_col]]
        automl.fit(
            dataframe=data,
            label=label,
            task="ts_forecast",
            period=int(settings.get("forecast_horizon") or 1),
            eval_method="holdout",
            **fit_kwargs,
        )
    else:
        n_splits = int(settings.get("n_cross_validations") or 0)
        eval_kwargs: dict[str, Any] = (
            {"eval_method": "cv", "n_splits": n_splits} if n_splits >= 2 else {"eval_method": "auto"}
        )
        if groups is not None and len(np.unique(groups)) >= 2 * max(n_splits, 2):
            # a model used after its training period: folds of whole weeks, not days between their neighbours
            eval_kwargs |= {"split_type": "group", "groups": groups}
        if validation is not None:
            if label not in validation.columns:
                raise AutoMLSettingsError(
                    f"label_column_name {label!r} is not a column of the validation data"
                )
            validation = validation.dropna(subset=[label])
            eval_kwargs = {
                "eval_method": "holdout",
                "X_val": featurizer.transform(validation.drop(columns=[label])),
                "y_val": validation[label],
            }
        automl.fit(
            X_train=features,
            y_train=y,
            task="classification" if task == "classification" else "regression",
            **eval_kwargs,
            **fit_kwargs,
        )


def search_time(budget: float, ensemble: bool) -> float:
    """Seconds left for FLAML's search: the step's budget less what this process has used, less a reserve."""
    reserve = (0.10 if ensemble else 0.03) * budget + 2.0
    return max(0.25 * budget, _time_left(budget) + SAVE_RESERVE - reserve)


def _time_left(budget: float) -> float:
    """Seconds of the step's budget left for fitting, keeping SAVE_RESERVE for saving the model."""
    import psutil

    return budget - (time.time() - psutil.Process().create_time()) - SAVE_RESERVE


def _primary_score(best_loss: float, primary_metric: str, y: pd.Series) -> float:
    """FLAML's loss converted back to the AutoML primary metric's value."""
    lower_is_better, flaml_name = metric_defs.PRIMARY_METRICS[primary_metric]
    if primary_metric.startswith("normalized_"):
        span = float(y.max() - y.min()) or 1.0
        return float(best_loss) / span
    if lower_is_better or flaml_name in ("rmse", "mae"):
        return float(best_loss)
    return 1.0 - float(best_loss)


def read_table(path: Path) -> pd.DataFrame:
    """Training data: an MLTable folder (SDK v2), a folder of CSV files or one CSV file."""
    from pipelines.local.runtime import mltable

    if mltable.is_mltable(path):
        return mltable.read(path)
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def save_mlflow_model(model: Any, sample: pd.DataFrame, folder: Path) -> None:
    """Write the model into ``folder`` as an MLflow pyfunc model (an SDK v2 AutoML node's ``best_model``)."""
    import shutil
    import tempfile

    import cloudpickle
    import mlflow
    import numpy as np
    import raw_model
    import register
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        pickle_path = Path(tmp) / "model.pkl"
        with open(pickle_path, "wb") as fh:
            cloudpickle.dump(model, fh)
        saved = Path(tmp) / "mlflow-model"
        mlflow.pyfunc.save_model(
            path=str(saved),
            python_model=raw_model.RawModelPyfunc(),
            artifacts={"model": str(pickle_path)},
            code_paths=raw_model.code_paths(),
            signature=infer_signature(sample, np.asarray(model.predict(sample))),
            input_example=sample.head(2),
            metadata=model.input_metadata() if hasattr(model, "input_metadata") else None,
            pip_requirements=register.model_requirements(),
        )
        for item in saved.iterdir():
            shutil.move(str(item), folder / item.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", required=True, help="JSON of the AutoMLConfig's settings")
    parser.add_argument("--training-data", required=True, type=Path)
    parser.add_argument("--model-out", required=True, type=Path)
    parser.add_argument("--metrics-out", required=True, type=Path)
    parser.add_argument(
        "--step-name", default="automl", help="prefix of the progress lines (the step's name)"
    )
    parser.add_argument("--model-format", choices=("pickle", "mlflow"), default="pickle")
    parser.add_argument("--validation-data", type=Path)
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    import cloudpickle
    import mlflow

    from pipelines.local.runtime import mltable

    prefix = args.step_name

    def say(text: str) -> None:
        print(f"{prefix}: {text}", flush=True)

    try:
        frame = read_table(args.training_data)
        validation = read_table(args.validation_data) if args.validation_data else None
    except mltable.MLTableError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    print(
        f"{prefix}: {settings['task']} on {len(frame)} rows, metric {settings['primary_metric']}, "
        f"budget {settings.get('experiment_timeout_minutes')} min"
        + (f", at most {settings['iterations']} iterations" if settings.get("iterations") else ""),
        flush=True,
    )
    args.metrics_out.mkdir(parents=True, exist_ok=True)
    try:
        model, report = train(
            frame,
            settings,
            log_file=args.metrics_out / "flaml.log",
            say=say,
            mlflow_run_id=os.environ.get("MLFLOW_RUN_ID") or None,
            validation=validation,
        )
    except AutoMLSettingsError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    args.model_out.mkdir(parents=True, exist_ok=True)
    if args.model_format == "mlflow":
        save_mlflow_model(model, frame.drop(columns=[settings["label_column_name"]]).head(5), args.model_out)
    else:
        with open(args.model_out / "model.pkl", "wb") as fh:
            cloudpickle.dump(model, fh)
    (args.metrics_out / "metrics.json").write_text(json.dumps(report, indent=2, default=str))
    mlflow.log_metric(settings["primary_metric"], report["best_score"])
    mlflow.log_params(
        {
            "best_estimator": report["best_estimator"],
            "model": report["model"],
            "iterations": len(report["trials"]),
        }
    )
    voted = report.get("voting_ensemble")
    print(
        f"{prefix}: best {report['best_estimator']} {settings['primary_metric']}={report['best_score']:.4f} "
        f"after {len(report['trials'])} iterations in {report['seconds']:.1f} s"
        + (f"; registered: a VotingEnsemble of {len(voted['members'])}" if voted else ""),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
