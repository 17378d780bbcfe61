"""The model the local AutoML engine produces: raw dataset columns in, predictions out.

Like AutoML's own models, it does its own featurization (date-like text columns become calendar parts,
text columns become categories), so a caller sends the dataset's raw columns minus the label.
``RawModelPyfunc`` is the MLflow pyfunc wrapper the register step logs, so
``mlflow.pyfunc.load_model("models:/<name>/<version>").predict(df)`` works anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

try:  # the pyfunc base class; the featurizer itself works without MLflow
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - MLflow is a pinned dependency
    PythonModel = object  # type: ignore[misc,assignment]

# calendar parts AutoML's datetime featurization derives (no trend ordinal: trees cannot extrapolate it)
DATE_PARTS = ("year", "quarter", "month", "day", "dayofweek", "dayofyear", "weekofyear")


@dataclass
class RawFeaturizer:
    """Learns which raw columns are dates or categories, and turns raw frames into model features."""

    columns: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    date_columns: list[str] = field(default_factory=list)
    category_levels: dict[str, list[str]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    date_formats: dict[str, str] = field(default_factory=dict)  # learned at fit: parsing by format is fast

    def fit(self, frame: pd.DataFrame) -> RawFeaturizer:
        self.columns = list(frame.columns)
        self.dtypes = {c: str(frame[c].dtype) for c in frame.columns}
        for col in frame.columns:
            series = frame[col]
            why = _drop_reason(series)
            if why:  # as AutoML featurization drops IDs and constant or empty columns
                self.dropped[col] = why
                continue
            if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                continue
            if pd.api.types.is_datetime64_any_dtype(series) or _mostly_dates(series):
                self.date_columns.append(col)
                fmt = _date_format(series)
                if fmt:
                    self.date_formats[col] = fmt
            else:
                self.category_levels[col] = sorted(series.dropna().astype(str).unique().tolist())
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"missing input column(s): {', '.join(missing)}")
        out: dict[str, Any] = {}
        for col in self.columns:
            if col in self.dropped:
                continue
            series = frame[col]
            if col in self.date_columns:
                parsed = _to_datetime(
                    series, getattr(self, "date_formats", {}).get(col)
                )  # older pickles lack it
                for part, values in date_parts(parsed.to_numpy(dtype="datetime64[ns]")).items():
                    out[f"{col}_{part}"] = values
            elif col in self.category_levels:
                out[col] = pd.Categorical(series.astype("string"), categories=self.category_levels[col])
            elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
                out[col] = series
            else:
                out[col] = pd.to_numeric(series, errors="coerce")
        return pd.DataFrame(out, index=frame.index)


@dataclass
class RawColumnsModel:
    """A fitted estimator plus the featurizer that feeds it; ``predict`` takes raw columns."""

    featurizer: RawFeaturizer
    estimator: Any
    task: str
    label: str
    time_column: str | None = None
    classes: list[Any] | None = None
    trained_with: dict[str, Any] = field(default_factory=dict)

    @property
    def input_columns(self) -> list[str]:
        return list(self.featurizer.columns)

    def features(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.task == "forecasting":
            feats = frame[self.input_columns].copy()
            feats[self.time_column] = _to_datetime(feats[self.time_column])
            return feats
        return self.featurizer.transform(frame)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) == 0:
            return np.array([])
        return np.asarray(self.estimator.predict(self.features(frame)))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(self.features(frame)))


class RawModelPyfunc(PythonModel):
    """MLflow pyfunc wrapper around a pickled ``RawColumnsModel`` (artifact ``model``)."""

    def load_context(self, context: Any) -> None:
        import cloudpickle

        with open(context.artifacts["model"], "rb") as fh:
            self.model = cloudpickle.load(fh)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        return self.model.predict(model_input)


def date_parts(values: np.ndarray) -> dict[str, np.ndarray]:
    """DATE_PARTS of datetime64 values as float64 (NaN for NaT), as pandas' ``.dt`` accessors give them.

    Computed on the integer day count with numpy: a few array operations instead of a pandas accessor
    per part, which is what a one-row online request spends most of its featurization time on.
    """
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


def _iso_weeks_in_year(year: np.ndarray) -> np.ndarray:
    """53 for years whose 1 January is a Thursday, or a Wednesday in a leap year; else 52."""

    def weekday_code(y: np.ndarray) -> np.ndarray:
        return (y + y // 4 - y // 100 + y // 400) % 7

    return 52 + ((weekday_code(year) == 4) | (weekday_code(year - 1) == 3)).astype(np.int64)


def _drop_reason(series: pd.Series) -> str:
    """Why AutoML-style featurization would drop a column: empty, constant, or an ID (all values unique)."""
    values = series.dropna()
    if values.empty:
        return "all values missing"
    if values.nunique() == 1:
        return "one value in every row"
    if len(values) > 20 and values.nunique() == len(series):
        is_id = pd.api.types.is_integer_dtype(series) or (
            series.dtype == object
            and not _mostly_dates(series)
            and not series.astype(str).str.contains(" ").any()
        )
        if is_id:
            return "an identifier (every value unique)"
    return ""


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
