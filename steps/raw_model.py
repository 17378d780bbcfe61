"""The model the local AutoML engine produces: raw dataset columns in, predictions out.

Like AutoML's own models, it does its own featurization (date-like text columns become calendar parts,
text columns become categories), so a caller sends the dataset's raw columns minus the label.
``RawModelPyfunc`` is the MLflow pyfunc wrapper the register step logs, so
``mlflow.pyfunc.load_model("models:/<name>/<version>").predict(df)`` works anywhere.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

try:  # the pyfunc base class; the featurizer itself works without MLflow
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - MLflow is a pinned dependency
    PythonModel = object  # type: ignore[misc,assignment]

import raw_dates
from raw_dates import (
    _DAY_SCHEMA_PATTERNS,
    _date_format,
    _datetime_values,
    _mostly_dates,
    _to_datetime,
    date_parts,
    first_bad_date_in,
)

CHECK_ROWS = 256  # rows of the first call on which the direct Booster call is compared with the wrapper


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
        return pd.DataFrame(dict(self._feature_columns(frame)), index=frame.index)

    def matrix(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]] | None:
        """The features of ``transform`` as one 2-D array, exactly as LightGBM converts that frame.

        Same values and the same dtype LightGBM's pandas conversion picks (categories as codes, missing
        as NaN); None when a column has a dtype that conversion would reject or treat differently.
        Building no DataFrame is what makes a one-row prediction cheap.
        """
        names: list[str] = []
        arrays: list[np.ndarray] = []
        for name, values in self._feature_columns(frame):
            if isinstance(values, pd.Categorical):
                codes = values.codes
                array = np.where(codes == -1, np.nan, codes) if (codes == -1).any() else codes
            else:
                array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
                if not isinstance(array.dtype, np.dtype) or array.dtype.kind not in "biuf":
                    return None
            names.append(name)
            arrays.append(array)
        if not arrays:
            return None
        target = np.result_type(*[a.dtype.type for a in arrays], np.float32)
        out = np.empty((len(frame), len(arrays)), dtype=target)
        for i, array in enumerate(arrays):
            out[:, i] = array
        return out, names

    def _feature_columns(self, frame: pd.DataFrame) -> Iterator[tuple[str, Any]]:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"missing input column(s): {', '.join(missing)}")
        by_name = dict(frame.items())  # one pass: a lookup per column costs more on a fresh frame
        for col in self.columns:
            if col in self.dropped:
                continue
            series = by_name[col]
            if col in self.date_columns:
                fmt = getattr(self, "date_formats", {}).get(col)  # older pickles lack it
                for part, values in date_parts(_datetime_values(series, fmt)).items():
                    yield f"{col}_{part}", values
            elif col in self.category_levels:
                yield col, pd.Categorical(series.astype("string"), categories=self.category_levels[col])
            elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
                yield col, series
            else:
                yield col, pd.to_numeric(series, errors="coerce")


@dataclass
class RatioTrend:
    """A line over a date column that the estimator's output is multiplied by (the estimator learned the
    label / line). Before ``start`` the line is level; after ``end`` it keeps ``damping`` times its slope (0:
    level); rows without a date get its value at ``end``; it never goes below 0. Days are since 1970-01-01.
    """

    column: str
    fmt: str | None
    intercept: float
    slope: float  # per day
    start: float
    end: float
    damping: float = 1.0

    @staticmethod
    def days_of(series: pd.Series, fmt: str | None) -> np.ndarray:
        """Days since 1970-01-01 (fractional), NaN where there is no date."""
        values = _datetime_values(series, fmt)
        days = values.astype("datetime64[s]").astype("int64").astype(float) / 86400.0
        days[np.isnat(values)] = np.nan
        return days

    def at(self, frame: pd.DataFrame) -> np.ndarray:
        return self.line(self.days_of(frame[self.column], self.fmt))

    def line(self, days: np.ndarray) -> np.ndarray:
        days = np.where(np.isnan(days), self.end, days)
        days = np.where(
            days > self.end, self.end + self.damping * (days - self.end), np.maximum(days, self.start)
        )
        return np.maximum(self.intercept + self.slope * days, 0.0)


@dataclass
class VotingEnsemble:
    """AutoML's VotingEnsemble of regressors: the weighted mean of its members' predictions.

    With a trend each member learned the label relative to the model's line and continues it after the
    training end with its own ``dampings[i]``: ``RawColumnsModel`` multiplies each group's share by that
    line. ``estimators_`` holds (name, fitted estimator) pairs, as scikit-learn's ensembles do.
    """

    estimators_: list[tuple[str, Any]]
    weights: list[float]
    dampings: list[float]

    def by_damping(self, features: pd.DataFrame) -> dict[float, np.ndarray]:
        """The members' weighted predictions summed per damping (the weights sum to 1 overall)."""
        total = float(sum(self.weights))
        parts: dict[float, np.ndarray] = {}
        predicted: dict[int, np.ndarray] = {}  # a member may appear once per damping: predict it once
        for (_, member), weight, damping in zip(self.estimators_, self.weights, self.dampings, strict=True):
            if id(member) not in predicted:
                predicted[id(member)] = self._predict_member(member, features)
            share = (weight / total) * predicted[id(member)]
            parts[damping] = parts[damping] + share if damping in parts else share
        return parts

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return np.sum(list(self.by_damping(features).values()), axis=0)

    def _predict_member(self, member: Any, features: pd.DataFrame) -> np.ndarray:
        """``member.predict``, or for an XGBoost model its Booster called on the numbers directly (XGBoost's
        checks of a pandas frame cost more than a one-row prediction), once that gave the same answer."""
        direct = self.__dict__.setdefault("_direct", {})
        call = direct.get(id(member))
        if call:
            return call(features)
        expected = np.asarray(member.predict(features), dtype=float)
        if call is None:
            found = _xgboost_call(member)
            try:
                same = found is not None and np.array_equal(
                    np.asarray(found(features), dtype=float), expected
                )
            except Exception:  # noqa: BLE001 - whatever the direct call cannot do, predict does
                same = False
            direct[id(member)] = found if same else False
        return expected

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_direct", None)  # a per-process cache
        return state


def _xgboost_call(member: Any) -> Callable[[pd.DataFrame], np.ndarray] | None:
    """For a FLAML XGBoost estimator on numeric columns: its Booster's ``inplace_predict`` on a float array."""
    model = getattr(member, "_model", None)
    if type(model).__module__.split(".")[0] != "xgboost" or not hasattr(model, "get_booster"):
        return None
    booster = model.get_booster()

    def call(features: pd.DataFrame) -> np.ndarray:
        data = features.to_numpy(dtype=np.float32)
        return np.asarray(booster.inplace_predict(data, validate_features=False), dtype=float)

    return call


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
    trend: RatioTrend | None = None  # regression: the estimator predicts the label / this line

    @property
    def input_columns(self) -> list[str]:
        return list(self.featurizer.columns)

    def features(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.task == "forecasting":
            feats = frame[self.input_columns].copy()
            feats[self.time_column] = _to_datetime(feats[self.time_column])
            return feats
        return self.featurizer.transform(frame)

    def bad_date(self, frame: pd.DataFrame) -> tuple[int, str] | None:
        """The first (row position, column) in a date column holding text that is not a date, else None.

        In a column whose dates were learned in a day-only format, a date must be written that way and
        name a day that exists (as ``input_metadata``'s pattern documents); in other date columns, it
        must be text ``predict`` can read as a date. ``predict`` itself reads any other text as a
        missing date (as batch scoring wants); a caller that should refuse it, such as an online
        endpoint, asks here first.
        """
        return first_bad_date_in(frame, self.date_rule())

    def date_rule(self) -> dict[str, str | None]:
        """The date columns ``bad_date`` checks, each with the format its dates were learned in."""
        columns = [*self.featurizer.date_columns, *([self.time_column] if self.task == "forecasting" else [])]
        formats = getattr(self.featurizer, "date_formats", {})
        return {column: formats.get(column) for column in dict.fromkeys(columns)}

    def input_metadata(self) -> dict[str, Any]:
        """What the raw input's schema cannot say, for the logged model's metadata: each date column's
        format and, for day-only formats, a regular expression of exactly the days that exist (a
        scoring script documents it in its swagger)."""
        dates = {}
        for column in self.featurizer.date_columns:
            fmt = self.featurizer.date_formats.get(column)
            dates[column] = {"format": fmt, "pattern": _DAY_SCHEMA_PATTERNS.get(fmt or "")}
        # date_rule: what bad_date checks, so a caller can apply the rule without loading the model
        return {"date_columns": dates, "date_rule": self.date_rule()}

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) == 0:
            return np.array([])
        trend = self.__dict__.get("trend")  # models pickled before trends existed have none
        if trend is not None and isinstance(self.estimator, VotingEnsemble):
            days = trend.days_of(frame[trend.column], trend.fmt)
            parts = self.estimator.by_damping(self.features(frame))
            return np.sum([part * replace(trend, damping=d).line(days) for d, part in parts.items()], axis=0)
        found = self._predict_estimator(frame)
        return found * trend.at(frame) if trend is not None else found

    def _predict_estimator(self, frame: pd.DataFrame) -> np.ndarray:
        fast = self._booster_call()
        if fast is not None and fast.ready:
            features = self.featurizer.matrix(frame)
            if features is not None and features[1] == fast.feature_names:
                return np.asarray(fast.booster.predict(features[0], **fast.kwargs))
        features = self.features(frame)
        if fast is not None and fast.ready is None:
            return fast.learn(self.estimator, features, self.featurizer.matrix(frame))
        return np.asarray(self.estimator.predict(features))

    def _booster_call(self) -> _BoosterCall | None:
        """For a LightGBM regressor: its Booster called directly (scikit-learn's wrapper costs more than a
        one-row prediction); None for any other estimator. Learned on, and checked against, the first call."""
        fast = self.__dict__.get("_fast", False)
        if fast is False:
            categories = [self.featurizer.category_levels[c] for c in self.featurizer.columns
                          if c in self.featurizer.category_levels and c not in self.featurizer.dropped]  # fmt: skip
            fast = _BoosterCall.of(self.estimator, categories) if self.task == "regression" else None
            self.__dict__["_fast"] = fast
        return fast

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_fast", None)  # a per-process cache
        return state

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(self.features(frame)))


class _BoosterCall:
    """``LGBMRegressor.predict`` without the wrapper: ``booster.predict(array, **kwargs)``.

    The keyword arguments are the ones the wrapper itself passes to its Booster, captured on the first
    call; the direct call is used from then on only if it gave that first call's exact answer.
    """

    def __init__(self, booster: Any, feature_names: list[str]) -> None:
        self.booster = booster
        self.feature_names = feature_names
        self.kwargs: dict[str, Any] = {}
        self.ready: bool | None = None  # None until the first call has been compared; False: never again
        self._lock = threading.Lock()

    @classmethod
    def of(cls, estimator: Any, categories: list[list[str]]) -> _BoosterCall | None:
        """The direct call for a fitted ``LGBMRegressor`` trained on these category levels, else None."""
        try:
            import lightgbm
        except ImportError:  # pragma: no cover - LightGBM is a pinned dependency
            return None
        if type(estimator) is not lightgbm.LGBMRegressor or not estimator.__sklearn_is_fitted__():
            return None
        booster = estimator.booster_
        if [list(levels) for levels in (booster.pandas_categorical or [])] != categories:
            return None
        return cls(booster, list(booster.feature_name()))

    def learn(
        self, estimator: Any, frame: pd.DataFrame, features: tuple[np.ndarray, list[str]] | None
    ) -> np.ndarray:
        """Predict through the wrapper, capturing what it passes to the Booster; compare the direct call."""
        captured: dict[str, Any] = {}
        real = self.booster.predict

        def spy(data: Any, **kwargs: Any) -> Any:
            captured.update(kwargs)
            return real(data, **kwargs)

        with self._lock:
            self.booster.predict = spy  # an instance attribute shadows the method for this one call
            try:
                expected = np.asarray(estimator.predict(frame))
            finally:
                del self.booster.predict
            if features is not None and features[1] == self.feature_names and captured:
                checked = expected[:CHECK_ROWS]  # a big first batch: compare a slice, not predict it twice
                direct = np.asarray(self.booster.predict(features[0][:CHECK_ROWS], **captured))
                if direct.dtype == checked.dtype and np.array_equal(direct, checked, equal_nan=True):
                    self.kwargs, self.ready = captured, True
            if not self.ready:
                self.ready = False  # keep the wrapper, and do not pay for the comparison again
        return expected


class RawModelPyfunc(PythonModel):
    """MLflow pyfunc wrapper around a pickled ``RawColumnsModel`` (artifact ``model``)."""

    def load_context(self, context: Any) -> None:
        import cloudpickle

        with open(context.artifacts["model"], "rb") as fh:
            self.model = cloudpickle.load(fh)
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:  # the thread budget a server or batch worker was given
            limit_threads(self.model.estimator, int(threads))
        sequential_forests(self.model.estimator)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        return self.model.predict(model_input)


def limit_threads(model: Any, threads: int) -> int:
    """Cap ``n_jobs`` at ``threads`` on every estimator inside ``model``; how many were changed.

    Walks FLAML's AutoML, its ensembles' members and final estimator, scikit-learn pipelines, forests,
    LightGBM and XGBoost. AutoML trains with ``n_jobs=-1``; a forest predicting a few rows with a thread
    per core spends most of its time handing work to threads, and a server's workers already share the
    cores. Each row's prediction does not depend on the thread count.
    """
    changed = 0
    for obj in _estimators(model):
        n_jobs = getattr(obj, "n_jobs", None)
        if hasattr(obj, "get_params") and isinstance(n_jobs, int) and (n_jobs < 0 or n_jobs > threads):
            try:
                obj.set_params(n_jobs=threads)
                changed += 1
            except Exception:  # noqa: BLE001 - not a scikit-learn parameter here: set what predict reads
                with contextlib.suppress(Exception):  # read-only: leave this one as it is
                    obj.n_jobs = threads
                    changed += 1
    return changed


def _estimators(model: Any) -> Iterator[Any]:
    """``model`` and every object inside it that may be an estimator, each once."""
    seen: set[int] = set()
    pending = [model]
    while pending:
        obj = pending.pop()
        if (
            obj is None
            or id(obj) in seen
            or isinstance(obj, (str, bytes, int, float, np.ndarray, pd.DataFrame))
        ):
            continue
        seen.add(id(obj))
        yield obj
        for attr in ("model", "_model", "estimators_", "final_estimator_", "steps", "best_estimator_"):
            try:
                child = getattr(obj, attr, None)
            except Exception:  # noqa: BLE001 - a property that cannot answer: nothing to walk there
                child = None
            if isinstance(child, (list, tuple)):
                pending.extend(c[1] if isinstance(c, tuple) and len(c) == 2 else c for c in child)
            elif child is not None:
                pending.append(child)


def sequential_forests(model: Any) -> int:
    """Let every one-thread scikit-learn forest inside ``model`` run its trees in a plain loop; how many.

    With ``n_jobs=1`` a forest still hands each tree to joblib through scikit-learn's wrapper, which resets
    the warning filters and the configuration around every call: for a few rows that costs several times
    the tree itself (about 0.2 ms a tree here; AutoML's ensembles hold hundreds). The loop runs the same
    trees in the same order with the same arithmetic, and is used only once its first answer equals the
    forest's own (see SequentialTrees).
    """
    from sklearn import ensemble

    forests = (ensemble.RandomForestRegressor, ensemble.ExtraTreesRegressor, ensemble.RandomForestClassifier,
               ensemble.ExtraTreesClassifier)  # fmt: skip
    done = 0
    for obj in _estimators(model):
        if not isinstance(obj, forests) or obj.n_jobs not in (None, 1):
            continue
        if getattr(obj, "n_outputs_", 1) != 1 or isinstance(obj.__dict__.get("predict"), SequentialTrees):
            continue
        name = "predict_proba" if hasattr(obj, "classes_") else "predict"  # a classifier's predict uses it
        obj.__dict__[name] = SequentialTrees(obj, name)
        done += 1
    return done


class SequentialTrees:
    """A one-output forest's ``predict`` (regressor) or ``predict_proba`` (classifier), tree by tree.

    The first call answers with the forest's own method and compares: only an identical answer (same
    values, same dtype and shape) switches to the loop; otherwise the forest's own method stays.
    """

    def __init__(self, forest: Any, name: str) -> None:
        self.forest = forest
        self.name = name
        self.ready: bool | None = None

    def original(self, X: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        """The forest's own method (the class's, past this instance attribute)."""
        return getattr(type(self.forest), self.name)(self.forest, X, *args, **kwargs)

    def __call__(self, X: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        if args or kwargs or self.ready is False:
            return self.original(X, *args, **kwargs)
        if self.ready is None:
            expected = self.original(X)
            try:
                got = self.loop(X)
                self.ready = got.dtype == expected.dtype and np.array_equal(got, expected, equal_nan=True)
            except Exception:  # noqa: BLE001 - whatever the loop cannot do, the forest's own method does
                self.ready = False
            return expected
        return self.loop(X)

    def loop(self, X: Any) -> np.ndarray:
        """What the forest's method computes with one thread: the trees' outputs summed in order, averaged."""
        forest = self.forest
        X = forest._validate_X_predict(X)
        if self.name == "predict":  # each tree's own predict, less its per-tree fitted check: tree_.predict
            total = np.zeros(X.shape[0], dtype=np.float64)
            for tree in forest.estimators_:
                total += tree.tree_.predict(X)[:, 0]
        else:
            total = np.zeros((X.shape[0], int(forest.n_classes_)), dtype=np.float64)
            for tree in forest.estimators_:
                total += tree.predict_proba(X, check_input=False)
        total /= len(forest.estimators_)
        return total

    def __getstate__(self) -> dict[str, Any]:  # the forest pickles as it was: its own methods, checked anew
        return {"forest": self.forest, "name": self.name, "ready": None}


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


def code_paths() -> list[str]:
    """The files a logged model needs next to its pickle (MLflow's ``code_paths``): this module and its
    date parsing."""
    return [__file__, raw_dates.__file__]
