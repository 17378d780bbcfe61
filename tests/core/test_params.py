"""One rule for parameter values: the engine's --set and the REST body's ParameterAssignments agree."""

from __future__ import annotations

import pytest

from pipelines.core.params import ParameterTypeError, as_text, coerce
from pipelines.errors import UserError
from pipelines.local.runtime.engine import _coerce_like
from pipelines.local.workspace.submissions import check_value


@pytest.mark.parametrize(
    ("default", "value", "expected"),
    [(True, "FALSE", False), (True, False, False), (3, " 7", 7), (3, -2, -2), (0.5, "1e3", 1000.0),
     (0.5, 2, 2.0), ("a", "b", "b")],
)  # fmt: skip
def test_values_read_as_the_defaults_type(default: object, value: object, expected: object) -> None:
    assert coerce(default, value) == expected and type(coerce(default, value)) is type(expected)


@pytest.mark.parametrize(
    ("default", "value"), [(True, "yes"), (3, "3.5"), (3, True), (0.5, "x"), (0.5, None), ("a", None)]
)
def test_values_of_another_type_are_refused(default: object, value: object) -> None:
    with pytest.raises(ParameterTypeError):
        coerce(default, value)


def test_a_number_for_a_string_parameter_is_text_locally_but_refused_in_a_json_body() -> None:
    assert coerce("label", 7) == "7"
    with pytest.raises(ParameterTypeError):
        coerce("label", 7, strict_strings=True)


def test_engine_and_rest_accept_and_refuse_the_same_values() -> None:
    for default, value in [(True, "true"), (4, "12"), (1.5, "2.25"), ("x", "y")]:
        assert as_text(_coerce_like("p", default, value)) == check_value("p", default, value)
    for default, value in [(True, "1"), (4, "twelve"), (1.5, "fast")]:
        with pytest.raises(UserError, match="parameter 'p' expects"):
            _coerce_like("p", default, value)
        with pytest.raises(UserError, match="parameter 'p' expects"):
            check_value("p", default, value)
