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


def test_dotenv_follows_dotenv_rules(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import settings

    (tmp_path / ".env").write_text(
        "export AMLOPS_TASK=classification\nAMLOPS_LABEL=cnt2  # the label\nAMLOPS_MODEL_NAME='m1'\n"
    )
    monkeypatch.setattr(settings, "PROJECT_ROOT", tmp_path)
    s = load_settings({"AMLOPS_MODEL_NAME": "from-env"})
    assert (s.task, s.label, s.model_name) == ("classification", "cnt2", "from-env")  # the environment wins


def test_every_setting_has_a_group_and_a_description_and_help_lists_a_pipelines_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipelines import batch_score, train

    described = Settings.describe()
    assert len(described) == len(Settings().as_dict())
    assert all(text and "\n" not in text for _, _, text in described)
    for module, present, absent in (
        (train, "timeout_minutes (default 1): AutoML's time budget", "mini_batch_size"),
        (batch_score, "mini_batch_size (default '1MB'): ParallelRunStep mini-batch size", "timeout_minutes"),
    ):
        with pytest.raises(SystemExit):
            module.main(["run", "--help"])
        out = capsys.readouterr().out
        assert present in out and absent not in out
