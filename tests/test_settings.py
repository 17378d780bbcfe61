"""Settings: --set names and types, environment variables, validation."""

from __future__ import annotations

import pytest

from pipelines.errors import UserError
from pipelines.settings import Settings, load_settings, parse_assignments


def test_overrides_are_typed() -> None:
    s = Settings().with_overrides({"timeout_minutes": "3", "label": "y", "n_cross_validations": "5"})
    assert (s.timeout_minutes, s.label, s.n_cross_validations) == (3, "y", 5)


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        ({"nope": "1"}, "unknown setting 'nope'"),
        ({"timeout_minutes": "soon"}, "timeout_minutes expects an integer"),
        ({"task": "clustering"}, "task 'clustering' is not supported"),
        ({"cutoff_date": "last tuesday"}, "is not a date"),
        ({"n_cross_validations": "1"}, "at least 2"),
        ({"mini_batch_size": "0"}, "mini_batch_size must be more than 0, got '0'"),
        ({"mini_batch_size": "0KB"}, "mini_batch_size must be more than 0, got '0KB'"),
        ({"mini_batch_size": "1XB"}, "is not a size"),
    ],
)
def test_bad_overrides_raise_user_errors(assignments: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        Settings().with_overrides(assignments)


def test_positive_mini_batch_sizes_pass() -> None:
    assert Settings().with_overrides({"mini_batch_size": "10"}).mini_batch_size == "10"
    assert Settings().with_overrides({"mini_batch_size": "64KB"}).mini_batch_size == "64KB"


def test_environment_variables_set_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMLOPS_MODEL_NAME", "other-model")
    assert load_settings().model_name == "other-model"


def test_a_bad_environment_variable_is_named_with_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMLOPS_MODEL_NAME", "other-model")
    monkeypatch.setenv("AMLOPS_ITERATIONS", "abc")
    with pytest.raises(UserError) as caught:
        load_settings()
    assert caught.value.message.startswith("AMLOPS_ITERATIONS: setting iterations expects an integer")
    assert caught.value.hint == "fix or unset AMLOPS_ITERATIONS (in the environment or the .env file)"


def test_metric_defaults_by_task() -> None:
    assert Settings().metric == "normalized_root_mean_squared_error"
    assert Settings(task="classification").metric == "AUC_weighted"


def test_assignment_syntax() -> None:
    assert parse_assignments(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(UserError, match="--set expects NAME=VALUE"):
        parse_assignments(["novalue"])
    with pytest.raises(UserError, match="--param expects NAME=VALUE, got 'cutoff_date'"):
        parse_assignments(["cutoff_date"], "--param")
