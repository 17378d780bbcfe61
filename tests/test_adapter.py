"""The SDK adapter, on real SDK v1 objects built by the pipeline builders (no Workspace, no Pipeline)."""

from __future__ import annotations

import pytest

from pipelines import batch_score, train
from pipelines.datasets import KNOWN
from pipelines.local import adapter
from pipelines.settings import Settings


def test_training_plan_orders_steps_and_resolves_arguments() -> None:
    plan = adapter.read_steps(train.build(Settings()).steps)
    assert [s.name for s in plan.steps] == ["prep", "automl", "register"]
    prep, automl, register = plan.steps
    assert isinstance(prep, adapter.ScriptStepPlan) and prep.script_name == "prep.py"
    assert prep.arguments[prep.arguments.index("--label") + 1] == adapter.ParamRef("label")
    assert prep.arguments[prep.arguments.index("--raw_data") + 1] == adapter.DataRef("raw_data")
    assert prep.outputs == ["train_data", "test_data"]
    assert prep.environment == "amlops-train" and prep.compute_target == "cpu-cluster"
    assert automl.inputs == ["train_data"] and automl.training_data == "train_data"
    assert (automl.model_output, automl.metrics_output) == ("model_data", "metrics_data")
    assert set(register.inputs) == {"model_data", "metrics_data", "test_data"}
    assert register.arguments[register.arguments.index("--test_data") + 1] == adapter.DataRef("test_data")
    assert plan.parameters["label"] == "cnt" and plan.parameters["cutoff_date"] == "2012-08-31"
    assert plan.datasets["raw_data"].paths == (KNOWN["bike-no"].url,)
    assert plan.datasets["raw_data"].mode == "download"


def test_automl_config_settings_are_mapped() -> None:
    settings = Settings().with_overrides(
        {"timeout_minutes": "7", "n_cross_validations": "4", "allowed_models": "LightGBM,RandomForest",
         "blocked_models": "RandomForest", "iterations": "12"}
    )  # fmt: skip
    automl = adapter.read_steps(train.build(settings).steps).steps[1]
    s = automl.settings
    assert (s.task, s.primary_metric, s.label_column_name) == (
        "regression",
        "normalized_root_mean_squared_error",
        "cnt",
    )
    assert (s.experiment_timeout_minutes, s.n_cross_validations, s.iterations) == (7, 4, 12)
    assert s.allowed_models == ["LightGBM", "RandomForest"] and s.blocked_models == ["RandomForest"]


def test_forecasting_parameters_are_mapped() -> None:
    settings = Settings().with_overrides({"task": "forecasting", "forecast_horizon": "14"})
    s = adapter.read_steps(train.build(settings).steps).steps[1].settings
    assert (s.task, s.time_column_name, s.forecast_horizon, s.freq) == ("forecasting", "date", 14, "D")


def test_batch_plan_reads_parallel_run_config() -> None:
    plan = adapter.read_steps(batch_score.build(Settings().with_overrides({"error_threshold": "5"})).steps)
    score, collect = plan.steps
    assert isinstance(score, adapter.ParallelRunStepPlan)
    assert score.entry_script == "scoring.py" and score.source_directory.name == "scoring"
    assert score.options["mini_batch_size"] == adapter.ParamRef("mini_batch_size")
    assert score.options["error_threshold"] == 5
    assert score.options["output_action"] == "append_row"
    assert score.options["append_row_file_name"] == "parallel_run_step.txt"
    assert (score.options["node_count"], score.options["process_count_per_node"]) == (1, 2)
    assert score.input_kinds == {"batch_input": "tabular"}
    assert score.arguments[score.arguments.index("--model_name") + 1] == adapter.ParamRef("model_name")
    assert collect.inputs == ["scores"] and plan.parameters["mini_batch_size"] == "1MB"


def test_unsupported_step_types_are_refused() -> None:
    with pytest.raises(adapter.PlanError, match="not supported locally"):
        adapter.read_steps([object()])


def test_dependency_cycle_is_detected() -> None:
    a = adapter.ScriptStepPlan("a", None, "a.py", [], ["y"], ["x"], False, None, None)  # type: ignore[arg-type]
    b = adapter.ScriptStepPlan("b", None, "b.py", [], ["x"], ["y"], False, None, None)  # type: ignore[arg-type]
    with pytest.raises(adapter.PlanError, match="cycle"):
        adapter._order(adapter.Plan(steps=[a, b]))
