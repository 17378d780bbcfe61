"""How the local engine runs each kind of step but the ParallelRunStep (parallel_step.py): a
PythonScriptStep or an SDK v2 command as a process in its source directory, an AutoML step on FLAML
(pipelines.local.runtime.automl)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from pipelines.core.plan import AutoMLStepPlan, CommandStepPlan, ParallelRunStepPlan, ScriptStepPlan, StepPlan
from pipelines.local.runtime.step_data import remove_path
from pipelines.local.runtime.step_process import StepFailed, command_argv
from pipelines.settings import PROJECT_ROOT


class StepKinds:
    """Dispatch of a LocalRun's step to the code that runs its kind."""

    def _dispatch(self, step: StepPlan, outputs: dict[str, Path], log_path: Path, mlflow_run_id: str) -> None:
        env = self._step_env(mlflow_run_id)
        if isinstance(step, ScriptStepPlan):
            self._script(step, outputs, env, log_path)
        elif isinstance(step, CommandStepPlan):
            self._command(step, env, log_path)
        elif isinstance(step, AutoMLStepPlan):
            self._automl(step, outputs, env, log_path)
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

    def _script(self, step: ScriptStepPlan, outputs: dict[str, Path], env: dict, log_path: Path) -> None:
        """A PythonScriptStep: its script run in its source directory, its outputs uploaded as on Azure."""
        for name, source in step.upload_sources.items():
            if not Path(source).is_absolute() and (step.source_directory / source).exists():
                raise StepFailed(
                    step.name, 2,
                    f"output {name!r} is uploaded from {source}, which is already in the source directory: the"
                    " local engine runs the script there and would move it into the output; rename one",
                )  # fmt: skip
        copies = self._downloaded_inputs(step)
        names = list(step.variables)
        env.update(zip(names, self._resolve_args([step.variables[n] for n in names], copies), strict=True))
        try:
            argv = [sys.executable, step.script_name, *self._resolve_args(step.arguments, copies)]
            host = self._hosts.pop(step.name, None)
            self._subprocess(step.name, argv, step.source_directory, env, log_path, host)
            self._upload(step, outputs)
        finally:
            shutil.rmtree(self.folder / "inputs" / step.name, ignore_errors=True)
            for source in step.upload_sources.values():  # working files in the source directory go
                if not Path(source).is_absolute():
                    remove_path(step.source_directory / source)

    def _automl(self, step: AutoMLStepPlan, outputs: dict[str, Path], env: dict, log_path: Path) -> None:
        """An AutoML step: pipelines.local.runtime.automl run as a process with the step's settings."""
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
