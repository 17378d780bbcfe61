"""Collect step of the batch pipeline: ParallelRunStep's raw append_row file -> headered CSV and Parquet.

ParallelRunStep's ``append_row`` output is space-separated with no header; this step names the
columns (the key columns, then the prediction, in the order the entry script returns them) and
writes ``predictions.csv`` and ``predictions.parquet``.

The file is streamed through pyarrow in blocks (memory stays flat whatever the number of rows): key
columns stay text as written (``007`` stays ``007``); the prediction column becomes whole numbers,
else decimals, else text (class labels), whichever holds for every row.
"""

from __future__ import annotations

import argparse
import csv
import json
import mmap
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

BLOCK_BYTES = 8 << 20


class CollectError(ValueError):
    """The append_row file does not have the shape the arguments describe."""


def find_append_file(scores: Path, file_name: str) -> Path:
    """The append_row file in the ParallelRunStep output folder."""
    candidates = [scores / file_name] if scores.is_dir() else [scores]
    candidates += sorted(scores.rglob(file_name)) if scores.is_dir() else []
    for path in candidates:
        if path.is_file():
            return path
    raise CollectError(f"no {file_name} in {scores}; did the ParallelRunStep use output_action='append_row'?")


def _contains(path: Path, needles: tuple[bytes, ...]) -> bool:
    """Whether any of ``needles`` occurs in the file (scanned without reading it into memory)."""
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return any(data.find(needle) != -1 for needle in needles)


def _batches(path: Path, columns: list[str], prediction_type: Any, quoted: bool) -> Any:
    """The append_row file's rows in record batches, keys as text and the prediction as ``prediction_type``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {c: pa.string() for c in columns[:-1]} | {columns[-1]: prediction_type}
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=columns, block_size=BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(delimiter=" ", newlines_in_values=quoted),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
    )
    yield from reader


def write_predictions(source: Path, columns: list[str], out_dir: Path) -> int:
    """Stream ``source`` (append_row, space-separated) into ``predictions.csv`` and ``predictions.parquet``
    in ``out_dir`` (each written to a temp file, then renamed); the number of rows."""
    import pyarrow as pa

    needs_quotes = _contains(source, (b'"', b","))  # a value with a space, a quote or a comma
    quoted = _contains(source, (b'"',))
    for prediction_type in (pa.int64(), pa.float64(), pa.string()):
        try:
            return _write_all(source, columns, out_dir, prediction_type, quoted, needs_quotes)
        except pa.ArrowInvalid as exc:
            text = str(exc)
            if "columns" in text and "Expected" in text:
                raise CollectError(
                    f"{source.name} does not have {len(columns)} fields per row ({', '.join(columns)}): "
                    f"{text.splitlines()[0]}"
                ) from None
            if prediction_type == pa.string():
                raise CollectError(f"{source.name} cannot be read: {text.splitlines()[0]}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _write_all(
    source: Path, columns: list[str], out_dir: Path, prediction_type: Any, quoted: bool, needs_quotes: bool
) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = pa.schema(
        [pa.field(c, pa.string()) for c in columns[:-1]] + [pa.field(columns[-1], prediction_type)]
    )
    temps = {name: _temp(out_dir, name) for name in ("predictions.csv", "predictions.parquet")}
    rows = 0
    try:
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed" if needs_quotes else "none")
        with open(temps["predictions.csv"], "w", newline="", encoding="utf-8") as header_file:
            csv.writer(header_file).writerow(columns)  # quoted only where a name needs it, as pandas does
        with (
            open(temps["predictions.csv"], "ab") as csv_file,
            pacsv.CSVWriter(csv_file, schema, write_options=options) as csv_writer,
            pq.ParquetWriter(temps["predictions.parquet"], schema) as parquet_writer,
        ):
            if source.stat().st_size:
                for batch in _batches(source, columns, prediction_type, quoted):
                    csv_writer.write_batch(batch)
                    parquet_writer.write_batch(batch)
                    rows += batch.num_rows
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    for name, tmp in temps.items():
        os.replace(tmp, out_dir / name)
    return rows


def _temp(folder: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    os.close(fd)
    return Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scores", required=True, type=Path)
    parser.add_argument("--key_columns", default="")
    parser.add_argument("--prediction_column", default="prediction")
    parser.add_argument("--append_row_file_name", default="parallel_run_step.txt")
    parser.add_argument("--predictions", required=True, type=Path)
    args, _ = parser.parse_known_args(argv)
    columns = [c.strip() for c in args.key_columns.split(",") if c.strip()] + [args.prediction_column]
    args.predictions.mkdir(parents=True, exist_ok=True)
    try:
        rows = write_predictions(
            find_append_file(args.scores, args.append_row_file_name), columns, args.predictions
        )
    except CollectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (args.predictions / "summary.json").write_text(json.dumps({"rows": rows, "columns": columns}))
    print(f"collect: {rows} predictions -> {args.predictions / 'predictions.csv'} and predictions.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
