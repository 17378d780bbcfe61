"""How the local engine runs a ParallelRunStep: its options resolved, its input cut into mini-batches by
the local ParallelRunStep engine (pipelines.local.parallel_run), its summary kept in the run record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.core import defaults
from pipelines.core.plan import ParallelRunStepPlan, ParamRef
from pipelines.errors import UserError
from pipelines.local.runtime.step_process import StepFailed
from pipelines.local.workspace import registry


class ParallelStep:
    """The ParallelRunStep side of a LocalRun."""

    def _parallel_run(
        self, step: ParallelRunStepPlan, outputs: dict[str, Path], env: dict, log_path: Path
    ) -> None:
        from pipelines.local.parallel_run.job import run_parallel
        from pipelines.local.parallel_run.options import failure_summary

        data_inputs = [i for i in step.inputs if i in step.input_kinds]
        if len(data_inputs) != 1 or len(step.outputs) != 1:
            raise StepFailed(
                step.name, 2, "the local engine runs a ParallelRunStep with one input and one output"
            )
        options = self._parallel_options(step, data_inputs[0])
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

    def _parallel_options(self, step: ParallelRunStepPlan, data_input: str) -> Any:
        """The step's ParallelRunConfig as the local ParallelRunStep engine's options, parameters resolved."""
        from pipelines.local.parallel_run.options import ParallelRunOptions

        opts = step.options
        # every registered model, laid out for Model.get_model_path as inside an Azure ML job
        step_env = {**opts.get("environment_variables", {}), **registry.mlflow_env()}
        step_env["AML_APP_ROOT"] = str(registry.workspace_models_root())
        step_env["AMLOPS_RUN_ID"] = self.run_id
        return ParallelRunOptions(
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
            input_kind=step.input_kinds[data_input],
            partition_keys=self._partition_keys(step.name, opts.get("partition_keys")),
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
