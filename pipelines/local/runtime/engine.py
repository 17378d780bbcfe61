"""The local pipeline engine: runs a Plan (from the SDK adapter) step by step on this machine.

PythonScriptSteps run as subprocesses in their source directory with PipelineParameters resolved
and data passed as folder paths; the AutoML step runs on FLAML (pipelines.local.runtime.automl); a
ParallelRunStep runs on the local ParallelRunStep engine. Every run gets a folder (runs.py) and an
MLflow parent run with a child run per step in the local SQLite store.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pipelines.core.params import ParameterTypeError, coerce, type_phrase
from pipelines.core.plan import Plan, StepPlan
from pipelines.errors import UserError
from pipelines.local.runtime import reuse, runs, warm
from pipelines.local.runtime.parallel_step import ParallelStep
from pipelines.local.runtime.step_data import StepData
from pipelines.local.runtime.step_kinds import StepKinds
from pipelines.local.runtime.step_process import StepFailed, StepProcess, command_argv
from pipelines.local.workspace import registry

__all__ = [
    "LocalRun",
    "RunRequest",
    "StepFailed",
    "command_argv",
    "in_main_thread",
    "resolve_parameters",
    "run_plan",
]


@dataclass
class RunRequest:
    """What to run: the plan, its parameter values and dataset bindings, and where to report."""

    plan: Plan
    pipeline_name: str
    experiment_name: str
    parameter_assignments: dict[str, Any] = field(default_factory=dict)
    dataset_paths: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_parameters(plan: Plan, assignments: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by assignments; unknown names and values of the wrong type raise UserError."""
    values = dict(plan.parameters)
    for name, value in assignments.items():
        if name not in values:
            raise UserError(
                f"unknown pipeline parameter {name!r}",
                hint="parameters are: " + ", ".join(sorted(values)),
            )
        default = values[name]
        values[name] = _coerce_like(name, default, value)
    return values


def _coerce_like(name: str, default: Any, value: Any) -> Any:
    try:
        return coerce(default, value)
    except ParameterTypeError:
        raise UserError(
            f"parameter {name!r} expects {type_phrase(default)}, got {value!r}",
            hint=f"the default is {default!r}",
        ) from None


class LocalRun(StepKinds, ParallelStep, StepData, StepProcess):
    """One execution of a plan; ``execute()`` returns the final run record.

    The run loop and the run record live here; how each kind of step runs (step_kinds.py, parallel_step.py),
    its data and environment (step_data.py), its process (step_process.py) and the reuse cache (reuse.py)
    live in their own modules."""

    def __init__(self, request: RunRequest, out: TextIO | None = None) -> None:
        self.request = request
        self.plan = request.plan
        self.run_id = request.run_id or runs.new_run_id(request.pipeline_name)
        self.folder = runs.run_folder(self.run_id)
        self.out = out
        self.params = resolve_parameters(self.plan, request.parameter_assignments)
        self.data_paths = self._bind_datasets(request.dataset_paths)
        self._child: subprocess.Popen | None = None
        self._hosts: dict[str, warm.WarmHost] = {}
        self._canceled = False
        self.record: dict[str, Any] = {
            "run_id": self.run_id,
            "pipeline": request.pipeline_name,
            "experiment": request.experiment_name,
            "status": "NotStarted",
            "created": runs.now(),
            "started": None,
            "ended": None,
            "parameters": {k: v for k, v in self.params.items()},
            "datasets": {k: str(v) for k, v in self.data_paths.items()},
            "steps": [{"name": s.name, "kind": s.kind, "status": "NotStarted"} for s in self.plan.steps],
            "metrics": {},
            "outputs": {},
            "error": None,
            **request.extra,
        }

    # ---- public ---------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        self._prestart(0)  # the first step's interpreter warms up while MLflow starts the run
        try:
            registry.configure_mlflow()
            from mlflow import MlflowClient

            client = MlflowClient()
            experiment_id = registry.ensure_experiment(self.request.experiment_name)
            parent = client.create_run(
                experiment_id, run_name=self.run_id, tags={"amlops.run_id": self.run_id}
            )
        except BaseException:
            self._discard_hosts()
            raise
        self.record.update(status="Running", started=runs.now(), mlflow_run_id=parent.info.run_id)
        self._save()
        previous = signal.signal(signal.SIGTERM, self._on_term) if in_main_thread() else None
        final_status = "Failed"
        step = None
        try:
            for index, step in enumerate(self.plan.steps):
                self._run_step(index, step, client, experiment_id, parent.info.run_id)
            final_status = "Completed"
        except StepFailed as exc:
            self.record["error"] = {"step": exc.step, "message": exc.message, "exit_code": exc.exit_code}
        except KeyboardInterrupt:
            self._canceled = True
        except Exception as exc:  # the engine's own failure: the record says what it was, then it propagates
            self.record["error"] = {
                "step": getattr(step, "name", None),
                "message": f"{type(exc).__name__}: {exc}",
            }
            raise
        finally:
            if self._canceled:
                final_status = "Canceled"
                self.record["error"] = self.record["error"] or {"message": "canceled"}
            for step in self.record["steps"]:
                if step["status"] in ("NotStarted", "Running"):
                    step["status"] = (
                        "Canceled" if step["status"] == "Running" or self._canceled else "NotStarted"
                    )
            self.record.update(status=final_status, ended=runs.now())
            client.set_terminated(parent.info.run_id, status=_mlflow_status(final_status))
            self._save()
            self._discard_hosts()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return self.record

    # ---- steps ----------------------------------------------------------------------------------
    def _run_step(self, index: int, step: StepPlan, client: Any, experiment_id: str, parent_id: str) -> None:
        if self._canceled:
            raise KeyboardInterrupt
        info = self.record["steps"][index]
        self._prestart(index + 1)
        info.update(status="Running", started=runs.now())
        self._save()
        self._say(f"[{index + 1}/{len(self.plan.steps)}] {step.name} ({_step_type(step)}) running")
        child = client.create_run(
            experiment_id,
            run_name=f"{self.run_id}:{step.name}",
            tags={"mlflow.parentRunId": parent_id, "amlops.step": step.name, "amlops.run_id": self.run_id},
        )
        log_path = self.folder / "logs" / f"{step.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        outputs = {name: self.folder / "outputs" / name for name in step.outputs}
        started = time.monotonic()
        reuse_key = reuse.reuse_key(step, self.params, self._path_of) if step.allow_reuse else None
        try:
            if reuse_key and reuse.restore(reuse_key, outputs):
                info["reused"] = True
                reuse.log_reused_metrics(reuse_key, client, child.info.run_id)
                if step.name in self._hosts:
                    self._hosts.pop(step.name).discard()
                log_path.write_text(
                    f"reused the outputs of an earlier identical run (key {reuse_key[:12]})\n"
                )
            else:
                for folder in outputs.values():
                    if folder.exists():
                        shutil.rmtree(folder)
                    folder.mkdir(parents=True)
                self._dispatch(step, outputs, log_path, child.info.run_id)
                if reuse_key:
                    reuse.store(reuse_key, outputs, _run_metrics(client, child.info.run_id), self.run_id)
        except BaseException as exc:
            for folder in outputs.values():  # no half-written outputs
                shutil.rmtree(folder, ignore_errors=True)
            status = "Canceled" if isinstance(exc, KeyboardInterrupt) or self._canceled else "Failed"
            info.update(
                status=status,
                ended=runs.now(),
                seconds=round(time.monotonic() - started, 2),
                log=str(log_path),
            )
            client.set_terminated(child.info.run_id, status=_mlflow_status(status))
            self._save()
            if isinstance(exc, StepFailed):
                self._say(f"    {step.name} failed: {exc.message} (log: {log_path})")
            raise
        seconds = round(time.monotonic() - started, 2)
        metrics = _run_metrics(client, child.info.run_id)
        self.record["metrics"].update(metrics)
        info.update(status="Completed", ended=runs.now(), seconds=seconds, log=str(log_path))
        self.record["outputs"].update({k: str(v) for k, v in outputs.items()})
        client.set_terminated(child.info.run_id, status="FINISHED")
        self._save()
        reused = " (reused)" if info.get("reused") else ""
        self._say(f"    {step.name} completed in {seconds:.1f} s{reused}")

    # ---- data, parameters, environment ----------------------------------------------------------

    # ---- reuse (allow_reuse) --------------------------------------------------------------------

    # ---- plumbing -------------------------------------------------------------------------------

    def _save(self) -> None:
        runs.write_record(self.run_id, self.record)

    def _say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)


def run_plan(
    request: RunRequest, out: TextIO | None = None, on_start: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Execute a plan now and return its final run record."""
    local = LocalRun(request, out=out)
    if on_start is not None:
        on_start(local.run_id)
    return local.execute()


def _run_metrics(client: Any, run_id: str) -> dict[str, float]:
    return dict(client.get_run(run_id).data.metrics)


def _mlflow_status(status: str) -> str:
    return {"Completed": "FINISHED", "Failed": "FAILED", "Canceled": "KILLED"}.get(status, "FAILED")


def _step_type(step: StepPlan) -> str:
    if getattr(step, "model_format", None) == "mlflow":
        return "automl node"
    return {
        "script": "PythonScriptStep",
        "command": "command node",
        "automl": "AutoMLStep",
        "parallel_run": "ParallelRunStep",
    }[step.kind]


def in_main_thread() -> bool:
    """Whether this is the main thread (only it may install signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()
