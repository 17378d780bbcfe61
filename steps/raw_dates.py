"""Date handling of the raw-columns model (raw_model.py): which text columns are dates, their format,
parsing them (day-only formats without pandas for small requests) and their calendar parts.

Imported by name (``import raw_dates``) next to raw_model.py, as Azure and MLflow load the step files.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import numpy as np
import pandas as pd

# calendar parts AutoML's datetime featurization derives (no trend ordinal: trees cannot extrapolate it)
DATE_PARTS = ("year", "quarter", "month", "day", "dayofweek", "dayofyear", "weekofyear")
SMALL_BATCH = 16  # rows up to which calendar parts are computed row by row (an online request's size)
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
SMALL_PARSE = 256  # rows up to which day-only dates are parsed without pandas (beyond, pandas is faster)


def date_parts(values: np.ndarray) -> dict[str, np.ndarray]:
    """DATE_PARTS of datetime64 values as float64 (NaN for NaT), as pandas' ``.dt`` accessors give them.

    Computed on the integer day count with numpy: a few array operations instead of a pandas accessor
    per part, which is what a one-row online request spends most of its featurization time on.
    """
    if len(values) <= SMALL_BATCH:
        return _date_parts_by_row(values)
    missing = np.isnat(values)
    days = values.astype("datetime64[D]")
    days = np.where(missing, np.datetime64(0, "D"), days)  # any valid day: NaT rows become NaN below
    day_number = days.astype(np.int64)
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    dayofweek = (day_number + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    dayofyear = (days - days.astype("datetime64[Y]")).astype(np.int64) + 1
    # ISO 8601 week: the week (Monday to Sunday) holding the year's first Thursday is week 1
    raw_week = (dayofyear - (dayofweek + 1) + 10) // 7
    week = np.where(raw_week < 1, _iso_weeks_in_year(year - 1), raw_week)  # last week of last year
    week = np.where(raw_week > _iso_weeks_in_year(year), 1, week)  # first week of next year
    parts = {
        "year": year,
        "quarter": (month - 1) // 3 + 1,
        "month": month,
        "day": day,
        "dayofweek": dayofweek,
        "dayofyear": dayofyear,
        "weekofyear": week,
    }
    return {name: np.where(missing, np.nan, parts[name].astype(np.float64)) for name in DATE_PARTS}


def _date_parts_by_row(values: np.ndarray) -> dict[str, np.ndarray]:
    """``date_parts`` for a few rows with the standard library: cheaper than numpy's per-call overhead."""
    ordinals = values.astype("datetime64[D]").astype(np.int64) + EPOCH_ORDINAL
    rows = []
    for missing, ordinal in zip(np.isnat(values).tolist(), ordinals.tolist(), strict=True):
        if missing:
            rows.append((math.nan,) * len(DATE_PARTS))
            continue
        d = dt.date.fromordinal(ordinal)
        start = dt.date(d.year, 1, 1).toordinal()
        rows.append(
            (
                d.year,
                (d.month - 1) // 3 + 1,
                d.month,
                d.day,
                d.weekday(),
                ordinal - start + 1,
                d.isocalendar()[1],
            )
        )
    columns = zip(*rows, strict=True) if rows else [()] * len(DATE_PARTS)
    return {
        name: np.array(column, dtype=np.float64) for name, column in zip(DATE_PARTS, columns, strict=True)
    }


def _iso_weeks_in_year(year: np.ndarray) -> np.ndarray:
    """53 for years whose 1 January is a Thursday, or a Wednesday in a leap year; else 52."""

    def weekday_code(y: np.ndarray) -> np.ndarray:
        return (y + y // 4 - y // 100 + y // 400) % 7

    return 52 + ((weekday_code(year) == 4) | (weekday_code(year - 1) == 3)).astype(np.int64)


DATE_FORMATS = ("%m/%d/%Y", "%Y-%m-%d", "%d/%m/%Y", "%Y-%m-%d %H:%M:%S", "%m/%d/%Y %H:%M", "%Y/%m/%d")


def _date_format(series: pd.Series) -> str | None:
    """The one strptime format every value of a text date column follows, if there is one."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return None
    values = series.dropna().astype(str)
    for fmt in DATE_FORMATS:
        if pd.to_datetime(values, format=fmt, errors="coerce").notna().all():
            return fmt
    return None


# day-only formats parsed without pandas: (pattern, order of its year, month and day groups)
_DAY_FORMATS = {
    "%Y-%m-%d": (r"(\d{4})-(1[0-2]|0[1-9]|[1-9])-(3[01]|[12]\d|0[1-9]|[1-9])", (0, 1, 2)),
    "%Y/%m/%d": (r"(\d{4})/(1[0-2]|0[1-9]|[1-9])/(3[01]|[12]\d|0[1-9]|[1-9])", (0, 1, 2)),
    "%m/%d/%Y": (r"(1[0-2]|0[1-9]|[1-9])/(3[01]|[12]\d|0[1-9]|[1-9])/(\d{4})", (2, 0, 1)),
    "%d/%m/%Y": (r"(3[01]|[12]\d|0[1-9]|[1-9])/(1[0-2]|0[1-9]|[1-9])/(\d{4})", (2, 1, 0)),
}
_DAY_PATTERNS = {fmt: (re.compile(pattern), order) for fmt, (pattern, order) in _DAY_FORMATS.items()}
# the same formats with only days that exist (29 February aside) in years 1700-2199, inside pandas' range:
# the pattern a client can be told (every text it matches is accepted)
_MONTH_DAYS = (  # (months, their days)
    (r"(?:0?[13578]|1[02])", r"(?:0?[1-9]|[12]\d|3[01])"),
    (r"(?:0?[469]|11)", r"(?:0?[1-9]|[12]\d|30)"),
    (r"0?2", r"(?:0?[1-9]|1\d|2[0-8])"),
)
_YEAR = r"(?:1[7-9]|2[01])\d\d"


def _schema_pattern(order: str, sep: str) -> str:
    """``order`` "ymd", "mdy" or "dmy": an anchored pattern of the existing days written that way."""
    alternatives = [
        sep.join({"y": _YEAR, "m": months, "d": days}[part] for part in order) for months, days in _MONTH_DAYS
    ]
    return "^(?:" + "|".join(alternatives) + ")$"


_DAY_SCHEMA_PATTERNS = {
    "%Y-%m-%d": _schema_pattern("ymd", "-"),
    "%Y/%m/%d": _schema_pattern("ymd", "/"),
    "%m/%d/%Y": _schema_pattern("mdy", "/"),
    "%d/%m/%Y": _schema_pattern("dmy", "/"),
}


def _iso_day(value: Any, fmt: str) -> str | None:
    """``value`` as YYYY-MM-DD if it is text in the day-only format ``fmt`` (the day may not exist), else None."""
    pattern, (y, m, d) = _DAY_PATTERNS[fmt]
    match = pattern.fullmatch(value) if type(value) is str else None
    if match is None:
        return None
    parts = match.groups()
    return f"{parts[y]}-{parts[m]:0>2}-{parts[d]:0>2}"


def _day_of(value: Any, fmt: str) -> np.datetime64 | None:
    """The day ``value`` names in the day-only format ``fmt``, if it is text in that format naming a day
    that exists within pandas' range; else None."""
    iso = _iso_day(value, fmt)
    if iso is None:
        return None
    try:
        day = np.datetime64(iso, "D")
    except ValueError:  # e.g. 30 February
        return None
    return day if _FIRST_DAY <= day <= _LAST_DAY else None


_FIRST_DAY, _LAST_DAY = np.datetime64("1677-09-22", "D"), np.datetime64("2262-04-10", "D")  # pandas' ns range


def _first_bad_day(values: np.ndarray, fmt: str) -> int | None:
    """The position of the first value ``_day_of`` refuses, else None; the days converted in one numpy call
    (a scalar ``np.datetime64`` per value costs several times more on a batch's thousands of rows)."""
    iso = [_iso_day(value, fmt) or "NaT" for value in values]
    try:
        days = np.array(iso, dtype="datetime64[D]")
    except ValueError:  # e.g. 30 February: value by value
        return next((i for i, value in enumerate(values) if _day_of(value, fmt) is None), None)
    bad = np.isnat(days) | (days < _FIRST_DAY) | (days > _LAST_DAY)
    return int(bad.argmax()) if bad.any() else None


def _datetime_values(series: pd.Series, fmt: str | None) -> np.ndarray:
    """``_to_datetime(series, fmt)`` as datetime64[ns] values; day-only text of a few rows without pandas.

    Text that does not fully follow ``fmt`` (or names a day that does not exist, or one outside pandas'
    range) goes the pandas way, so the result is the same either way.
    """
    if fmt in _DAY_PATTERNS and series.dtype == object and len(series) <= SMALL_PARSE:
        iso = []
        for value in series.to_numpy():
            day = _iso_day(value, fmt)
            if day is None:
                break
            iso.append(day)
        else:
            try:
                days = np.array(iso, dtype="datetime64[D]")
            except ValueError:  # e.g. 30 February: pandas decides
                days = None
            if days is not None and ((days >= _FIRST_DAY) & (days <= _LAST_DAY)).all():
                return days.astype("datetime64[ns]")
    return _to_datetime(series, fmt).to_numpy(dtype="datetime64[ns]")


def _to_datetime(series: pd.Series, fmt: str | None = None) -> pd.Series:
    """Dates from a column: by the learned format, values that do not follow it by pandas' mixed parser."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return series
    if fmt:
        parsed = pd.to_datetime(series, format=fmt, errors="coerce")
        stray = parsed.isna() & series.notna()
        if not stray.any():
            return parsed
        parsed[stray] = pd.to_datetime(series[stray], errors="coerce", format="mixed")
        return parsed
    return pd.to_datetime(series, errors="coerce", format="mixed")


def _mostly_dates(series: pd.Series) -> bool:
    sample = series.dropna().astype(str).head(200)
    if sample.empty or sample.str.fullmatch(r"-?\d+(\.\d+)?").all():
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= 0.95)


def first_bad_date(series: pd.Series, fmt: str | None) -> int | None:
    """The position of the first text in a date column that is not a date as a model learned them (format
    ``fmt``), else None: in a day-only format, written that way and naming a day that exists; otherwise,
    text pandas reads as a date. A column of another type than text has nothing to refuse."""
    if series.dtype != object:
        return None
    if fmt in _DAY_PATTERNS:
        return _first_bad_day(series.to_numpy(), fmt)
    unread = np.isnat(_datetime_values(series, fmt)) & series.notna().to_numpy()
    return int(unread.argmax()) if unread.any() else None


def first_bad_date_in(frame: pd.DataFrame, rule: dict[str, str | None]) -> tuple[int, str] | None:
    """The first (row position, column) breaking ``rule`` (date column -> learned format), else None."""
    for column, fmt in rule.items():
        series = frame.get(column)
        bad = first_bad_date(series, fmt) if series is not None else None
        if bad is not None:
            return bad, column
    return None
