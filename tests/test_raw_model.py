"""The registered model's own featurization (steps/raw_model.py): raw columns in, model features out."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "steps"))
import raw_model  # noqa: E402


def _pandas_part(dates: pd.Series, part: str) -> np.ndarray:
    values = dates.dt.isocalendar().week if part == "weekofyear" else getattr(dates.dt, part)
    return pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()


def test_date_parts_equal_pandas_calendar_over_two_centuries() -> None:
    """Every ISO week edge case (53-week years, early January, late December) and NaT included."""
    days = pd.Series(pd.date_range("1899-12-01", "2101-02-01", freq="D"))
    dates = pd.concat([days, pd.Series([pd.NaT, pd.Timestamp("2012-12-31 23:59:59")])], ignore_index=True)
    parts = raw_model.date_parts(dates.to_numpy(dtype="datetime64[ns]"))
    assert list(parts) == list(raw_model.DATE_PARTS)
    for part in raw_model.DATE_PARTS:
        np.testing.assert_array_equal(parts[part], _pandas_part(dates, part), err_msg=part)
    assert np.isnan(parts["year"][-2]) and parts["weekofyear"][-1] == 1.0


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
