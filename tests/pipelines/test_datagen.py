"""The bike-like data generator: schema, plausibility, determinism, chunked writing, CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines import datagen


def test_schema_matches_bike_no(bike_csv: Path) -> None:
    real = pd.read_csv(bike_csv)
    fake = datagen.generate(731, seed=1)
    assert list(fake.columns) == list(real.columns)
    assert fake.dtypes.to_dict() == real.dtypes.to_dict()


def test_calendar_columns_follow_the_real_data_for_its_dates(bike_csv: Path) -> None:
    real = pd.read_csv(bike_csv)
    fake = datagen.generate(len(real), seed=3)
    for column in ("instant", "date", "season", "yr", "mnth", "weekday"):
        assert fake[column].tolist() == real[column].tolist(), column


def test_values_are_plausible() -> None:
    df = datagen.generate(5000, seed=7)
    assert (df.casual + df.registered == df.cnt).all()
    assert (df.casual >= 0).all() and (df.registered >= 0).all()
    for column in ("temp", "atemp", "hum", "windspeed"):
        assert df[column].between(0, 1).all(), column
    assert set(df.weathersit) <= {1, 2, 3}
    summer = df[df.season == 3].temp.mean()
    winter = df[df.season == 1].temp.mean()
    assert summer > winter + 0.2  # seasonal temperature
    assert df[df.season == 3].cnt.mean() > df[df.season == 1].cnt.mean()
    assert df.instant.is_unique and df.instant.iloc[0] == 1


def test_dates_stay_readable_on_many_rows() -> None:
    """After 200 years the calendar starts again (instant goes on): every date is inside pandas' range."""
    first = datagen.generate(3, seed=1)
    later = datagen._chunk(datagen.CYCLE_DAYS - 1, 3, seed=1, index=0)
    assert later.date.tolist() == ["12/31/2210", *first.date.tolist()[:2]]
    assert later.instant.tolist() == [datagen.CYCLE_DAYS, datagen.CYCLE_DAYS + 1, datagen.CYCLE_DAYS + 2]
    assert later.yr.tolist() == [199, 0, 0]


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a, b, c = datagen.generate(300, seed=5), datagen.generate(300, seed=5), datagen.generate(300, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not a.temp.equals(c.temp)


def test_write_csv_streams_the_same_rows_as_generate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datagen, "CHUNK_ROWS", 1000)  # several chunks in a small file
    path = datagen.write_csv(tmp_path / "sub" / "bike.csv", 3500, seed=9)
    assert path.read_text().splitlines()[0] == ",".join(datagen.COLUMNS)
    pd.testing.assert_frame_equal(pd.read_csv(path), datagen.generate(3500, seed=9))
    assert not list(path.parent.glob("*.part"))


def test_zero_rows_gives_header_only(tmp_path: Path) -> None:
    path = datagen.write_csv(tmp_path / "empty.csv", 0)
    assert path.read_text() == ",".join(datagen.COLUMNS) + "\n"
    assert datagen.generate(0).empty


def test_cli_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bike.csv"
    assert datagen.main(["--rows", "50", "--seed", "2", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 50
    assert "50 rows" in capsys.readouterr().err


def test_cli_rejects_negative_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert datagen.main(["--rows", "-1", "--out", str(tmp_path / "x.csv")]) == 2
    assert "error:" in capsys.readouterr().err
