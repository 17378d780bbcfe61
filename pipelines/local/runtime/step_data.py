"""Data, parameters and environment of a local step: dataset bindings, as_download() copies, outputs
uploaded from the script's own paths, arguments resolved, and the environment a step process sees."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pipelines.core.plan import DataRef, ParamRef, ScriptStepPlan
from pipelines.errors import UserError
from pipelines.local.parallel_run import SHIMS_DIR
from pipelines.local.runtime.step_process import StepFailed
from pipelines.local.workspace import registry
from pipelines.settings import amlops_home


class StepData:
    """The data side of a LocalRun: where each input and output lives and what a step's process is given."""

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


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
