"""The registered model's own featurization (steps/raw_model.py): raw columns in, model features out."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "steps"))
import raw_dates  # noqa: E402
import raw_model  # noqa: E402


def _pandas_part(dates: pd.Series, part: str) -> np.ndarray:
    values = dates.dt.isocalendar().week if part == "weekofyear" else getattr(dates.dt, part)
    return pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()


def test_date_parts_equal_pandas_calendar_over_two_centuries() -> None:
    """Every ISO week edge case (53-week years, early January, late December) and NaT included."""
    days = pd.Series(pd.date_range("1899-12-01", "2101-02-01", freq="D"))
    dates = pd.concat([days, pd.Series([pd.NaT, pd.Timestamp("2012-12-31 23:59:59")])], ignore_index=True)
    parts = raw_dates.date_parts(dates.to_numpy(dtype="datetime64[ns]"))
    assert list(parts) == list(raw_dates.DATE_PARTS)
    for part in raw_dates.DATE_PARTS:
        np.testing.assert_array_equal(parts[part], _pandas_part(dates, part), err_msg=part)
    assert np.isnan(parts["year"][-2]) and parts["weekofyear"][-1] == 1.0
    values = dates.to_numpy(dtype="datetime64[ns]")
    for start in range(0, len(values), raw_dates.SMALL_BATCH):  # the row-by-row path for small requests
        chunk = values[start : start + raw_dates.SMALL_BATCH]
        small = raw_dates.date_parts(chunk)
        for part in raw_dates.DATE_PARTS:
            np.testing.assert_array_equal(small[part], parts[part][start : start + len(chunk)], err_msg=part)


@pytest.fixture(scope="module")
def bike_raw(bike_csv_session: Path) -> pd.DataFrame:
    return pd.read_csv(bike_csv_session).drop(columns=["cnt", "casual", "registered"])


def test_fit_learns_ids_dates_and_their_format(bike_raw: pd.DataFrame) -> None:
    featurizer = raw_model.RawFeaturizer().fit(bike_raw)
    assert featurizer.dropped == {"instant": "an identifier (every value unique)"}
    assert featurizer.date_columns == ["date"]
    assert featurizer.date_formats == {"date": "%m/%d/%Y"}


def test_transform_keeps_the_rows_order_and_parses_stray_date_formats(bike_raw: pd.DataFrame) -> None:
    featurizer = raw_model.RawFeaturizer().fit(bike_raw)
    shuffled = bike_raw.sample(frac=1.0, random_state=0).head(50).copy()
    shuffled.loc[shuffled.index[0], "date"] = "2012-03-04"  # not the learned format: still a date
    features = featurizer.transform(shuffled)
    assert features.index.equals(shuffled.index)
    assert "instant" not in features.columns
    expected = pd.to_datetime(shuffled["date"], format="mixed")
    np.testing.assert_array_equal(features["date_dayofyear"].to_numpy(), expected.dt.dayofyear.to_numpy())
    np.testing.assert_array_equal(features["temp"].to_numpy(), shuffled["temp"].to_numpy())
    assert features.loc[shuffled.index[0], "date_month"] == 3.0


def test_transform_names_missing_columns_and_predict_handles_no_rows(bike_raw: pd.DataFrame) -> None:
    featurizer = raw_model.RawFeaturizer().fit(bike_raw)
    with pytest.raises(ValueError, match="missing input column"):
        featurizer.transform(bike_raw.drop(columns=["temp"]))
    model = raw_model.RawColumnsModel(featurizer, estimator=None, task="regression", label="cnt")
    assert model.predict(bike_raw.head(0)).shape == (0,)


@pytest.mark.parametrize("fmt", ["%m/%d/%Y", "%d/%m/%Y", "%Y-%m-%d", "%Y/%m/%d"])
def test_day_formats_parse_as_pandas_does(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pandas-free parse of day-only text gives pandas' answer, edge cases and stray values included."""
    days = pd.Series(pd.date_range("1999-12-25", "2001-03-05", freq="D"))
    texts = days.dt.strftime(fmt).tolist()
    texts += [
        d.strftime(fmt).replace("/0", "/").replace("-0", "-").lstrip("0") for d in days[:40]
    ]  # 1/2/2000
    valid = [pd.Series(texts[i : i + raw_dates.SMALL_PARSE], dtype=object) for i in range(0, len(texts), 200)]
    odd = [
        pd.Series(["2/30/2012", "12/31/2012"], dtype=object),  # no such day
        pd.Series(["1/1/1600", "1/1/2012"], dtype=object),  # outside pandas' range
        pd.Series([" 1/1/2012", "1/1/2012 ", "2012-01-05", "not a date", None, "13/13/2012"], dtype=object),
        pd.Series(texts, dtype=object),  # more rows than SMALL_PARSE: pandas parses them
    ]
    expected = [raw_dates._to_datetime(s, fmt).to_numpy(dtype="datetime64[ns]") for s in valid + odd]
    for series, want in zip(odd, expected[len(valid) :], strict=True):
        np.testing.assert_array_equal(raw_dates._datetime_values(series, fmt), want)

    def no_pandas(*args: object) -> None:
        raise AssertionError("a few rows of valid day-only text should not need pandas")

    monkeypatch.setattr(raw_dates, "_to_datetime", no_pandas)
    for series, want in zip(valid, expected, strict=False):
        np.testing.assert_array_equal(raw_dates._datetime_values(series, fmt), want)


def _mixed_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.date_range("2011-01-01", periods=rows, freq="D")
    frame = pd.DataFrame(
        {
            "when": days.strftime("%m/%d/%Y").astype(object),
            "kind": rng.choice(["a", "b", "c"], rows).astype(object),
            "flag": rng.random(rows) < 0.5,
            "count": rng.integers(0, 50, rows),
            "level": rng.normal(size=rows),
        }
    )
    frame.loc[frame.index[::7], "level"] = np.nan
    return frame


@pytest.mark.parametrize("fmt", ["%m/%d/%Y", "%Y-%m-%d", "%d/%m/%Y"])
def test_first_bad_day_finds_what_day_of_refuses(fmt: str) -> None:
    """The batch-sized check (one numpy conversion) refuses exactly the values ``_day_of`` refuses."""
    days = pd.date_range("2011-01-01", periods=400).strftime(fmt).tolist()
    strays = ["2/30/2012", "30/2/2012", "2012-02-30", "2/29/2011", "1/ 5/2012", "4/11/2262", "1/1/1600",
              "notadate", "", None, 7, "12/31/2012", "31/12/2012", "2012-12-31", "2/29/2012", "2012-2-29"]  # fmt: skip
    for stray in strays:
        values = np.array([*days[:5], stray, *days[5:]], dtype=object)
        expected = next((i for i, v in enumerate(values) if raw_dates._day_of(v, fmt) is None), None)
        assert raw_dates._first_bad_day(values, fmt) == expected, (fmt, stray)
    assert raw_dates._first_bad_day(np.array(days, dtype=object), fmt) is None


def test_lightgbm_regressor_is_called_directly_with_the_wrappers_exact_answers() -> None:
    """Dates, categories (unseen and missing ones too), booleans, NaN: the direct Booster call equals
    scikit-learn's LGBMRegressor.predict on the transformed frame, row for row and bit for bit."""
    import cloudpickle
    import lightgbm

    train = _mixed_frame(400, 0)
    featurizer = raw_model.RawFeaturizer().fit(train)
    assert featurizer.date_columns == ["when"] and list(featurizer.category_levels) == ["kind"]
    y = train["count"] * 2.0 + train["flag"] + np.nan_to_num(train["level"].to_numpy())
    estimator = lightgbm.LGBMRegressor(n_estimators=30, n_jobs=1, verbose=-1).fit(
        featurizer.transform(train), y
    )
    model = raw_model.RawColumnsModel(featurizer, estimator=estimator, task="regression", label="y")

    new = _mixed_frame(60, 1)
    new.loc[new.index[3], "kind"] = "never seen"
    new.loc[new.index[4], "kind"] = None
    new.loc[new.index[5], "when"] = "2012-03-04"  # a stray date format
    expected = estimator.predict(featurizer.transform(new))
    first = model.predict(new.head(2))  # the first call learns the direct call and checks it
    assert model._booster_call() is not None and model._booster_call().ready
    np.testing.assert_array_equal(first, expected[:2])
    for start in range(0, 60, 7):  # one row, several rows, the odd ones included
        np.testing.assert_array_equal(model.predict(new.iloc[start : start + 3]), expected[start : start + 3])
    np.testing.assert_array_equal(model.predict(new), expected)

    copy = cloudpickle.loads(cloudpickle.dumps(model))  # the per-process cache is not pickled
    assert "_fast" not in copy.__dict__
    np.testing.assert_array_equal(copy.predict(new), expected)

    big = _mixed_frame(raw_model.CHECK_ROWS + 44, 5)  # a first call bigger than the compared slice
    fresh = cloudpickle.loads(cloudpickle.dumps(model))
    np.testing.assert_array_equal(fresh.predict(big), estimator.predict(featurizer.transform(big)))
    assert fresh._booster_call().ready is True

    doubtful = cloudpickle.loads(
        cloudpickle.dumps(model)
    )  # a first call that does not match: wrapper for good
    doubtful._booster_call().feature_names = ["not", "these"]
    np.testing.assert_array_equal(doubtful.predict(new.head(2)), expected[:2])
    assert doubtful._booster_call().ready is False
    np.testing.assert_array_equal(doubtful.predict(new), expected)
    assert doubtful._booster_call().ready is False


def test_other_estimators_keep_their_own_predict() -> None:
    import lightgbm
    from sklearn.linear_model import LinearRegression

    train = _mixed_frame(200, 2)
    featurizer = raw_model.RawFeaturizer().fit(train.drop(columns=["kind"]))
    features = featurizer.transform(train.drop(columns=["kind"])).fillna(0.0)
    linear = LinearRegression().fit(features, train["count"])
    model = raw_model.RawColumnsModel(featurizer, estimator=linear, task="regression", label="count")
    assert model._booster_call() is None
    classifier = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(features, train["flag"])
    model = raw_model.RawColumnsModel(featurizer, estimator=classifier, task="classification", label="flag")
    assert model._booster_call() is None
    np.testing.assert_array_equal(model.predict(train.head(5)), classifier.predict(features.head(5)))


def test_thread_budget_caps_n_jobs_inside_ensembles_and_keeps_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AutoML fits with n_jobs=-1; loaded where OMP_NUM_THREADS is set (a deployment's or a batch
    worker's budget), every member of the model predicts with that many threads, with the same answers."""
    import types

    import cloudpickle
    import lightgbm
    from sklearn.ensemble import RandomForestRegressor, StackingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = _mixed_frame(300, 3).drop(columns=["kind"])
    featurizer = raw_model.RawFeaturizer().fit(train)
    features = featurizer.transform(train).fillna(0.0)
    stack = StackingRegressor(
        [
            ("rf", RandomForestRegressor(n_estimators=20, n_jobs=-1, random_state=0)),
            ("lgbm", lightgbm.LGBMRegressor(n_estimators=10, n_jobs=-1, verbose=-1)),
        ],
        final_estimator=make_pipeline(StandardScaler(), LinearRegression(n_jobs=4)),
        n_jobs=-1,
    ).fit(features, train["count"])
    expected = stack.predict(features)
    model = raw_model.RawColumnsModel(featurizer, estimator=stack, task="regression", label="count")
    pickle_path = tmp_path / "model.pkl"
    pickle_path.write_bytes(cloudpickle.dumps(model))

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    wrapper = raw_model.RawModelPyfunc()
    wrapper.load_context(types.SimpleNamespace(artifacts={"model": str(pickle_path)}))
    loaded = wrapper.model.estimator
    members = [*loaded.estimators_, loaded.final_estimator_.steps[-1][1]]
    assert loaded.n_jobs == 1 and [m.n_jobs for m in members] == [1, 1, 1]
    np.testing.assert_array_equal(wrapper.predict(None, train.fillna({"level": 0.0})), expected)
    assert raw_model.limit_threads(loaded, 1) == 0  # nothing left above the budget
    forest = loaded.estimators_[0]
    assert isinstance(forest.__dict__.get("predict"), raw_model.SequentialTrees)  # one thread: tree by tree
    assert forest.__dict__["predict"].ready is True  # its first answer was the forest's own

    monkeypatch.delenv("OMP_NUM_THREADS")
    wrapper.load_context(types.SimpleNamespace(artifacts={"model": str(pickle_path)}))
    assert wrapper.model.estimator.n_jobs == -1  # no budget given: as trained
    assert "predict" not in wrapper.model.estimator.estimators_[0].__dict__  # and its threads are its own


def test_thread_budget_sets_the_attribute_where_set_params_refuses_and_skips_read_only_ones() -> None:
    class Wrapper:  # like a library wrapper: get_params, but n_jobs is not one of its parameters
        n_jobs = -1

        def get_params(self) -> dict:
            return {}

        def set_params(self, **params: object) -> None:
            raise ValueError(f"invalid parameters {sorted(params)}")

    class ReadOnly(Wrapper):
        @property
        def n_jobs(self) -> int:
            return -1

    wrapper = Wrapper()
    assert raw_model.limit_threads(wrapper, 2) == 1 and wrapper.n_jobs == 2
    outer = Wrapper()
    outer._model = ReadOnly()
    outer._model.model = Wrapper()  # still reached through the read-only one
    assert raw_model.limit_threads(outer, 1) == 2
    assert outer.n_jobs == 1 and outer._model.n_jobs == -1 and outer._model.model.n_jobs == 1


def _forest_data(n: int = 400, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    X[rng.random(X.shape) < 0.03] = np.nan  # trees in scikit-learn 1.9 route missing values
    return X, np.nansum(X[:, :3], axis=1) + rng.normal(scale=0.1, size=n)


@pytest.mark.parametrize("kind", ["RandomForestRegressor", "ExtraTreesRegressor"])
def test_one_thread_forests_loop_over_their_trees_with_the_same_answers(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn import ensemble

    X, y = _forest_data()
    forest = getattr(ensemble, kind)(n_estimators=30, n_jobs=1, random_state=0).fit(X, y)
    slices = [X[:1], X[:2], X[5:21], X]
    expected = [forest.predict(part) for part in slices]
    assert raw_model.sequential_forests(forest) == 1
    assert raw_model.sequential_forests(forest) == 0  # once is enough
    first = forest.predict(X[:2])  # answered by the forest's own method, compared with the loop
    assert forest.__dict__["predict"].ready is True
    np.testing.assert_array_equal(first, expected[1])

    def no_joblib(*args: object, **kwargs: object) -> None:
        raise AssertionError("the forest went through joblib")

    monkeypatch.setattr("sklearn.ensemble._forest.Parallel", no_joblib)
    for part, answer in zip(slices, expected, strict=True):
        got = forest.predict(part)
        assert got.dtype == answer.dtype and np.array_equal(got, answer)  # bit for bit


def test_one_thread_forest_classifier_loops_for_probabilities_and_classes() -> None:
    from sklearn.ensemble import RandomForestClassifier

    X, y = _forest_data(seed=9)
    labels = np.where(y > 0.5, "high", np.where(y < -0.5, "low", "mid"))
    forest = RandomForestClassifier(n_estimators=25, random_state=0).fit(X, labels)  # n_jobs=None: one thread
    proba, classes = forest.predict_proba(X), forest.predict(X)
    assert raw_model.sequential_forests(forest) == 1
    forest.predict_proba(X[:3])
    assert forest.__dict__["predict_proba"].ready is True
    np.testing.assert_array_equal(forest.predict_proba(X), proba)
    np.testing.assert_array_equal(forest.predict(X), classes)


def test_forests_with_threads_or_many_outputs_or_a_failed_check_keep_their_own_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pickle

    from sklearn.ensemble import RandomForestRegressor

    X, y = _forest_data()
    threaded = RandomForestRegressor(n_estimators=5, n_jobs=2, random_state=0).fit(X, y)
    two_outputs = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, np.c_[y, -y])
    assert raw_model.sequential_forests(threaded) == 0 and raw_model.sequential_forests(two_outputs) == 0
    assert "predict" not in threaded.__dict__ and "predict" not in two_outputs.__dict__

    forest = RandomForestRegressor(n_estimators=10, n_jobs=1, random_state=0).fit(X, y)
    expected = forest.predict(X)
    raw_model.sequential_forests(forest)
    monkeypatch.setattr(raw_model.SequentialTrees, "loop", lambda self, X: np.zeros(len(X)))  # a wrong loop
    np.testing.assert_array_equal(forest.predict(X), expected)
    assert forest.__dict__["predict"].ready is False
    np.testing.assert_array_equal(forest.predict(X[:7]), expected[:7])  # the forest's own method, for good
    monkeypatch.undo()
    copy = pickle.loads(pickle.dumps(forest))  # a pickled forest checks its loop again
    assert copy.__dict__["predict"].ready is None
    np.testing.assert_array_equal(copy.predict(X), expected)
    assert copy.__dict__["predict"].ready is True
