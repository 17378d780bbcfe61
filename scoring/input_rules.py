"""The rule a model's input rows follow, shared by the online (score.py) and batch (scoring.py) scripts.

A row is scored only if each column of the model's signature holds a value of the column's type, and
each date column a date as the model learned them (the model's own ``bad_date``: in a day-only format,
written that way and naming a day that exists, so ``2/30/2012`` is refused). score.py checks JSON
values against it (``decode``); batch scoring checks a DataFrame read from CSV with ``check_frame``,
where a value arrives as text or as the type the reader inferred: the same types (an integer column
takes whole numbers, a number column finite numbers, a boolean column true or false, none takes an
empty value) and the same dates.

It sits beside the scripts and imports nothing from the project: on Azure, the scripts' source
directory is on ``sys.path``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SCAN_BAD_DATES = 8  # refused dates found by scanning a column before it is checked value by value

# MLflow column types -> (JSON Schema type, swagger format, numpy dtype for the decoded column)
KINDS: dict[str, tuple[str, str | None, Any]] = {
    "integer": ("integer", "int32", np.int64),
    "long": ("integer", "int64", np.int64),
    "float": ("number", "float", np.float64),
    "double": ("number", "double", np.float64),
    "boolean": ("boolean", None, np.bool_),
    "string": ("string", None, object),
    "datetime": ("string", "date-time", object),
}
EXPECTED = {  # what a value of each kind must be, as the errors say it
    "integer": "an integer",
    "long": "an integer",
    "float": "a number",
    "double": "a number",
    "boolean": "true or false",
    "string": "a string",
    "datetime": "an ISO 8601 date-time",
}

DateCheck = Callable[[pd.DataFrame], "tuple[int, str] | None"]


class InputError(ValueError):
    """The input does not follow the model's input rule; the message names the field."""


@dataclass(frozen=True)
class Column:
    """One input column of the model: its name and MLflow type (a key of KINDS)."""

    name: str
    kind: str

    @property
    def json_type(self) -> str:
        return KINDS[self.kind][0]


@dataclass(frozen=True)
class BadRow:
    """A row that breaks the rule: its position in the frame, the first column at fault and why."""

    row: int
    column: str
    problem: str  # e.g. "expected a number, got 'warm'"


def kind_of(mlflow_type: str) -> str:
    """The KINDS key of an MLflow column type (``DataType.long`` -> ``long``); unknown types are text."""
    kind = mlflow_type.lower().removeprefix("datatype.")
    return kind if kind in KINDS else "string"


def signature_columns(model: Any) -> tuple[Column, ...] | None:
    """The named, typed input columns of a loaded MLflow pyfunc model's signature, or None without one."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return None
    return tuple(Column(spec.name, kind_of(str(spec.type))) for spec in schema.inputs)


def date_checker(model: Any) -> DateCheck | None:
    """The model's own test for text in a date column that is not a date (this project's raw-columns
    models: ``bad_date``, the days the swagger's pattern describes), or None for a model without one."""
    try:
        inner = model.unwrap_python_model().model
    except Exception:  # noqa: BLE001 - not this project's pyfunc: no date check
        return None
    return getattr(inner, "bad_date", None)


def duplicate_columns(columns: Any) -> list[str]:
    """The column names that occur more than once, in order of first occurrence."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for name in map(str, columns):
        if name in seen:
            repeated[name] = None
        seen.add(name)
    return list(repeated)


def check_frame(
    frame: pd.DataFrame, columns: tuple[Column, ...], bad_date: DateCheck | None = None
) -> tuple[np.ndarray, pd.DataFrame, list[BadRow]]:
    """Which rows of ``frame`` follow the rule, their signature columns typed as the model takes them,
    and the rows that do not (in row order, each with its first fault).

    Returns ``(ok, typed, bad)``: ``ok`` a boolean mask over the rows, ``typed`` the ``columns`` of the
    ``ok`` rows (numbers read from text, whole numbers as int64), ``bad`` one BadRow per refused row.
    InputError if ``frame`` repeats a column name or lacks one of ``columns``.
    """
    repeated = duplicate_columns(frame.columns)
    if repeated:
        raise InputError(f"duplicate column name(s) {', '.join(map(repr, repeated))}")
    missing = [c.name for c in columns if c.name not in frame.columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(map(repr, missing))}")
    faults: list[tuple[str, np.ndarray, str]] = []  # (column, bad-value mask, what a value must be)
    converters: dict[str, Callable[[np.ndarray], Any]] = {}
    for column in columns:
        bad, convert = _typed(frame[column.name], column.kind)
        faults.append((column.name, bad, EXPECTED[column.kind]))
        converters[column.name] = convert
    if bad_date is not None:
        for name, bad in _bad_dates(frame, columns, bad_date).items():
            faults.append((name, bad, _a_date_like(frame[name], bad)))
    ok = np.ones(len(frame), dtype=bool)
    first: dict[int, BadRow] = {}
    for name, bad, expected in faults:
        values = frame[name]
        for i in np.flatnonzero(bad & ok).tolist():
            first[i] = BadRow(i, name, f"expected {expected}, got {shown(values.iloc[i])}")
        ok &= ~bad
    typed = pd.DataFrame({name: convert(ok) for name, convert in converters.items()}, copy=False)
    return ok, typed, [first[i] for i in sorted(first)]


def _typed(series: pd.Series, kind: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """A column's bad-value mask, and a function giving its typed values for a mask of kept rows."""
    missing = series.isna().to_numpy()
    if kind in ("integer", "long", "float", "double"):
        whole = kind in ("integer", "long")
        if pd.api.types.is_bool_dtype(series):
            return np.ones(len(series), dtype=bool), lambda ok: series.to_numpy()[ok]
        if whole and pd.api.types.is_integer_dtype(series):
            return missing, lambda ok: series.to_numpy()[ok]
        numbers = _numbers(series)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(numbers)
            if whole:
                bad |= (numbers % 1 != 0) | (numbers < INT64_MIN) | (numbers >= 2.0**63)
        bad |= missing
        dtype = np.int64 if whole else np.float64
        return bad, lambda ok: numbers[ok].astype(dtype)
    if kind == "boolean":
        if pd.api.types.is_bool_dtype(series) and not missing.any():
            return missing, lambda ok: series.to_numpy()[ok]
        words = {"true": True, "false": False}
        values = [
            v if type(v) is bool else words.get(v.strip().lower()) if isinstance(v, str) else None
            for v in series.to_numpy()
        ]
        bad = np.array([v is None for v in values], dtype=bool)
        return bad, lambda ok: np.array(values, dtype=object)[ok].astype(bool)
    if kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(series):
            return missing, lambda ok: series.to_numpy()[ok]
        parsed = pd.to_datetime(series, format="ISO8601", errors="coerce")
        return parsed.isna().to_numpy(), lambda ok: parsed.to_numpy()[ok]
    if series.dtype == object:
        return missing, lambda ok: series.to_numpy()[ok]
    return missing, lambda ok: series.astype(str).to_numpy(dtype=object)[ok]  # a reader took text for numbers


def _numbers(series: pd.Series) -> np.ndarray:
    """A column as float64: numbers as they are, text read as numbers, anything else NaN."""
    if pd.api.types.is_numeric_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    texts = series.map(lambda v: v if isinstance(v, str) else None if isinstance(v, bool) else v)
    return pd.to_numeric(texts, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _bad_dates(
    frame: pd.DataFrame, columns: tuple[Column, ...], bad_date: DateCheck
) -> dict[str, np.ndarray]:
    """Each text column's rows holding a value the model's ``bad_date`` refuses (asked about distinct values)."""
    masks: dict[str, np.ndarray] = {}
    for column in columns:
        series = frame[column.name]
        if series.dtype != object:
            continue
        codes, uniques = pd.factorize(series)  # empty values (code -1) are the type check's
        values = pd.Series(np.asarray(uniques, dtype=object), dtype=object)
        refused: list[int] = []
        start = 0
        while start < len(values):
            if len(refused) == SCAN_BAD_DATES:  # many: value by value, so the cost stays linear
                refused += [i for i in range(start, len(values)) if bad_date(_one(column.name, values[i]))]
                break
            found = bad_date(pd.DataFrame({column.name: values.iloc[start:].reset_index(drop=True)}))
            if found is None:
                break
            refused.append(start + found[0])
            start += found[0] + 1
        if refused:
            masks[column.name] = np.isin(codes, refused)
    return masks


def _one(name: str, value: Any) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([value], dtype=object)})


def _a_date_like(series: pd.Series, bad: np.ndarray) -> str:
    """ "a date like '1/1/2011'": the example is the column's first value the model accepts."""
    good = series[~bad & series.notna().to_numpy()]
    return f"a date like {good.iloc[0]!r}" if len(good) else "a date"


def shown(value: Any) -> str:
    """A value as an error message quotes it: JSON, at most 40 characters ("an empty value" for none)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return "an empty value"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.dumps(value, default=str)[:40]
