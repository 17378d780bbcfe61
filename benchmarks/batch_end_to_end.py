"""End-to-end batch scoring and fixed cost per pipeline run, each measured as a fresh command.

Run by ``python -m benchmarks.batch_throughput --end-to-end``. In one fresh local workspace it measures:

- the fixed cost of a pipeline run: ``tests/tiny_pipeline.py`` (one PythonScriptStep) as a fresh command, and
  the training pipeline with its defaults (AutoML, 1-minute budget): wall time beyond the budget, per step;
- ``python -m pipelines.batch_score run`` against a plain script (``pd.read_csv`` -> ``mlflow.pyfunc``
  ``predict`` -> ``to_csv`` in one process, its imports and model load included) at 1M and 5M rows, with the
  model the training pipeline registered and with the 300-tree LightGBM of ``benchmarks/_model.py``; the
  pipeline's per-step times; peak RSS of all processes; every row counted in both outputs.

Writes the ``## Batch scoring, end to end`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.measure import Measured, measure, plain_script
from benchmarks.report import machine_line, model_name, update_section
from pipelines.settings import PROJECT_ROOT

SECTION = "Batch scoring, end to end"
LIGHTGBM = "bench-lightgbm"
BUDGET_SECONDS = 60.0  # the training pipeline's default AutoML budget (timeout_minutes=1)

PLAIN_SCRIPT = plain_script("model = mlflow.pyfunc.load_model(sys.argv[3])")


def run_all(
    work: Path, row_counts: list[int], tiny_runs: int = 3, publish: Callable[[str], None] | None = None
) -> str:
    """Measure everything in a fresh workspace under ``work``; the Markdown section's body. ``publish`` gets
    the section so far after each pair of batch runs (a long run on a busy machine leaves what it measured)."""
    from pipelines import datagen

    home = work / "e2e-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {**os.environ, "AMLOPS_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AML_APP_ROOT", "AZUREML_MODEL_DIR"):
        env.pop(key, None)
    files = {}
    made_by = hashlib.sha256(Path(datagen.__file__).read_bytes()).hexdigest()[:8]  # data of today's generator
    for n in row_counts:
        files[n] = work / f"bike-{n}-{made_by}.csv"
        if not files[n].exists():
            print(f"generating {n:,} rows -> {files[n]}", file=sys.stderr)
            datagen.write_csv(files[n], n, seed=1)

    # batch pairs run without the warm engine: a forked run is not the command's child, so its CPU and RSS
    # would escape the measurement; the tiny and training runs are timed both ways
    cold = {**env, "AMLOPS_ENGINE_DAEMON": "0"}
    warm = {**env, "AMLOPS_ENGINE_DAEMON": "1", "AMLOPS_ENGINE_IDLE": "3600"}
    tiny_first = measure("tiny pipeline, first run (creates the MLflow store)", _tiny(), cold, 0)
    tiny_cold = [measure(f"tiny pipeline, cold run {i + 1}", _tiny(), cold, 0) for i in range(tiny_runs)]
    measure("tiny pipeline, the run that leaves a warm engine", _tiny(), warm, 0)
    _wait_for_warm_engine(home)
    tiny = [measure(f"tiny pipeline, warm run {i + 1}", _tiny(), warm, 0) for i in range(tiny_runs)]
    for m in (tiny_first, *tiny_cold, *tiny):
        print(f"{m.label}: {m.seconds:.2f} s", flush=True)
    train = measure("training pipeline (defaults)", _pipeline("pipelines.train", "run", "--json"), warm, 0)
    engine = _warm_engine(home)
    train_steps = _steps(train.detail)
    print(f"training pipeline: {train.seconds:.2f} s, steps {train_steps}", flush=True)
    train_csv = work / "train-50000.csv"
    if not train_csv.exists():
        datagen.write_csv(train_csv, 50_000, seed=2)
    code = (
        "import sys; from pathlib import Path; from benchmarks._model import register_demo_model; "
        f"print(register_demo_model(Path(sys.argv[1]), name={LIGHTGBM!r}, n_trees=300))"
    )
    subprocess.run([sys.executable, "-c", code, str(train_csv)], env=env, check=True, cwd=PROJECT_ROOT)
    automl_version = train.detail["registration"]["version"]
    models = [
        ("bike-demand", automl_version, f"the training pipeline's (AutoML, 1 min): {_best(train.detail)}"),
        (LIGHTGBM, 1, "raw-columns featurization + 300-tree LightGBM (`benchmarks/_model.py`)"),
    ]
    pairs = []
    for n in row_counts:  # the smaller files first for both models: a run cut short still compares both
        for name, version, description in models:
            script = measure(
                f"plain script, {name}, {n:,} rows",
                [sys.executable, "-c", PLAIN_SCRIPT, str(files[n]), str(work / "plain.csv"),
                 f"models:/{name}/{version}"],
                {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
                 "MLFLOW_REGISTRY_URI": f"sqlite:///{home / 'mlflow.db'}"},
                n,
            )  # fmt: skip
            assert script.detail["rows"] == n, script.detail
            command = _pipeline("pipelines.batch_score", "run", "--input", str(files[n]), "--model",
                                f"{name}:{version}", "--json")  # fmt: skip
            # as a user's next command: the warm engine an earlier run left, and a file it has not seen (its
            # plan is built); then the same command with the engine off (AMLOPS_ENGINE_DAEMON=0)
            pipeline = _pipeline_run(f"batch_score run, {name}, {n:,} rows", command, warm, n, home, engine)
            pipeline_cold = _pipeline_run(
                f"... engine cold, {name}, {n:,} rows", command, cold, n, home, None
            )
            print(
                f"{name} {n:,} rows: script {script.seconds:.2f} s ({script.peak_rss_mb:,.0f} MB), pipeline "
                f"{pipeline.seconds:.2f} s ({pipeline.peak_rss_mb:,.0f} MB) {_steps(pipeline.detail)}: "
                f"{script.seconds / pipeline.seconds:.2f}x; engine cold {pipeline_cold.seconds:.2f} s "
                f"({pipeline_cold.peak_rss_mb:,.0f} MB): {script.seconds / pipeline_cold.seconds:.2f}x",
                flush=True,
            )
            pairs.append((name, description, n, script, pipeline, pipeline_cold))
            if publish is not None:
                publish(render(row_counts, tiny_first, tiny_cold, tiny, train, pairs))
    _stop_warm_engines(home)
    return render(row_counts, tiny_first, tiny_cold, tiny, train, pairs)


def _pipeline_run(
    label: str, command: list[str], env: dict[str, str], n: int, home: Path, engine: Any
) -> Measured:
    cached_before = _plan_entries(home)
    run = measure(label, command, env, n, engine=engine)
    run.detail["plan_built"] = _plan_entries(home) > cached_before
    counted = _count_rows(run.detail)
    assert counted == (n, n, n), f"rows in the outputs {counted}, expected {n} each"
    return run


def _warm_engine(home: Path) -> Any:
    """The warm engine daemon serving ``home`` (its pid is in its lock file)."""
    import psutil

    for lock in (home / "engine").glob("*.lock"):
        try:
            return psutil.Process(int(lock.read_text().split()[0]))
        except (OSError, ValueError, IndexError, psutil.Error):
            continue
    raise SystemExit("no warm engine is running (see AMLOPS_HOME/engine/daemon.log)")


def _wait_for_warm_engine(home: Path, timeout: float = 300) -> None:
    log = home / "engine" / "daemon.log"
    deadline = time.monotonic() + timeout
    while not (log.exists() and "serving" in log.read_text()):
        if time.monotonic() > deadline:
            raise SystemExit("the warm engine did not start (see AMLOPS_HOME/engine/daemon.log)")
        time.sleep(0.2)


def _stop_warm_engines(home: Path) -> None:
    import signal

    for lock in (home / "engine").glob("*.lock"):
        try:
            os.kill(int(lock.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass


def _plan_entries(home: Path) -> int:
    return len(list((home / "plan-cache").glob("*.pickle")))


def _tiny() -> list[str]:
    return _pipeline("tests.tiny_pipeline", "run", "--json")


def _pipeline(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _steps(summary: dict[str, Any]) -> dict[str, float]:
    """Seconds of each step of the run ``summary`` (the run's ``--json`` output) describes."""
    record = json.loads((Path(summary["folder"]) / "run.json").read_text())
    return {s["name"]: float(s.get("seconds") or 0.0) for s in record["steps"]}


def _best(summary: dict[str, Any]) -> str:
    """The model the AutoML step registered and its test NRMSE, as the training run wrote them."""
    outputs = Path(summary["folder"]) / "outputs"
    found = json.loads((outputs / "metrics_data" / "metrics.json").read_text())
    nrmse = summary.get("metrics", {}).get("test_nrmse")
    if found.get("voting_ensemble"):
        return f"{model_name(found)}, test NRMSE {nrmse:.4f}"
    config = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in found["best_config"].items()
    )
    return f"{found['best_estimator']} ({config}), test NRMSE {nrmse:.4f}"


def _count_rows(summary: dict[str, Any]) -> tuple[int, int, int]:
    """Rows in the run's append_row file, its predictions.csv and its predictions.parquet."""
    import pyarrow.parquet as pq

    outputs = Path(summary["folder"]) / "outputs"
    with open(outputs / "scores" / "parallel_run_step.txt", "rb") as fh:
        raw = sum(1 for _ in fh)
    with open(outputs / "predictions" / "predictions.csv", "rb") as fh:
        csv_rows = sum(1 for _ in fh) - 1
    return raw, csv_rows, pq.ParquetFile(outputs / "predictions" / "predictions.parquet").metadata.num_rows


def render(
    row_counts: list[int],
    tiny_first: Measured,
    tiny_cold: list[Measured],
    tiny: list[Measured],
    train: Measured,
    pairs: list[tuple[str, str, int, Measured, Measured, Measured]],
) -> str:
    lines = [
        *_intro_lines(),
        *_comparison_lines(pairs),
        *_target_lines(row_counts, pairs),
        *_fixed_cost_lines(tiny_first, tiny_cold, tiny, train),
    ]
    return "\n".join(lines)


def _intro_lines() -> list[str]:
    """The machine, the command, and what the comparison measures."""
    return [
        f"Measured {machine_line()} (at the end, {time.strftime('%H:%M', time.gmtime())} UTC).",
        "Command: `python -m benchmarks.batch_throughput --end-to-end`. Every run is a fresh command as a user "
        "types it (interpreter start, imports and model load included), in one fresh local workspace; CPU "
        "seconds and peak RSS are of all the command's processes together (RSS sampled every 20 ms).",
        "",
        "### Batch pipeline against a plain script",
        "",
        "Plain script: one process, `import mlflow.pyfunc, pandas`, `mlflow.pyfunc.load_model('models:/NAME/V')`, "
        "`pd.read_csv`, `predict`, `to_csv` of the key columns and the prediction. Pipeline: `python -m "
        "pipelines.batch_score run --input FILE --model NAME:V` (ParallelRunStep on the local engine with the "
        "default settings: 1MB mini-batches, one worker per core; then the collect step writing "
        "predictions.csv and predictions.parquet). Rows were counted in the append_row file, the CSV and the "
        "Parquet file of every pipeline run. The first run on a data file builds its plan with the SDK; a "
        "later run on the same file reads it from the plan cache (column *plan*). Each pipeline command ran "
        "twice: first as a user's next command runs by default, handed to the warm engine an earlier run left "
        "(`engine_daemon.py`; the daemon's own RSS and its forks' RSS and CPU are counted with the command's), "
        "then with `AMLOPS_ENGINE_DAEMON=0` (last column).",
        "",
        "Other processes' CPU seconds during each command (the machine may be shared) are in their own column.",
        "",
    ]


def _comparison_lines(pairs: list[tuple[str, str, int, Measured, Measured, Measured]]) -> list[str]:
    """The script/pipeline table, the models, and the plain script's phases."""
    lines = [
        "| model | rows | plain script s | pipeline s | speed-up | pipeline steps s | outside the steps s | plan | "
        "script / pipeline CPU s | script / pipeline peak RSS MB | other processes' CPU s (script / pipeline) | "
        "engine cold: pipeline s, speed-up, plan |",
        "|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---|",
    ]
    for name, _, n, script, pipeline, cold in pairs:
        s = _steps(pipeline.detail)
        step_text = ", ".join(f"{k} {v:.1f}" for k, v in s.items())
        lines.append(
            f"| {name} | {n:,} | {script.seconds:.2f} | {pipeline.seconds:.2f} | "
            f"**{script.seconds / pipeline.seconds:.2f}×** | {step_text} | {pipeline.seconds - sum(s.values()):.1f} | "
            f"{'built (SDK imported)' if pipeline.detail.get('plan_built') else 'from the plan cache'} | "
            f"{script.cpu_seconds:.1f} / {pipeline.cpu_seconds:.1f} | "
            f"{script.peak_rss_mb:,.0f} / {pipeline.peak_rss_mb:,.0f} | "
            f"{script.other_cpu_seconds:.1f} / {pipeline.other_cpu_seconds:.1f} | "
            f"{cold.seconds:.2f}, {script.seconds / cold.seconds:.2f}×, "
            f"{'built' if cold.detail.get('plan_built') else 'cache'} |"
        )
    lines += [
        "",
        "Models: "
        + "; ".join(f"`{name}`: {desc}" for name, desc in dict((p[0], p[1]) for p in pairs).items())
        + ".",
    ]
    lines += ["", "Plain script phases (start-up = imports + model load):", ""]
    for name, _, n, script, *_ in pairs:
        d = script.detail
        lines.append(
            f"- {name}, {n:,} rows: start-up {d['startup']:.2f} s, read {d['read']:.2f} s, predict "
            f"{d['predict']:.2f} s, write {d['write']:.2f} s"
        )
    return lines


def _target_lines(
    row_counts: list[int], pairs: list[tuple[str, str, int, Measured, Measured, Measured]]
) -> list[str]:
    """Per model: the speed-up against its target at each row count, and the peak RSS growth."""
    small, big = min(row_counts), max(row_counts)
    lines = ["", "Targets:", ""]
    for name in dict.fromkeys(p[0] for p in pairs):
        for n in row_counts:
            found = [(p[3], p[4]) for p in pairs if p[0] == name and p[2] == n]
            if not found:
                lines.append(f"- {name}, {n:,} rows: not measured yet")
                continue
            script, pipeline = found[0]
            target = 1.2 if n == small else 1.3
            ratio = script.seconds / pipeline.seconds
            lines.append(
                f"- {name}, {n:,} rows: pipeline {ratio:.2f}× the plain script (target ≥ {target}×: "
                f"**{'met' if ratio >= target else 'NOT met'}**)"
            )
        mem = {p[2]: p[4].peak_rss_mb for p in pairs if p[0] == name}
        if small not in mem or big not in mem:
            continue
        ratio = mem[big] / mem[small]
        lines.append(
            f"- {name}: pipeline peak RSS {mem[big]:,.0f} MB at {big:,} rows, {mem[small]:,.0f} MB at "
            f"{small:,}: {ratio:.2f}× (target ≤ 1.1×: **{'met' if ratio <= 1.1 else 'NOT met'}**)"
        )
    return lines


def _fixed_cost_lines(
    tiny_first: Measured, tiny_cold: list[Measured], tiny: list[Measured], train: Measured
) -> list[str]:
    """The tiny pipeline's and the training pipeline's time beyond their work."""
    tiny_median = statistics.median(m.seconds for m in tiny)
    cold_median = statistics.median(m.seconds for m in tiny_cold)
    steps = _steps(train.detail)
    overhead = train.seconds - BUDGET_SECONDS
    return [
        "",
        "### Fixed cost of a local pipeline run",
        "",
        f"- `python -m tests.tiny_pipeline run --json` (one PythonScriptStep counting 731 rows), fresh command "
        f"with the warm engine an earlier run left (`engine_daemon.py`): {', '.join(f'{m.seconds:.2f}' for m in tiny)} s, "
        f"median **{tiny_median:.2f} s** (target ≤ 2 s: **{'met' if tiny_median <= 2 else 'NOT met'}**). "
        f"Cold (`AMLOPS_ENGINE_DAEMON=0`, or the first run after the daemon's idle time): "
        f"{', '.join(f'{m.seconds:.2f}' for m in tiny_cold)} s, median {cold_median:.2f} s; the first run in the "
        f"fresh workspace, which creates the MLflow store, {tiny_first.seconds:.2f} s. Its step: "
        f"{_steps(tiny[-1].detail)['count']:.2f} s.",
        f"- `python -m pipelines.train run --json` (defaults: AutoML budget {BUDGET_SECONDS:.0f} s; warm engine): "
        f"{train.seconds:.2f} s, **{overhead:.1f} s beyond the budget** (target ≤ 5 s: "
        f"**{'met' if overhead <= 5 else 'NOT met'}**); steps: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())
        + f"; outside the steps {train.seconds - sum(steps.values()):.2f} s; CPU of all processes meanwhile, the "
        f"run's fork of the warm engine included, {train.cpu_seconds + train.other_cpu_seconds:.1f} s.",
        "",
    ]


def write(body: str, path: Path) -> None:
    update_section(path, SECTION, body)
