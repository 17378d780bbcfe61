"""How the local ParallelRunStep engine cuts input into mini-batches (the parent's side, no workers)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines import datagen
from pipelines.errors import UserError
from pipelines.local.parallel_run.mini_batches import (
    MiniBatch,
    file_mini_batches,
    parse_mini_batch_size,
    read_partitions,
    read_tabular,
    tabular_mini_batches,
    write_partitions,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1024", 1024), (2048, 2048), ("1KB", 1024), ("10kb", 10240), ("1MB", 1024**2), ("2Mb", 2 * 1024**2),
     ("1GB", 1024**3), (None, 1024**2)],
)  # fmt: skip
def test_tabular_sizes_follow_the_sdk(value: str | int | None, expected: int) -> None:
    assert parse_mini_batch_size(value, "tabular") == expected


def test_file_default_is_ten_files() -> None:
    assert parse_mini_batch_size(None, "file") == 10
    assert parse_mini_batch_size("3", "file") == 3


@pytest.mark.parametrize("value", ["1XB", "1 MB", "MB", "-1", "1.5MB", "1KBMB", "0"])
def test_invalid_sizes_are_user_errors(value: str) -> None:
    with pytest.raises(UserError, match="mini_batch_size"):
        parse_mini_batch_size(value, "tabular")


def _csv(path: Path, n: int, seed: int = 0, offset: int = 0) -> Path:
    df = datagen.generate(n, seed)
    df["instant"] += offset
    df.to_csv(path, index=False)
    return path


def test_ranges_are_line_aligned_cover_the_file_and_stay_near_the_size(tmp_path: Path) -> None:
    path = _csv(tmp_path / "a.csv", 2000)
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    batches = list(tabular_mini_batches([path], 8 * 1024))
    assert len(batches) == pytest.approx(len(data) / (8 * 1024), abs=1.5)
    assert batches[0].start == header_end and batches[-1].end == len(data)
    longest_line = max(len(line) + 1 for line in data.split(b"\n"))
    for prev, nxt in zip(batches, batches[1:], strict=False):
        assert prev.end == nxt.start  # contiguous: nothing lost, nothing read twice
    for batch in batches:
        assert data[batch.start - 1 : batch.start] == b"\n"
        assert data[batch.end - 1 : batch.end] == b"\n"
        assert batch.end - batch.start <= 8 * 1024 + longest_line
    assert [b.id for b in batches] == list(range(len(batches)))


def test_workers_read_exactly_the_rows_of_their_range(tmp_path: Path) -> None:
    path = _csv(tmp_path / "a.csv", 1500, seed=4)
    frames = [read_tabular(b) for b in tabular_mini_batches([path], 5000)]
    whole = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(whole, pd.read_csv(path), check_dtype=False)
    assert all(list(f.columns) == datagen.COLUMNS for f in frames)


def test_mini_batches_never_cross_a_file_boundary(tmp_path: Path) -> None:
    a = _csv(tmp_path / "a.csv", 700)
    b = _csv(tmp_path / "b.csv", 300, seed=1, offset=100_000)
    batches = list(tabular_mini_batches([a, b], 20 * 1024))
    assert {x.path for x in batches} == {str(a), str(b)}
    for batch in batches:
        instants = read_tabular(batch).instant
        assert (instants < 100_000).all() or (instants > 100_000).all()
    # the last mini-batch of a.csv is cut short at its end instead of spilling into b.csv
    last_a = [x for x in batches if x.path == str(a)][-1]
    assert last_a.end == a.stat().st_size


def test_file_without_trailing_newline_and_blank_tail(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n5,6")
    assert sum(len(read_tabular(m)) for m in tabular_mini_batches([path], 4)) == 3
    path.write_bytes(b"a,b\n1,2\n\n\n")
    assert [len(read_tabular(m)) for m in tabular_mini_batches([path], 4)] == [1]
    path.write_bytes(b"a,b\n")
    assert list(tabular_mini_batches([path], 4)) == []


def test_parent_planning_does_not_read_whole_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _csv(tmp_path / "a.csv", 20_000)
    reads: list[int] = []
    real_open = open

    def spy_open(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        fh = real_open(*args, **kwargs)
        real_read = fh.read

        def read(n: int = -1) -> bytes:
            data = real_read(n)
            reads.append(len(data))
            return data

        fh.read = read
        return fh

    monkeypatch.setattr("builtins.open", spy_open)
    batches = list(tabular_mini_batches([path], 100 * 1024))
    assert len(batches) > 10
    assert sum(reads) < path.stat().st_size / 4  # a few small reads around each cut, no full scan


def test_file_mini_batches_are_lists_of_count_paths(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i:02d}.txt" for i in range(25)]
    batches = list(file_mini_batches(files, 10))
    assert [len(b.files) for b in batches] == [10, 10, 5]
    assert [p for b in batches for p in b.files] == [str(f) for f in files]
    assert batches[2].kind == "file" and batches[2].id == 2


def test_message_round_trip() -> None:
    batch = MiniBatch(id=3, kind="tabular", path="/x.csv", header_end=5, start=5, end=99)
    assert MiniBatch.from_message(batch.to_message()) == batch
    assert batch.describe() == "x.csv[5:99]"


def partitioned_mini_batches(
    files: list[Path], keys: list[str], folder: Path, first_id: int = 0
) -> list[MiniBatch]:
    return write_partitions(read_partitions(files, keys), folder, first_id)


def test_partitions_group_rows_by_key_values_across_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(b"id,shop,brand,price\r\n1,s1,x,1.50\r\n2,s2,x,2.0\r\n\r\n3,s1,y,3\r\n4,s1,x,\r\n")
    b.write_bytes(b"id,shop,brand,price\r\n5,s2,x,5\r\n6,s1,x,6\r\n")
    batches = partitioned_mini_batches([a, b], ["shop", "brand"], tmp_path / "parts", first_id=3)
    # one mini-batch per (shop, brand), in order of first appearance, across both files
    assert [b.partition for b in batches] == [
        (("shop", "s1"), ("brand", "x")), (("shop", "s2"), ("brand", "x")), (("shop", "s1"), ("brand", "y"))
    ]  # fmt: skip
    assert [b.id for b in batches] == [3, 4, 5]
    assert batches[0].describe() == "shop=s1, brand=x"
    frames = [read_tabular(b) for b in batches]
    assert [f.id.tolist() for f in frames] == [[1, 4, 6], [2, 5], [3]]
    # the rows' text is copied as it is: 1.50 stays a float, the empty price is missing
    assert frames[0].price.iloc[0] == 1.5 and pd.isna(frames[0].price.iloc[1])
    assert MiniBatch.from_message(batches[0].to_message()) == batches[0]


def test_partition_key_values_are_the_files_text(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("k,v\n01,a\n1,b\n,c\n01,d\n")
    batches = partitioned_mini_batches([data], ["k"], tmp_path / "parts")
    assert [dict(b.partition)["k"] for b in batches] == ["01", "1", ""]
    assert [read_tabular(b).v.tolist() for b in batches] == [["a", "d"], ["b"], ["c"]]


@pytest.mark.parametrize(
    ("second", "match"),
    [("shop,id\n1,2\n", "another header"), (None, "not columns of the input")],
)
def test_partitions_need_one_header_with_the_keys(tmp_path: Path, second: str | None, match: str) -> None:
    first = tmp_path / "a.csv"
    first.write_text("id,shop\n1,s1\n")
    files = [first]
    if second is not None:
        (tmp_path / "b.csv").write_text(second)
        files.append(tmp_path / "b.csv")
    keys = ["shop"] if second is not None else ["shop", "region"]
    with pytest.raises(UserError, match=match):
        partitioned_mini_batches(files, keys, tmp_path / "parts")
    assert not (tmp_path / "parts").exists()


def test_a_row_with_the_wrong_number_of_fields_is_a_user_error(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("id,shop\n1,s1\n2,s2,extra\n")
    with pytest.raises(UserError, match="cannot be read as CSV"):
        partitioned_mini_batches([data], ["shop"], tmp_path / "parts")
    data.write_text('id,shop\n1,"s\n1"\n')
    with pytest.raises(UserError, match="quoted fields that hold line breaks are not supported"):
        partitioned_mini_batches([data], ["shop"], tmp_path / "parts")
