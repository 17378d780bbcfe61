"""Small SDK v1 pipelines written the way Microsoft's v1 samples write them, for the v1 -> v2 exporter tests.

Each function returns a list of SDK v1 steps, as ``python -m pipelines.v2 export FILE.py:CALLABLE`` takes.
The scripts they name live beside this file (never run here: the exporter only reads the steps).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_URL = "https://example.com/samples/bike-no.csv"


def _run_config(variables: dict[str, str] | None = None):
    from azureml.core import Environment
    from azureml.core.runconfig import RunConfiguration

    config = RunConfiguration()
    config.environment = Environment.from_conda_specification(
        "amlops-train", str(HERE.parents[2] / "environments" / "train.yml")
    )
    config.environment_variables = dict(variables or {})
    return config


def prep_and_automl():
    """Tabular data -> a prep PythonScriptStep -> AutoMLStep on its read_delimited_files() output -> register."""
    from azureml.core import Dataset
    from azureml.data import OutputFileDatasetConfig
    from azureml.pipeline.core import PipelineData, PipelineParameter, TrainingOutput
    from azureml.pipeline.steps import AutoMLStep, PythonScriptStep
    from azureml.train.automl import AutoMLConfig

    raw = Dataset.Tabular.from_delimited_files(DATA_URL, validate=False, infer_column_types=False)
    threshold = PipelineParameter(name="threshold", default_value=3)
    prepped = OutputFileDatasetConfig("prepped")
    prep = PythonScriptStep(
        name="prep data",
        script_name="prep.py",
        source_directory=str(HERE / "scripts"),
        arguments=["--input", raw.as_named_input("raw_bikes"), "--threshold", threshold, "--output", prepped],
        compute_target="cpu-cluster",
        runconfig=_run_config({"LOG_LEVEL": "debug"}),
        allow_reuse=True,
    )
    metrics = PipelineData("metrics_output", training_output=TrainingOutput(type="Metrics"))
    model = PipelineData("model_output", training_output=TrainingOutput(type="Model"))
    config = AutoMLConfig(
        task="classification",
        primary_metric="AUC_weighted",
        training_data=prepped.read_delimited_files(),
        label_column_name="label",
        compute_target="cpu-cluster",
        experiment_timeout_minutes=20,
        iterations=5,
        n_cross_validations=5,
        enable_early_stopping=False,
        blocked_models=["KNN"],
        featurization="off",
    )
    train = AutoMLStep(name="automl_module", automl_config=config, outputs=[metrics, model], allow_reuse=True)
    register = PythonScriptStep(
        name="register model",
        script_name="register.py",
        source_directory=str(HERE / "scripts"),
        arguments=["--model_path", model, "--metrics", metrics],
        inputs=[model, metrics],
        compute_target="cpu-cluster",
        runconfig=_run_config(),
    )
    return [prep, train, register]


def file_batch_inference():
    """A FileDataset scored with ParallelRunStep (files per mini-batch), output PipelineData, append_row."""
    from azureml.core import Dataset, Environment
    from azureml.pipeline.core import PipelineData, PipelineParameter
    from azureml.pipeline.steps import ParallelRunConfig, ParallelRunStep

    images = Dataset.File.from_files([DATA_URL], validate=False)
    output = PipelineData(name="inferences")
    config = ParallelRunConfig(
        source_directory=str(HERE / "scripts"),
        entry_script="digit_identification.py",
        mini_batch_size=PipelineParameter(name="batch_size_param", default_value="5"),
        error_threshold=10,
        allowed_failed_count=3,
        output_action="append_row",
        append_row_file_name="mnist_outputs.txt",
        environment=Environment.from_conda_specification(
            "amlops-batch", str(HERE.parents[2] / "environments" / "batch.yml")
        ),
        compute_target="gpu-cluster",
        process_count_per_node=PipelineParameter(name="process_count_param", default_value=2),
        node_count=2,
        run_invocation_timeout=120,
        run_max_try=5,
    )
    step = ParallelRunStep(
        name="predict-digits-mnist",
        parallel_run_config=config,
        inputs=[images.as_named_input("mnist_sample_data")],
        output=output,
        arguments=["--model_name", "mnist-prs"],
        allow_reuse=False,
    )
    return [step]


def two_batched_inputs():
    """A ParallelRunStep cutting two inputs into mini-batches: v2 parallel jobs take one."""
    from azureml.core import Dataset, Environment
    from azureml.pipeline.core import PipelineData
    from azureml.pipeline.steps import ParallelRunConfig, ParallelRunStep

    first = Dataset.File.from_files([DATA_URL], validate=False)
    second = Dataset.File.from_files([DATA_URL + "?2"], validate=False)
    config = ParallelRunConfig(
        source_directory=str(HERE / "scripts"),
        entry_script="digit_identification.py",
        mini_batch_size="5",
        error_threshold=10,
        output_action="append_row",
        environment=Environment("amlops-batch"),
        compute_target="cpu-cluster",
        node_count=1,
    )
    step = ParallelRunStep(
        name="two",
        parallel_run_config=config,
        inputs=[first.as_named_input("a"), second.as_named_input("b")],
        output=PipelineData("out"),
    )
    return [step]


def command_step():
    from azureml.pipeline.steps import CommandStep

    return [
        CommandStep(
            name="shell", command="echo hi", source_directory=str(HERE / "scripts"), compute_target="cpu"
        )
    ]


def nothing():
    return []


def raises():
    raise RuntimeError("no workspace here")
