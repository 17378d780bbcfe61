"""How the local ParallelRunStep engine cuts its input into mini-batches, and how a worker reads one.

TabularDataset (CSV files): mini-batches are byte ranges of about ``mini_batch_size`` bytes, aligned to
line ends, that never cross a file boundary. The parent only seeks and reads a few bytes around each
cut; the worker reads its own range (plus the file's header line) with pyarrow. Quoted fields that
contain line breaks are not supported (a cut may land inside one).

FileDataset (any files): mini-batches are lists of ``mini_batch_size`` file paths (default 10).

With ``partition_keys`` (CSV files sharing one header): one mini-batch per distinct combination of the
key columns' values, across all the files, in order of first appearance. The parent copies each
partition's lines, as they are in the files, into a CSV file of its own, which a worker reads like any
other range; ``partition`` holds the key values as the files spell them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.core import defaults
from pipelines.errors import UserError

SIZE_PATTERN = re.compile(r"^\d+([kKmMgG][bB])*$")  # the SDK's own rule (ParallelRunConfig)
UNITS = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
DEFAULT_TABULAR_SIZE = 1024**2  # 1MB
DEFAULT_FILE_COUNT = defaults.PRS_FILE_MINI_BATCH_SIZE
_SCAN_BLOCK = 4096


@dataclass(frozen=True)
class MiniBatch:
    """One unit of work: a byte range of one CSV file, or a list of files."""

    id: int
    kind: str  # "tabular" or "file"
    path: str = ""  # tabular: the CSV file
    header_end: int = 0  # tabular: byte offset just after the header line
    start: int = 0  # tabular: first byte of the range (a line start)
    end: int = 0  # tabular: one past the last byte of the range (a line end)
    files: tuple[str, ...] = ()  # file: the paths handed to run()
    partition: tuple[tuple[str, str], ...] = ()  # partition_keys: (key, value) pairs of these rows

    def describe(self) -> str:
        """A short human-readable name of what this mini-batch holds."""
        if self.partition:
            return ", ".join(f"{key}={value}" for key, value in self.partition)
        if self.kind == "tabular":
            return f"{Path(self.path).name}[{self.start}:{self.end}]"
        if len(self.files) == 1:
            return Path(self.files[0]).name
        return f"{Path(self.files[0]).name} .. {Path(self.files[-1]).name} ({len(self.files)} files)"

    def to_message(self) -> dict[str, object]:
        """The JSON-able form sent to a worker."""
        return {
            "id": self.id,
            "kind": self.kind,
            "path": self.path,
            "header_end": self.header_end,
            "start": self.start,
            "end": self.end,
            "files": list(self.files),
            "partition": [list(pair) for pair in self.partition],
        }

    @classmethod
    def from_message(cls, msg: dict[str, object]) -> MiniBatch:
        """Inverse of ``to_message``."""
        return cls(
            id=int(msg["id"]),  # type: ignore[arg-type]
            kind=str(msg["kind"]),
            path=str(msg["path"]),
            header_end=int(msg["header_end"]),  # type: ignore[arg-type]
            start=int(msg["start"]),  # type: ignore[arg-type]
            end=int(msg["end"]),  # type: ignore[arg-type]
            files=tuple(msg["files"]),  # type: ignore[arg-type]
            partition=tuple((str(k), str(v)) for k, v in msg.get("partition") or ()),  # type: ignore[union-attr]
        )


def parse_mini_batch_size(value: str | int | None, kind: str) -> int:
    """``mini_batch_size`` as the SDK reads it: bytes for tabular input, a file count for file input."""
    if value is None or value == "":
        return DEFAULT_TABULAR_SIZE if kind == "tabular" else DEFAULT_FILE_COUNT
    text = str(value).strip()
    if not SIZE_PATTERN.match(text):
        raise UserError(
            f"invalid mini_batch_size {text!r}: it must match ^\\d+([kKmMgG][bB])*$",
            hint="use a number with an optional KB/MB/GB unit, e.g. 1MB, 512KB or 10",
        )
    digits = re.match(r"\d+", text).group(0)  # type: ignore[union-attr]
    unit = text[len(digits) :].lower()
    if unit and unit not in UNITS:  # the pattern allows repeated units ("1KBMB"); the SDK fails on those
        raise UserError(f"invalid mini_batch_size {text!r}: more than one unit", hint="e.g. 1MB")
    size = int(digits) * UNITS.get(unit, 1)
    if size <= 0:
        raise UserError(f"mini_batch_size must be positive, got {text!r}", hint="e.g. 1MB")
    return size


def tabular_mini_batches(files: Sequence[Path], size: int, first_id: int = 0) -> Iterator[MiniBatch]:
    """Byte ranges of about ``size`` bytes per CSV file, cut at line ends; never crossing a file."""
    next_id = first_id
    for path in files:
        file_size = path.stat().st_size
        with open(path, "rb") as fh:
            header_end = _line_end_at_or_after(fh, 0, file_size)
            start = header_end
            while start < file_size:
                target = min(start + size, file_size)
                end = file_size if target >= file_size else _line_end_at_or_after(fh, target - 1, file_size)
                if _has_content(fh, start, end):
                    yield MiniBatch(
                        id=next_id,
                        kind="tabular",
                        path=str(path),
                        header_end=header_end,
                        start=start,
                        end=end,
                    )
                    next_id += 1
                start = end


def file_mini_batches(files: Sequence[Path], count: int, first_id: int = 0) -> Iterator[MiniBatch]:
    """Lists of ``count`` file paths."""
    for index in range(0, len(files), count):
        group = tuple(str(p) for p in files[index : index + count])
        yield MiniBatch(id=first_id + index // count, kind="file", files=group)


def partition_header(files: Sequence[Path], keys: Sequence[str]) -> bytes:
    """The header line the CSV files share (empty files aside); UserError if they differ or lack a key."""
    header = b""
    for path in files:
        with open(path, "rb") as fh:
            line = fh.readline().rstrip(b"\r\n").removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM aside
        if not line:  # an empty file: no rows, as without partition_keys
            continue
        if header and line != header:
            raise UserError(
                f"{path.name} has another header than {Path(files[0]).name}: with partition_keys, the CSV files of "
                "an input must share one header",
                hint="give the input files the same columns in the same order",
            )
        header = line
    columns = next(csv.reader([header.decode("utf-8", "replace")]), [])
    missing = [key for key in keys if key not in columns]
    if missing:
        raise UserError(
            f"partition_keys {missing} are not columns of the input (columns: {', '.join(columns)})",
            hint="name columns of the input CSV files in partition_keys",
        )
    return header


@dataclass
class Partitions:
    """The rows of CSV files grouped by the values of key columns: each group's lines, as in the files."""

    keys: tuple[str, ...]
    header: bytes  # the shared header line, with its newline
    groups: dict[tuple[str, ...], list[bytes]]


def read_partitions(files: Sequence[Path], keys: Sequence[str]) -> Partitions:
    """Group the rows of ``files`` by the text of their ``keys`` columns, in order of first appearance."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = partition_header(files, keys) + b"\n"
    groups: dict[tuple[str, ...], list[bytes]] = {}
    for path in files:
        data = Path(path).read_bytes()
        if b"\n" not in data:  # empty, or a header and no rows
            continue
        lines = [line for line in data[data.index(b"\n") + 1 :].split(b"\n") if line.strip(b"\r")]
        try:
            table = pacsv.read_csv(
                pa.BufferReader(header + b"\n".join(lines)),
                read_options=pacsv.ReadOptions(block_size=max(1 << 20, len(data) + len(header) + 1024)),
                convert_options=pacsv.ConvertOptions(
                    include_columns=list(keys), column_types={key: pa.string() for key in keys}
                ),
            )
        except pa.ArrowInvalid as exc:
            raise UserError(
                f"{Path(path).name} cannot be read as CSV: {str(exc).splitlines()[0]}",
                hint="fix the file: every row needs the header's columns",
            ) from None
        if table.num_rows != len(lines):
            raise UserError(
                f"{Path(path).name}: {table.num_rows} rows in {len(lines)} lines; with partition_keys, quoted "
                "fields that hold line breaks are not supported",
                hint="remove line breaks inside quoted fields",
            )
        values = zip(*(table.column(key).to_pylist() for key in keys), strict=True)
        for line, value in zip(lines, values, strict=True):
            groups.setdefault(value, []).append(line)
    return Partitions(tuple(keys), header, groups)


def write_partitions(partitions: Partitions, folder: Path, first_id: int = 0) -> list[MiniBatch]:
    """One mini-batch per group, each written to a CSV file of its own in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    header = partitions.header
    batches = []
    for index, (value, rows) in enumerate(partitions.groups.items()):
        path = folder / f"partition-{index:06d}.csv"
        body = b"\n".join(rows) + b"\n"
        path.write_bytes(header + body)
        batches.append(
            MiniBatch(
                id=first_id + index,
                kind="tabular",
                path=str(path),
                header_end=len(header),
                start=len(header),
                end=len(header) + len(body),
                partition=tuple(zip(partitions.keys, value, strict=True)),
            )
        )
    return batches


def _line_end_at_or_after(fh: io.BufferedReader, pos: int, file_size: int) -> int:
    """The offset just after the first newline at or after ``pos`` (or the file size)."""
    fh.seek(pos)
    offset = pos
    while offset < file_size:
        block = fh.read(_SCAN_BLOCK)
        if not block:
            break
        found = block.find(b"\n")
        if found >= 0:
            return offset + found + 1
        offset += len(block)
    return file_size


def _has_content(fh: io.BufferedReader, start: int, end: int) -> bool:
    """False for ranges holding only blank lines (e.g. trailing newlines)."""
    fh.seek(start)
    return bool(fh.read(min(end - start, _SCAN_BLOCK)).strip()) or end - start > _SCAN_BLOCK


def read_tabular(batch: MiniBatch, threads: int = 1):  # -> pandas.DataFrame (imported lazily)
    """The DataFrame of one tabular mini-batch: the file's header line plus its byte range (pyarrow)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(batch.path, "rb") as fh:
        header = fh.read(batch.header_end)
        fh.seek(batch.start)
        body = fh.read(batch.end - batch.start)
    if not header.endswith(b"\n"):
        header += b"\n"
    read_options = pacsv.ReadOptions(use_threads=threads > 1, block_size=max(1 << 20, len(body) + 1024))
    table = pacsv.read_csv(pa.BufferReader(header + body), read_options=read_options)
    return table.to_pandas()
