"""Training benchmark: model quality on the reference split, and the local pipeline's overhead.

    python -m benchmarks.train_quality [--budget-minutes 1] [--baseline-seconds 10] [--runs 3]

Runs ``python -m pipelines.train run`` (the whole pipeline, in a fresh local workspace) with the given
AutoML budget, then scores the registered model on the reference test period (2012-09-01 on) and on
the filtered period (without 2012-10-29 and without 2012-11-22 on). NRMSE = RMSE / (max(cnt) - min(cnt))
over the whole dataset. Baselines on the same split: seasonal naive (the value 14 days earlier, the
forecast horizon, so every forecast uses only data known 14 days ahead) and a plain FLAML regression on
the raw columns minus the leaking ones. Overhead = wall time of ``train run`` - the AutoML budget.
Prints the numbers and writes the ``## Training`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report import machine_line, model_name, update_section
from pipelines.settings import PROJECT_ROOT

CUTOFF = "2012-08-31"
HORIZON_DAYS = 14
EXCLUDED_DAY = "2012-10-29"
EXCLUDED_FROM = "2012-11-22"


def periods(frame: pd.DataFrame) -> dict[str, pd.Series]:
    dates = pd.to_datetime(frame["date"], format="mixed")
    test = dates > pd.Timestamp(CUTOFF)
    filtered = test & (dates != pd.Timestamp(EXCLUDED_DAY)) & (dates < pd.Timestamp(EXCLUDED_FROM))
    return {"test": test, "filtered": filtered}


def nrmse(truth: np.ndarray, predicted: np.ndarray, span: float) -> float:
    return float(np.sqrt(np.mean((np.asarray(truth, float) - np.asarray(predicted, float)) ** 2)) / span)


def seasonal_naive(frame: pd.DataFrame) -> np.ndarray:
    """The count ``HORIZON_DAYS`` days earlier (the data is daily and complete)."""
    return frame["cnt"].shift(HORIZON_DAYS).to_numpy()


def plain_regression(frame: pd.DataFrame, seconds: float) -> np.ndarray:
    """FLAML regression on the raw numeric columns (no date parsing, no leak columns), ``seconds`` budget."""
    from flaml import AutoML

    dates = pd.to_datetime(frame["date"], format="mixed")
    features = frame.drop(columns=["cnt", "casual", "registered", "date"])
    train = dates <= pd.Timestamp(CUTOFF)
    automl = AutoML()
    automl.fit(features[train], frame.loc[train, "cnt"], task="regression", metric="rmse", time_budget=seconds,
               verbose=0, seed=42)  # fmt: skip
    return automl.predict(features)


def create_store(home: Path) -> float:
    """Seconds to create the local MLflow store (once per workspace; timed apart from the pipeline)."""
    env = {**os.environ, "AMLOPS_HOME": str(home)}
    code = "from pipelines.local.workspace import registry; registry.ensure_experiment('bike-demand-train')"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def run_pipeline(budget_minutes: int, home: Path) -> tuple[dict, float]:
    env = {**os.environ, "AMLOPS_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "run", "--set", f"timeout_minutes={budget_minutes}", "--json"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"train run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), wall


def pipeline_run(budget_minutes: int, frame: pd.DataFrame) -> dict:
    """One ``train run`` in a fresh local workspace: the registered model's predictions and the timings."""
    with tempfile.TemporaryDirectory(prefix="amlops-bench-") as tmp:
        home = Path(tmp)
        store_seconds = create_store(home)
        summary, wall = run_pipeline(budget_minutes, home)
        os.environ["AMLOPS_HOME"] = str(home)
        import mlflow

        from pipelines.local.workspace import registry

        registry.configure_mlflow(home)
        version = summary["registration"]["version"]
        model = mlflow.pyfunc.load_model(f"models:/bike-demand/{version}")
        report = {}
        metrics_file = Path(summary["folder"]) / "outputs" / "metrics_data" / "metrics.json"
        if metrics_file.is_file():
            report = json.loads(metrics_file.read_text())
        raw = frame.drop(columns=["cnt", "casual", "registered"])
        steps = json.loads((Path(summary["folder"]) / "run.json").read_text())["steps"]
        return {
            "pred": np.asarray(model.predict(raw)),
            "wall": wall,
            "store_seconds": store_seconds,
            "automl_seconds": report.get("seconds"),
            "best": model_name(report),
            "trials": len(report.get("trials") or []),
            "steps": {st["name"]: st.get("seconds") for st in steps},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-minutes", type=int, default=1)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1, help="pipeline runs, one table row each (default 1)")
    args = parser.parse_args(argv)

    from pipelines.datasets import resolve

    frame = pd.read_csv(resolve("bike-no"))
    span = float(frame["cnt"].max() - frame["cnt"].min())
    masks = periods(frame)
    load_before = os.getloadavg()
    runs = [pipeline_run(args.budget_minutes, frame) for _ in range(args.runs)]
    naive_pred = seasonal_naive(frame)
    plain_pred = plain_regression(frame, args.baseline_seconds)
    rows = []
    named = [
        (f"amlops pipeline run {i + 1} ({args.budget_minutes} min, {r['trials']} trials, {r['best']})", r["pred"])
        for i, r in enumerate(runs)
    ]  # fmt: skip
    named += [
        (f"seasonal naive (value {HORIZON_DAYS} days earlier)", naive_pred),
        (f"plain FLAML regression on raw columns, {args.baseline_seconds:.0f} s", plain_pred),
    ]
    for name, pred in named:
        row = {"model": name}
        for period, mask in masks.items():
            row[period] = nrmse(frame.loc[mask, "cnt"], pred[mask.to_numpy()], span)
        rows.append(row)
    budget_s = args.budget_minutes * 60
    met = all(r["filtered"] <= 0.085 and r["test"] <= 0.12 for r in rows[: len(runs)])
    lines = [
        f"Measured {machine_line()}; load average before {', '.join(f'{x:.1f}' for x in load_before)}.",
        f"Command: `python -m benchmarks.train_quality --budget-minutes {args.budget_minutes} "
        f"--baseline-seconds {args.baseline_seconds:g} --runs {args.runs}`",
        "",
        f"NRMSE = RMSE / (max(cnt) - min(cnt)) = RMSE / {span:.0f}; train <= {CUTOFF}; test = 2012-09-01 on "
        f"({int(masks['test'].sum())} days); filtered = test without {EXCLUDED_DAY} and without {EXCLUDED_FROM} on "
        f"({int(masks['filtered'].sum())} days). Targets: filtered NRMSE <= 0.085 and test NRMSE <= 0.12 with a "
        f"60 s budget, in every run: {'met' if met else 'not met'}.",
        "",
        "| model | test NRMSE | filtered NRMSE |",
        "|---|---:|---:|",
        *[f"| {r['model']} | {r['test']:.4f} | {r['filtered']:.4f} |" for r in rows],
        "",
    ]
    for i, r in enumerate(runs):
        lines.append(
            f"Run {i + 1}: pipeline wall time {r['wall']:.1f} s with a {budget_s} s AutoML budget (overhead "
            f"{r['wall'] - budget_s:.1f} s); FLAML ran {r['automl_seconds']} s; steps: "
            + ", ".join(f"{k} {v} s" for k, v in r["steps"].items())
            + f"; creating the local MLflow store took {r['store_seconds']:.1f} s more (not counted)."
        )
    text = "\n".join(lines)
    print(text)
    update_section(PROJECT_ROOT / "BENCHMARKS.md", "Training", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
