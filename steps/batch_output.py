"""Collect step of the batch pipeline: ParallelRunStep's raw append_row file -> headered CSV and Parquet.

ParallelRunStep's ``append_row`` output is space-separated with no header; this step names the
columns (the key columns, then the prediction, in the order the entry script returns them) and
writes ``predictions.csv`` and ``predictions.parquet``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd


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


def read_append_rows(path: Path, columns: list[str]) -> pd.DataFrame:
    """The append_row file as a DataFrame with ``columns`` as its header."""
    if path.stat().st_size == 0:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    frame = pd.read_csv(path, sep=" ", header=None, dtype={i: "string" for i in range(len(columns) - 1)})
    if frame.shape[1] != len(columns):
        raise CollectError(
            f"{path.name} has {frame.shape[1]} fields per row, expected {len(columns)} ({', '.join(columns)})"
        )
    frame.columns = columns
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scores", required=True, type=Path)
    parser.add_argument("--key_columns", default="")
    parser.add_argument("--prediction_column", default="prediction")
    parser.add_argument("--append_row_file_name", default="parallel_run_step.txt")
    parser.add_argument("--predictions", required=True, type=Path)
    args, _ = parser.parse_known_args(argv)
    columns = [c.strip() for c in args.key_columns.split(",") if c.strip()] + [args.prediction_column]
    try:
        frame = read_append_rows(find_append_file(args.scores, args.append_row_file_name), columns)
    except CollectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:  # regression and probabilities are numbers; class labels may not be
        frame[args.prediction_column] = pd.to_numeric(frame[args.prediction_column])
    except (ValueError, TypeError):
        pass
    args.predictions.mkdir(parents=True, exist_ok=True)
    for name, write in (
        ("predictions.csv", lambda p: frame.to_csv(p, index=False)),
        ("predictions.parquet", lambda p: frame.to_parquet(p, index=False)),
    ):
        fd, tmp = tempfile.mkstemp(dir=args.predictions, prefix=f".{name}.")
        os.close(fd)
        write(tmp)
        os.replace(tmp, args.predictions / name)
    (args.predictions / "summary.json").write_text(json.dumps({"rows": len(frame), "columns": columns}))
    print(
        f"collect: {len(frame)} predictions -> {args.predictions / 'predictions.csv'} and predictions.parquet"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
