"""A tiny published-pipeline stand-in for service tests and benchmarks: one real PythonScriptStep.

It is built from the same SDK classes as the real pipelines (PipelineParameter, PythonScriptStep,
a FileDataset input, OutputFileDatasetConfig) and runs through the same ``run`` verb, engine, run
records and MLflow store; only the work is tiny (count the rows, optionally sleep
``AMLOPS_TINY_SLEEP`` seconds). Parameters: ``label`` (str) and ``seed`` (int).

python -m tests.tiny_pipeline run|show|publish ...
"""

from __future__ import annotations

from pathlib import Path

from pipelines.cli import exit_now, pipeline_cli
from pipelines.core.definition import PipelineDefinition
from pipelines.definitions import dataset_input, recurrence, run_config
from pipelines.settings import Settings

NAME = "amlops-tiny"
STEPS_DIR = Path(__file__).resolve().parent / "tiny_steps"


def build(settings: Settings, data: str | None = None) -> PipelineDefinition:
    """One step: count the dataset's rows."""
    from azureml.data import OutputFileDatasetConfig
    from azureml.pipeline.core import PipelineParameter
    from azureml.pipeline.steps import PythonScriptStep

    params = {
        "label": PipelineParameter("label", default_value=settings.label),
        "seed": PipelineParameter("seed", default_value=settings.seed),
    }
    raw = dataset_input("raw_data", data or settings.dataset, "tiny_dataset")
    out = OutputFileDatasetConfig(name="counted")
    step = PythonScriptStep(
        name="count",
        script_name="count.py",
        source_directory=str(STEPS_DIR),
        arguments=["--raw_data", raw, "--label", params["label"], "--seed", params["seed"], "--out", out],
        compute_target=settings.compute_name,
        runconfig=run_config("train"),
        allow_reuse=False,
    )
    return PipelineDefinition(
        name=NAME,
        description="Tiny pipeline: count rows",
        steps=[step],
        parameters=params,
        experiment_name=settings.experiment_name,
        schedule=recurrence(settings),
        settings=settings,
        module="tests.tiny_pipeline",
        dataset_param="tiny_dataset",
    )


def main(argv: list[str] | None = None) -> int:
    return pipeline_cli(prog="python -m tests.tiny_pipeline", doc=__doc__, build=build, argv=argv)


if __name__ == "__main__":
    exit_now(main())
