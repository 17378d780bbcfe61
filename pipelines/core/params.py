"""Pipeline parameter values: one rule for reading a value as the type of the parameter's default.

The local engine (``--set``, schedules) and the workspace service (a REST body's
``ParameterAssignments``) both use it, so a value one accepts the other accepts too.
"""

from __future__ import annotations

from typing import Any


class ParameterTypeError(TypeError):
    """A value that cannot be read as the type of a parameter's default."""


def coerce(default: Any, value: Any, *, strict_strings: bool = False) -> Any:
    """``value`` read as the type of ``default`` (bool, int, float or str).

    Text spells booleans ``true``/``false`` (any case) and whole numbers in digits. A number given for a
    string parameter is taken as its text, unless ``strict_strings`` (a JSON body must send a string).
    """
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(value, str):
        return value
    elif not strict_strings and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ParameterTypeError(f"expected {type_phrase(default)}, got {value!r}")


def type_phrase(default: Any) -> str:
    """``a bool``, ``an int``: the type of ``default`` with its article."""
    kind = type(default).__name__
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def as_text(value: Any) -> str:
    """A coerced value spelled as ``--set NAME=VALUE`` takes it."""
    return str(value).lower() if isinstance(value, bool) else str(value)
