"""The local pipeline engine: runs a Plan (from the SDK adapter) step by step on this machine.

PythonScriptSteps run as subprocesses in their source directory with PipelineParameters resolved
and data passed as folder paths; the AutoML step runs on FLAML (pipelines.local.runtime.automl); a
ParallelRunStep runs on the local ParallelRunStep engine. Every run gets a folder (runs.py) and an
MLflow parent run with a child run per step in the local SQLite store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pipelines.core import defaults
from pipelines.core.params import ParameterTypeError, coerce, type_phrase
from pipelines.core.plan import (
    AutoMLStepPlan,
    CommandStepPlan,
    DataRef,
    ParallelRunStepPlan,
    ParamRef,
    Plan,
    ScriptStepPlan,
    StepPlan,
)
from pipelines.errors import UserError
from pipelines.local.parallel_run import SHIMS_DIR  # noqa: E402
from pipelines.local.runtime import runs, warm
from pipelines.local.workspace import registry
from pipelines.settings import PROJECT_ROOT, amlops_home


class StepFailed(Exception):
    """A step ended with a non-zero exit status."""

    def __init__(self, step: str, exit_code: int, message: str) -> None:
        super().__init__(f"step {step} failed: {message}")
        self.step = step
        self.exit_code = exit_code
        self.message = message


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


class LocalRun:
    """One execution of a plan; ``execute()`` returns the final run record."""

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
        reuse_key = self._reuse_key(step) if step.allow_reuse else None
        try:
            if reuse_key and self._reuse(reuse_key, outputs):
                info["reused"] = True
                self._log_reused_metrics(reuse_key, client, child.info.run_id)
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
                    self._store_reuse(reuse_key, outputs, _run_metrics(client, child.info.run_id))
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

    def _dispatch(self, step: StepPlan, outputs: dict[str, Path], log_path: Path, mlflow_run_id: str) -> None:
        env = self._step_env(mlflow_run_id)
        if isinstance(step, ScriptStepPlan):
            for name, source in step.upload_sources.items():
                if not Path(source).is_absolute() and (step.source_directory / source).exists():
                    raise StepFailed(
                        step.name, 2,
                        f"output {name!r} is uploaded from {source}, which is already in the source directory: the"
                        " local engine runs the script there and would move it into the output; rename one",
                    )  # fmt: skip
            copies = self._downloaded_inputs(step)
            names = list(step.variables)
            env.update(
                zip(names, self._resolve_args([step.variables[n] for n in names], copies), strict=True)
            )
            try:
                argv = [sys.executable, step.script_name, *self._resolve_args(step.arguments, copies)]
                host = self._hosts.pop(step.name, None)
                self._subprocess(step.name, argv, step.source_directory, env, log_path, host)
                self._upload(step, outputs)
            finally:
                shutil.rmtree(self.folder / "inputs" / step.name, ignore_errors=True)
                for source in step.upload_sources.values():  # working files in the source directory go
                    if not Path(source).is_absolute():
                        _remove(step.source_directory / source)
        elif isinstance(step, CommandStepPlan):
            self._command(step, env, log_path)
        elif isinstance(step, AutoMLStepPlan):
            settings = json.dumps(step.settings.__dict__, default=str)
            metrics = (
                outputs[step.metrics_output]
                if step.metrics_output
                else self.folder / "outputs" / f"{step.name}.metrics"
            )
            argv = [
                sys.executable, "-m", "pipelines.local.runtime.automl",
                "--settings", settings,
                "--training-data", str(self._path_of(step.training_data)),
                "--model-out", str(outputs[step.model_output]),
                "--metrics-out", str(metrics),
                "--model-format", step.model_format,
                "--step-name", step.name,
            ]  # fmt: skip
            if step.validation_data:
                argv += ["--validation-data", str(self._path_of(step.validation_data))]
            self._subprocess(step.name, argv, PROJECT_ROOT, env, log_path)
        elif isinstance(step, ParallelRunStepPlan):
            self._parallel_run(step, outputs, env, log_path)
        else:  # pragma: no cover - the adapter only builds the three kinds
            raise StepFailed(step.name, 1, f"unsupported step kind {step.kind}")

    def _command(self, step: CommandStepPlan, env: dict, log_path: Path) -> None:
        """An SDK v2 command: its template with inputs and outputs substituted, run in its code folder."""
        copies = self._downloaded_inputs(step)
        names = list(step.variables)
        env.update(zip(names, self._resolve_args([step.variables[n] for n in names], copies), strict=True))
        # ``python`` in the command is this environment's interpreter, as the node's environment's is on Azure
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        try:
            line = "".join(self._resolve_args(step.command, copies))
            argv = command_argv(line)
            host = self._hosts.pop(step.name, None) if argv[0] == sys.executable else None
            self._subprocess(step.name, argv, step.source_directory, env, log_path, host)
        finally:
            shutil.rmtree(self.folder / "inputs" / step.name, ignore_errors=True)

    def _parallel_run(
        self, step: ParallelRunStepPlan, outputs: dict[str, Path], env: dict, log_path: Path
    ) -> None:
        from pipelines.local.parallel_run.job import run_parallel
        from pipelines.local.parallel_run.options import ParallelRunOptions, failure_summary

        data_inputs = [i for i in step.inputs if i in step.input_kinds]
        if len(data_inputs) != 1 or len(step.outputs) != 1:
            raise StepFailed(
                step.name, 2, "the local engine runs a ParallelRunStep with one input and one output"
            )
        opts = step.options
        # every registered model, laid out for Model.get_model_path as inside an Azure ML job
        step_env = {**opts.get("environment_variables", {}), **registry.mlflow_env()}
        step_env["AML_APP_ROOT"] = str(registry.workspace_models_root())
        step_env["AMLOPS_RUN_ID"] = self.run_id
        options = ParallelRunOptions(
            entry_script=step.entry_script,
            source_directory=str(step.source_directory),
            mini_batch_size=str(self._resolve_args([opts["mini_batch_size"]])[0])
            if opts["mini_batch_size"]
            else None,
            error_threshold=opts["error_threshold"]
            if opts["error_threshold"] is not None
            else defaults.PRS_ERROR_THRESHOLD,
            allowed_failed_count=opts["allowed_failed_count"],
            allowed_failed_percent=opts["allowed_failed_percent"],
            run_max_try=opts["run_max_try"] or defaults.PRS_RUN_MAX_TRY,
            run_invocation_timeout=opts["run_invocation_timeout"] or defaults.PRS_RUN_INVOCATION_TIMEOUT,
            node_count=int(self._resolve_args([opts["node_count"]])[0]) if opts["node_count"] else 1,
            process_count_per_node=(
                int(self._resolve_args([opts["process_count_per_node"]])[0])
                if opts["process_count_per_node"]
                else None
            ),
            output_action=opts["output_action"] or "append_row",
            append_row_file_name=opts["append_row_file_name"],
            environment_variables=step_env,
            arguments=tuple(self._resolve_args(step.arguments)),
            input_kind=step.input_kinds[data_inputs[0]],
            partition_keys=self._partition_keys(step.name, opts.get("partition_keys")),
        )
        report_dir = self.folder / "outputs" / f"{step.name}-report"
        try:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"ParallelRunStep {step.name}: {options}\n")
            result = run_parallel(
                options,
                self._batch_inputs(step, data_inputs[0]),
                outputs[step.outputs[0]],
                report_dir,
                progress=self.out is not None,
                canceled=lambda: self._canceled,
            )
        except UserError as exc:
            raise StepFailed(step.name, 2, str(exc)) from None
        summary = result.to_dict()
        self.record.setdefault("parallel_run", {})[step.name] = summary
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(summary, indent=2, default=str) + "\n")
        if not result.succeeded:
            self._say(failure_summary(result))
            raise StepFailed(step.name, 1, result.message)
        self._say(
            f"    {step.name}: {result.result_rows} rows from {result.mini_batches} mini-batches "
            f"at {result.rows_per_second:,.0f} rows/s with {result.workers} workers"
        )

    def _batch_inputs(self, step: ParallelRunStepPlan, name: str) -> list[Path]:
        """The paths a parallel step cuts into mini-batches: an MLTable folder's files (as CSV when they are
        not plain comma-separated files with a header), else the input itself."""
        from pipelines.local.runtime import mltable

        path = self._path_of(name)
        if step.input_kinds.get(name) != "tabular" or not mltable.is_mltable(path):
            return [path]
        try:
            plain = mltable.plain_csv_files(path)
            if plain is not None:
                return plain
            target = self.folder / "inputs" / step.name / name / "data.csv"
            target.parent.mkdir(parents=True, exist_ok=True)
            mltable.read(path).to_csv(target, index=False)
        except mltable.MLTableError as exc:
            raise StepFailed(step.name, 2, str(exc)) from None
        return [target]

    def _partition_keys(self, step_name: str, value: Any) -> tuple[str, ...]:
        """ParallelRunConfig's partition_keys: a list, or a PipelineParameter holding its JSON."""
        if isinstance(value, ParamRef):
            text = self._resolve_args([value])[0]
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if not isinstance(value, list):
                raise StepFailed(
                    step_name, 2, f"partition_keys must be the JSON of a list of column names, got {text!r}"
                )
        return tuple(value or ())

    def _prestart(self, index: int) -> None:
        """Start a warm interpreter for step ``index`` if it is a script step (see warm.py)."""
        if index >= len(self.plan.steps) or self._canceled:
            return
        step = self.plan.steps[index]
        script = step.script_name if isinstance(step, ScriptStepPlan) else _command_script(step)
        if script and step.name not in self._hosts:
            env = self._step_env("")
            del env["MLFLOW_RUN_ID"]
            host = warm.WarmHost.for_script(Path(step.source_directory) / script, env)
            if host is not None:
                self._hosts[step.name] = host

    def _discard_hosts(self) -> None:
        for host in self._hosts.values():
            host.discard()
        self._hosts.clear()

    def _subprocess(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        env: dict,
        log_path: Path,
        host: warm.WarmHost | None = None,
    ) -> None:
        if self._canceled:  # SIGTERM came between the step's start and its process
            if host is not None:
                host.discard()
            raise KeyboardInterrupt
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            proc = host.launch(argv[1:], cwd, env) if host is not None else None
            if proc is None:
                proc = subprocess.Popen(
                    argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    start_new_session=True, bufsize=1,
                )  # fmt: skip
            self._child = proc
            if self._canceled:  # SIGTERM came while the process was being started
                self._on_term(signal.SIGTERM, None)
            last_error = ""
            tail: list[str] = []
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                text = line.rstrip()
                if text.startswith("error:"):
                    last_error = text[len("error:") :].strip()
                if text:
                    tail = (tail + [text])[-5:]
                if text.startswith(f"{name}:"):
                    self._say("    " + text)
            code = proc.wait()
            self._child = None
        if self._canceled:
            raise KeyboardInterrupt
        if code != 0:
            message = last_error or (tail[-1] if tail else f"exit status {code}")
            if code < 0:  # killed (e.g. out of memory): the last line it printed is not the reason
                killer = (
                    signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
                )
                message = f"killed by signal {killer}" + (f" (its last line: {tail[-1]})" if tail else "")
            raise StepFailed(name, code, message)

    # ---- data, parameters, environment ----------------------------------------------------------
    def _bind_datasets(self, overrides: dict[str, Path]) -> dict[str, Path]:
        from pipelines import datasets

        bound: dict[str, Path] = {}
        for name, source in self.plan.datasets.items():
            if name in overrides:
                bound[name] = Path(overrides[name]).resolve()
                continue
            if len(source.paths) != 1:
                raise UserError(f"dataset input {name!r} has {len(source.paths)} paths; bind it with --data")
            bound[name] = datasets.resolve(source.paths[0])
        return bound

    def _upload(self, step: ScriptStepPlan, outputs: dict[str, Path]) -> None:
        """Take what the script wrote at its outputs' own paths (``output_path_on_compute``, ``source``) into
        the outputs, as Azure uploads them when the script ends: moved from the working directory (a relative
        path), copied from an absolute path (on this machine it may hold the user's own files)."""
        for name, source in step.upload_sources.items():
            written = step.source_directory / source  # a relative path is in the working directory
            if not written.exists():
                raise StepFailed(
                    step.name, 1, f"output {name!r} is uploaded from {source}, where the script wrote nothing"
                )
            keep = Path(source).is_absolute()
            for child in written.iterdir() if written.is_dir() else [written]:
                if keep:
                    copy = shutil.copytree if child.is_dir() else shutil.copy2
                    copy(child, outputs[name] / child.name)
                else:
                    shutil.move(str(child), outputs[name] / child.name)

    def _downloaded_inputs(self, step: ScriptStepPlan) -> dict[str, Path]:
        """Private copies of the step's ``as_download()`` dataset inputs, as Azure downloads one for each step:
        a script that tidies its input folder does not touch the user's data or another step's view of it."""
        copies: dict[str, Path] = {}
        for name in step.inputs:
            source = self.plan.datasets.get(name)
            if source is None or source.mode != "download":
                continue
            original = self._path_of(name)
            target = self.folder / "inputs" / step.name / name / original.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if original.is_dir():
                shutil.copytree(original, target)
            else:
                shutil.copy2(original, target)
            copies[name] = target
        return copies

    def _path_of(self, name: str) -> Path:
        if name in self.data_paths:
            return self.data_paths[name]
        return self.folder / "outputs" / name

    def _resolve_args(self, arguments: list[Any], paths: dict[str, Path] | None = None) -> list[str]:
        out = []
        for arg in arguments:
            if isinstance(arg, ParamRef):
                value = self.params[arg.name]
                out.append(str(value).lower() if isinstance(value, bool) else str(value))
            elif isinstance(arg, DataRef):
                out.append(str((paths or {}).get(arg.name) or self._path_of(arg.name)))
            else:
                out.append(str(arg))
        return out

    def _step_env(self, mlflow_run_id: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(registry.mlflow_env())
        env.update(
            MLFLOW_RUN_ID=mlflow_run_id,
            AMLOPS_RUN_ID=self.run_id,
            AMLOPS_HOME=str(amlops_home()),
            PYTHONUNBUFFERED="1",
            # as on Azure, a step sees its own source directory (and azureml_user), not this project
            PYTHONPATH=os.pathsep.join(p for p in (str(SHIMS_DIR), os.environ.get("PYTHONPATH", "")) if p),
        )
        return env

    # ---- reuse (allow_reuse) --------------------------------------------------------------------
    def _reuse_key(self, step: StepPlan) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps([step.kind, step.name], default=str).encode())
        source = getattr(step, "source_directory", None)
        if source is not None:
            for path in _snapshot_files(Path(source)):
                digest.update(str(path.relative_to(source)).encode())
                digest.update(path.read_bytes())
        digest.update(json.dumps(self._resolve_args_for_key(step), default=str).encode())
        for name in step.inputs:
            digest.update(name.encode())
            digest.update(_content_hash(self._path_of(name)).encode())
        return digest.hexdigest()

    def _resolve_args_for_key(self, step: StepPlan) -> list[str]:
        return self._resolve_args_for_key_values(getattr(step, "arguments", [])) + [
            json.dumps(
                getattr(step, "settings", {}).__dict__ if hasattr(step, "settings") else {}, default=str
            ),
            json.dumps(self._config_for_key(step), default=str, sort_keys=True),
        ]

    def _resolve_args_for_key_values(self, args: list[Any]) -> list[str]:
        """Arguments as the reuse key sees them: data by name (its content is hashed apart), parameters by value."""
        return [
            f"data:{a.name}"
            if isinstance(a, DataRef)
            else str(self.params[a.name])
            if isinstance(a, ParamRef)
            else a
            for a in args
        ]

    def _config_for_key(self, step: StepPlan) -> dict[str, Any]:
        """What a step runs and how, besides its arguments: changing it means a new run, not a reused one."""
        if isinstance(step, ScriptStepPlan):
            names = sorted(step.variables)
            values = self._resolve_args_for_key_values([step.variables[n] for n in names])
            return {"script_name": step.script_name, "variables": dict(zip(names, values, strict=True))}
        if isinstance(step, AutoMLStepPlan) and step.model_format != "pickle":
            return {"model_format": step.model_format, "validation_data": step.validation_data}
        if isinstance(step, CommandStepPlan):
            names = sorted(step.variables)
            values = self._resolve_args_for_key_values([step.variables[n] for n in names])
            command = self._resolve_args_for_key_values(step.command)
            return {"command": command, "variables": dict(zip(names, values, strict=True))}
        if isinstance(step, ParallelRunStepPlan):
            options = {
                k: self.params[v.name] if isinstance(v, ParamRef) else v for k, v in step.options.items()
            }
            return {"entry_script": step.entry_script, "input_kinds": step.input_kinds, "options": options}
        return {}

    def _reuse(self, key: str, outputs: dict[str, Path]) -> bool:
        cache = amlops_home() / "reuse" / key
        if not (cache / "complete").is_file():
            return False
        for name, folder in outputs.items():
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(cache / name, folder)
        return True

    def _log_reused_metrics(self, key: str, client: Any, run_id: str) -> None:
        """The metrics the reused run logged, logged again to this step's run (as its record shows them)."""
        saved = amlops_home() / "reuse" / key / "metrics.json"
        metrics = json.loads(saved.read_text()) if saved.is_file() else {}
        for name, value in metrics.items():
            client.log_metric(run_id, name, value)

    def _store_reuse(self, key: str, outputs: dict[str, Path], metrics: dict[str, float]) -> None:
        """Keep a step's outputs for later identical runs: built in a folder of this run's own, then renamed,
        so two runs storing the same key at once cannot mix their files (the later rename wins)."""
        cache = amlops_home() / "reuse" / key
        tmp = cache.with_name(f"{key}.partial-{self.run_id}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)  # a step without outputs is reused too: the key alone says it ran
        for name, folder in outputs.items():
            shutil.copytree(folder, tmp / name)
        (tmp / "metrics.json").write_text(json.dumps(metrics))
        (tmp / "complete").write_text(runs.now())
        shutil.rmtree(cache, ignore_errors=True)
        try:
            os.replace(tmp, cache)
        except OSError:  # another run stored the same outputs in the meantime: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- plumbing -------------------------------------------------------------------------------
    def _on_term(self, signum: int, frame: Any) -> None:
        self._canceled = True
        if self._child is not None and self._child.poll() is None:
            try:
                os.killpg(self._child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

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


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _snapshot_files(source: Path) -> list[Path]:
    """The files of a step's source directory that make its snapshot, as Azure hashes it for ``allow_reuse``:
    all but those its ``.amlignore`` (else ``.gitignore``) excludes, read with the SDK's own rules. Compiled
    files and the local workspace (when it lies inside the source directory) are not part of it either."""
    from azureml._project.ignore_file import get_project_ignore_file

    ignore = get_project_ignore_file(str(source))
    home = amlops_home().resolve()
    files = []
    for path in sorted(source.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or home in path.resolve().parents:
            continue
        if not ignore.is_file_excluded(str(path.relative_to(source))):
            files.append(path)
    return files


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = (
        sorted(p for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else [path]
        if path.exists()
        else []
    )
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


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


SHELL_SYNTAX = set("|&;<>()$`\\\"'*?[]#~{}\n")


def command_argv(line: str) -> list[str]:
    """How to run a command line: ``python x.py ...`` with this interpreter when it is that plain, else the
    shell (``bash -c``), as Azure runs a command job's command."""
    import shlex

    words = line.split()
    if words and words[0] in ("python", "python3") and not (set(line) & SHELL_SYNTAX):
        return [sys.executable, *shlex.split(line)[1:]]
    return ["bash", "-c", line]


def _command_script(step: StepPlan) -> str | None:
    """The script a command step runs with ``python`` when its command is that plain (for a warm start)."""
    if not isinstance(step, CommandStepPlan):
        return None
    line = "".join(p if isinstance(p, str) else "x" for p in step.command)
    argv = command_argv(line)
    if argv[0] != sys.executable or len(argv) < 2 or not argv[1].endswith(".py"):
        return None
    return argv[1]


def in_main_thread() -> bool:
    """Whether this is the main thread (only it may install signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()
