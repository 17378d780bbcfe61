"""The batch pipeline's collect step: append_row text in, headered CSV and Parquet out, every row kept."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT  # noqa: E402

sys.path.insert(0, str(PROJECT_ROOT / "steps"))
import batch_output  # noqa: E402


def collect(tmp_path: Path, text: str, keys: str = "instant,date") -> tuple[int, Path]:
    scores = tmp_path / "scores"
    scores.mkdir()
    (scores / "parallel_run_step.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "predictions"
    code = batch_output.main(["--scores", str(scores), "--key_columns", keys, "--predictions", str(out)])
    return code, out


def test_rows_keep_their_order_keys_stay_text_and_predictions_are_numbers(tmp_path: Path) -> None:
    code, out = collect(tmp_path, "007 2011-01-01 770.5\n8 2011-01-02 12\n9 2011-01-03 -1e-07\n")
    assert code == 0
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines == [
        "instant,date,prediction",
        "007,2011-01-01,770.5",
        "8,2011-01-02,12",
        "9,2011-01-03,-1e-7",
    ]  # as the workers spell it
    table = pd.read_parquet(out / "predictions.parquet")
    assert table["instant"].tolist() == ["007", "8", "9"]
    assert table["prediction"].dtype == "float64" and table["prediction"].tolist() == [770.5, 12.0, -1e-07]


def test_whole_number_predictions_stay_integers_and_labels_stay_text(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    code, out = collect(tmp_path / "a", "1 3\n2 4\n", keys="id")
    assert code == 0 and pd.read_parquet(out / "predictions.parquet")["prediction"].dtype == "int64"
    code, out = collect(tmp_path / "b", "1 yes\n2 no\n", keys="id")
    assert code == 0 and pd.read_parquet(out / "predictions.parquet")["prediction"].tolist() == ["yes", "no"]


def test_quoted_values_with_spaces_commas_and_newlines_round_trip(tmp_path: Path) -> None:
    text = '"a b" "x,y" 1.5\n"multi\nline" plain 2.5\n'
    code, out = collect(tmp_path, text, keys="k1,k2")
    assert code == 0
    frame = pd.read_csv(out / "predictions.csv", dtype={"k1": str, "k2": str})
    assert frame.to_dict("list") == {
        "k1": ["a b", "multi\nline"],
        "k2": ["x,y", "plain"],
        "prediction": [1.5, 2.5],
    }
    assert pd.read_parquet(out / "predictions.parquet").equals(frame)


def test_wrong_field_count_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = collect(tmp_path, "1 2011-01-01 3.0\n2 4.0\n")
    assert code == 2
    assert "fields per row" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == []


def test_empty_output_gives_header_only_files(tmp_path: Path) -> None:
    code, out = collect(tmp_path, "")
    assert code == 0
    assert (out / "predictions.csv").read_text().splitlines() == ["instant,date,prediction"]
    assert len(pd.read_parquet(out / "predictions.parquet")) == 0


def test_streams_more_rows_than_one_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_output, "BLOCK_BYTES", 4096)
    rows = [f"{i} d{i} {i / 4}" for i in range(5000)]  # the first block's predictions are not all whole
    code, out = collect(tmp_path, "\n".join(rows) + "\n")
    assert code == 0
    frame = pd.read_parquet(out / "predictions.parquet")
    assert len(frame) == 5000 and frame["prediction"].tolist() == [i / 4 for i in range(5000)]
