"""AutoMLStep/AutoMLConfig as a v2 AutoML pipeline node (regression, classification, forecasting)."""

from __future__ import annotations

from typing import Any

from pipelines.core.plan import AutoMLStepPlan, Plan
from pipelines.v2.documents import AUTOML_TASKS, Context, Translation, UnsupportedConstruct
from pipelines.v2.nodes import binding, node_compute


def automl_node(step: AutoMLStepPlan, plan: Plan, producers: dict[str, str], ctx: Context,
                 out: Translation) -> dict[str, Any]:  # fmt: skip
    """AutoMLStep -> an AutoML node with its task, metric, label, limits, training and featurization."""
    s = step.settings
    if s.task not in AUTOML_TASKS:
        raise UnsupportedConstruct(
            f"step {step.name!r}: AutoML task {s.task!r} has no v2 pipeline node here; use one of {', '.join(AUTOML_TASKS)}"
        )
    limits: dict[str, Any] = {"enable_early_termination": bool(s.enable_early_stopping)}
    if s.experiment_timeout_minutes:
        limits["timeout_minutes"] = int(s.experiment_timeout_minutes)
        if s.experiment_timeout_minutes < 15:
            out.differences.append(
                f"step {step.name}: timeout_minutes={s.experiment_timeout_minutes} is under Azure AutoML's 15-minute"
                " minimum; the service will refuse it (raise it with --set timeout_minutes=15)"
            )
    if s.iterations:
        limits["max_trials"] = int(s.iterations)
    node: dict[str, Any] = {
        "type": "automl",
        "task": s.task,
        "primary_metric": s.primary_metric or None,
        "target_column_name": s.label_column_name,
        "training_data": binding(step.training_data, plan, producers),
        "limits": limits,
        "featurization": {"mode": getattr(s, "featurization", None) or "auto"},
        "outputs": {
            "best_model": {"type": "mlflow_model"}
        },  # written `type:` (1.35.2 dumps job_output_type:)
        **node_compute(step, ctx),
    }
    if not node["primary_metric"]:
        node.pop("primary_metric")
    if s.n_cross_validations:
        node["n_cross_validations"] = int(s.n_cross_validations)
    training: dict[str, Any] = {
        "enable_stack_ensemble": s.enable_ensemble,
        "enable_vote_ensemble": s.enable_ensemble,
    }
    if s.allowed_models:
        training["allowed_training_algorithms"] = list(s.allowed_models)
    if s.blocked_models:
        training["blocked_training_algorithms"] = list(s.blocked_models)
    node["training"] = training
    if s.task == "forecasting":
        forecasting = {"time_column_name": s.time_column_name, "forecast_horizon": s.forecast_horizon}
        if s.freq:
            forecasting["frequency"] = s.freq
        if s.target_lags:
            forecasting["target_lags"] = s.target_lags if isinstance(s.target_lags, list) else [s.target_lags]
        node["forecasting"] = {k: v for k, v in forecasting.items() if v is not None}
    out.mapped.append(
        f"step {step.name} (AutoMLStep) -> automl node: task {s.task}, primary_metric, target_column_name,"
        " limits (timeout_minutes, max_trials, enable_early_termination), n_cross_validations, training"
        " (allowed/blocked algorithms, ensembles), featurization; TrainingOutput(Model) -> best_model (mlflow_model)"
    )
    out.differences.append(
        f"step {step.name}: v2 AutoML reads MLTable data and writes an MLflow model (best_model); it has no"
        " Metrics output"
    )
    if not step.allow_reuse:
        out.differences.append(
            f"step {step.name}: allow_reuse=False has no v2 counterpart (an AutoML node has no is_deterministic);"
            " the local engine reuses an unchanged AutoML node"
        )
    return node
