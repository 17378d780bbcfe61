"""The local AutoML step's progress: a line per finished trial, a summary table, an MLflow child run each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.local.runtime import automl, automl_progress


def _frame(n: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "z": rng.normal(size=n), "y": 3 * x + rng.normal(scale=0.1, size=n)})


def _settings() -> dict:
    return {"task": "regression", "primary_metric": "normalized_root_mean_squared_error", "label_column_name": "y",
            "experiment_timeout_minutes": 1, "iterations": 4, "allowed_models": ["LightGBM"],
            "blocked_models": [], "enable_ensemble": False}  # fmt: skip


def test_each_trial_prints_a_line_and_becomes_a_child_run(tmp_path: Path, amlops_home: Path) -> None:
    import mlflow

    from pipelines.local.workspace import registry

    registry.configure_mlflow()
    with mlflow.start_run() as parent:
        parent_id = parent.info.run_id
    said: list[str] = []
    _, report = automl.train(_frame(), _settings(), log_file=tmp_path / "flaml.log", say=said.append,
                             mlflow_run_id=parent_id)  # fmt: skip

    trials = report["trials"]
    assert len(trials) == 4
    rows = [s for s in said if s.split()[:1] and s.split()[0].isdigit()]
    assert [int(r.split()[0]) for r in rows] == [t["iteration"] for t in trials]
    assert all(r.split()[1].startswith("lgbm(") for r in rows)
    assert any(s.split()[:2] == ["ITER", "PIPELINE"] for s in said)
    # the BEST column never gets worse, and ends at the best trial's metric
    bests = [float(r.split()[-1]) for r in rows]
    assert bests == sorted(bests, reverse=True)
    assert bests[-1] == round(min(t["metric"] for t in trials), 4)
    assert any(s.startswith("lgbm") and s.split()[1] == "4" for s in said)  # the summary row

    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", output_format="list"
    )
    assert len(children) == 4
    metric = sorted(c.data.metrics["normalized_root_mean_squared_error"] for c in children)
    assert metric == sorted(t["metric"] for t in trials)
    assert {c.data.params["estimator"] for c in children} == {"lgbm"}
    assert all("n_estimators" in c.data.params and c.data.metrics["duration_s"] >= 0 for c in children)
    curve = mlflow.MlflowClient().get_metric_history(parent_id, "best_so_far")
    assert [m.step for m in curve] == [t["iteration"] for t in trials]


def test_watcher_skips_a_half_written_line_until_it_ends(tmp_path: Path) -> None:
    log = tmp_path / "flaml.log"
    rec = {"record_id": 0, "learner": "rf", "validation_loss": 2.0, "trial_time": 0.5, "wall_clock_time": 1.0,
           "config": {"n_estimators": 4}}  # fmt: skip
    text = json.dumps(rec) + "\n"
    log.write_text(text[:20])
    said: list[str] = []
    watcher = automl_progress.TrialWatcher(log, to_metric=lambda loss: loss / 10, lower_is_better=True,
                                           say=said.append)  # fmt: skip
    watcher.poll()
    assert said == []
    log.write_text(
        text
        + json.dumps(rec | {"record_id": 1, "validation_loss": 3.0})
        + "\n"
        + '{"curr_best_record_id": 0}\n'
    )
    watcher.poll()
    assert [(t.iteration, t.metric, t.best) for t in watcher.trials] == [(0, 0.2, 0.2), (1, 0.3, 0.2)]
    assert len(said) == 2 and "rf(n_estimators=4)" in said[0]
