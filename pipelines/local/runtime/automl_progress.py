"""The local AutoML step's progress: one line per finished trial, a summary table, an MLflow child run each.

FLAML writes one JSON line per trial to its log file (``log_type="all"``) and flushes it; a
``TrialWatcher`` thread follows that file while the search runs, prints each trial in the shape of
Azure AutoML's live table (ITER, PIPELINE, DURATION, METRIC, BEST) with the step's prefix, so the
engine shows it on the console and keeps it in the step log, and records the trial as a child run
of the AutoML step's MLflow run (estimator, hyperparameters, metric, duration), so ``mlflow ui``
shows the leaderboard and the search curve.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY_SETTINGS = 3  # hyperparameters shown in a progress line's PIPELINE column


@dataclass
class Trial:
    iteration: int
    estimator: str
    config: dict[str, Any]
    seconds: float
    wall_clock: float
    metric: float
    best: float

    def pipeline(self) -> str:
        shown = list(self.config.items())[:KEY_SETTINGS]
        return f"{self.estimator}(" + ", ".join(f"{k}={_short(v)}" for k, v in shown) + ")"


def header() -> str:
    return f"{'ITER':>5}  {'PIPELINE':<58} {'DURATION':>9}  {'METRIC':>8}  {'BEST':>8}"


def line(trial: Trial) -> str:
    return (
        f"{trial.iteration:>5}  {trial.pipeline()[:58]:<58} {trial.seconds:>8.2f}s  "
        f"{trial.metric:>8.4f}  {trial.best:>8.4f}"
    )


def summary_table(trials: list[Trial], metric_name: str, lower_is_better: bool) -> list[str]:
    """One row per estimator tried: trials, best metric, total seconds; best estimator first."""
    by_est: dict[str, list[Trial]] = {}
    for t in trials:
        by_est.setdefault(t.estimator, []).append(t)
    pick = min if lower_is_better else max
    rows = sorted(
        (
            (est, pick(t.metric for t in ts), len(ts), sum(t.seconds for t in ts))
            for est, ts in by_est.items()
        ),
        key=lambda r: r[1] if lower_is_better else -r[1],
    )
    out = [f"summary ({metric_name}, best estimator first):"]
    out.append(f"{'ESTIMATOR':<16} {'TRIALS':>6}  {'BEST':>8}  {'SECONDS':>8}")
    out += [f"{est:<16} {n:>6}  {best:>8.4f}  {secs:>8.1f}" for est, best, n, secs in rows]
    return out


@dataclass
class TrialWatcher:
    """Follows FLAML's trial log while the search runs; prints and records each trial once."""

    log_file: Path
    to_metric: Callable[[float], float]  # FLAML's validation loss -> the primary metric's value
    lower_is_better: bool
    say: Callable[[str], None]
    recorder: Any = None  # a ChildRuns, or None to skip MLflow
    trials: list[Trial] = field(default_factory=list)
    _offset: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TrialWatcher:
        self._thread = threading.Thread(target=self._follow, name="automl-trials", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Trial]:
        """Stop following, read what is left, and return every trial seen."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        if self.recorder is not None:
            self.recorder.flush()
        return self.trials

    def _follow(self) -> None:
        while not self._stop.wait(0.25):
            self.poll()

    def poll(self) -> None:
        if not self.log_file.is_file():
            return
        with open(self.log_file, encoding="utf-8") as fh:
            fh.seek(self._offset)
            while True:
                text = fh.readline()
                if not text.endswith("\n"):  # nothing more, or a line FLAML is still writing
                    break
                self._offset = fh.tell()
                self._take(text)

    def _take(self, text: str) -> None:
        try:
            rec = json.loads(text)
        except json.JSONDecodeError:
            return
        if "learner" not in rec or rec.get("validation_loss") is None:
            return  # the checkpoint record FLAML writes at the end
        metric = self.to_metric(float(rec["validation_loss"]))
        best = (
            metric
            if not self.trials
            else (min if self.lower_is_better else max)(self.trials[-1].best, metric)
        )
        trial = Trial(
            iteration=int(rec.get("record_id", len(self.trials))),
            estimator=str(rec["learner"]),
            config=dict(rec.get("config") or {}),
            seconds=float(rec.get("trial_time") or 0.0),
            wall_clock=float(rec.get("wall_clock_time") or 0.0),
            metric=metric,
            best=best,
        )
        self.trials.append(trial)
        self.say(line(trial))
        if self.recorder is not None:
            self.recorder.add(trial)


class ChildRuns:
    """Records trials as MLflow child runs of one parent run, in batches (the store is SQLite)."""

    def __init__(self, parent_run_id: str, metric_name: str, batch: int = 20) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.parent = self.client.get_run(parent_run_id)
        self.metric_name = metric_name
        self.batch = batch
        self.started = time.time()
        self.pending: list[Trial] = []
        self.recorded = 0

    def add(self, trial: Trial) -> None:
        self.pending.append(trial)
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        from mlflow.entities import Metric, Param

        pending, self.pending = self.pending, []
        for t in pending:
            end_ms = int((self.started + t.wall_clock) * 1000)
            run = self.client.create_run(
                self.parent.info.experiment_id,
                start_time=end_ms - int(t.seconds * 1000),
                tags={
                    "mlflow.parentRunId": self.parent.info.run_id,
                    "mlflow.runName": f"trial {t.iteration}: {t.estimator}",
                    "amlops.trial": str(t.iteration),
                },
            )
            params = [Param("estimator", t.estimator)] + [
                Param(k[:250], _short(v, 500)) for k, v in t.config.items()
            ]
            metrics = [
                Metric(self.metric_name, t.metric, end_ms, 0),
                Metric("duration_s", t.seconds, end_ms, 0),
            ]
            self.client.log_batch(run.info.run_id, metrics=metrics, params=params)
            self.client.set_terminated(run.info.run_id, "FINISHED", end_time=end_ms)
            # the search curve on the step's own run: best so far by iteration
            self.client.log_metric(self.parent.info.run_id, "best_so_far", t.best, end_ms, t.iteration)
            self.recorded += 1


def _short(value: Any, width: int = 8) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
