"""Prep step: validate the raw data, drop target-leaking columns, split by time into train and test.

Runs unchanged as an Azure ML PythonScriptStep and on the local engine: arguments are parsed with
``parse_known_args`` (Azure adds its own), outputs are folders given as paths.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

LEAK_CORRELATION = 0.995


class PrepError(ValueError):
    """The data cannot be prepared as asked; the message says what to change."""


def load_csvs(path: Path) -> pd.DataFrame:
    """One DataFrame from a CSV file or a folder of CSV files (as an Azure download mount gives)."""
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise PrepError(f"no CSV file found in {path}")
    for file in files:
        repeated = repeated_columns(file)
        if repeated:  # pandas would rename the copies (temp.1) and use them as other columns
            raise PrepError(
                f"{file.name} repeats the column name(s) {', '.join(repeated)}; give each column its own name"
            )
    try:
        frames = [pd.read_csv(f) for f in files]
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PrepError(f"cannot read the data as CSV: {exc}") from None
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise PrepError("the data has no rows")
    return frame


def repeated_columns(file: Path) -> list[str]:
    """The names that occur more than once in a CSV file's header line, in header order."""
    with open(file, newline="", encoding="utf-8", errors="replace") as fh:
        header = next(csv.reader(fh), [])
    return sorted({name for name in header if header.count(name) > 1}, key=header.index)


def validate_schema(frame: pd.DataFrame, label: str, task: str) -> None:
    """The label exists, has values, and suits the task."""
    if label not in frame.columns:
        raise PrepError(
            f"label column {label!r} not in the data (columns: {', '.join(map(str, frame.columns))})"
        )
    if frame[label].isna().all():
        raise PrepError(f"label column {label!r} has no values")
    if task in ("regression", "forecasting") and not pd.api.types.is_numeric_dtype(frame[label]):
        raise PrepError(f"label column {label!r} is not numeric; task {task} needs a numeric label")
    if task == "classification" and frame[label].nunique() < 2:
        raise PrepError(f"label column {label!r} has fewer than two classes")
    if len(frame.columns) < 2:
        raise PrepError("the data has no feature columns besides the label")


def find_leaking_columns(frame: pd.DataFrame, label: str) -> dict[str, str]:
    """Columns that give the label away, each with the evidence found.

    Checked, not named: a numeric column equal to the label, (near-)perfectly correlated with it, or
    part of a set of up to three columns whose row sums equal the label on every row.
    """
    y = pd.to_numeric(frame[label], errors="coerce")
    if y.isna().all():
        return {}
    numeric = [
        c
        for c in frame.columns
        if c != label and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].nunique() > 1
    ]
    leaks: dict[str, str] = {}
    for col in numeric:
        x = frame[col]
        if np.allclose(x, y, equal_nan=False):
            leaks[col] = "equals the label"
        else:
            corr = abs(np.corrcoef(x.fillna(x.mean()), y.fillna(y.mean()))[0, 1])
            if corr >= LEAK_CORRELATION:
                leaks[col] = f"correlation with the label {corr:.4f}"
    values = {c: frame[c].to_numpy(dtype=float) for c in numeric}
    target = y.to_numpy(dtype=float)
    for size in (2, 3):
        if len(numeric) > 40:  # keep the search cheap on wide data
            break
        for combo in itertools.combinations(numeric, size):
            total = np.sum([values[c] for c in combo], axis=0)
            if np.allclose(total, target, rtol=0, atol=1e-6 * max(1.0, float(np.nanmax(np.abs(target))))):
                for col in combo:
                    leaks.setdefault(
                        col, "sums with " + " + ".join(c for c in combo if c != col) + " to the label"
                    )
    return leaks


def split_by_time(
    frame: pd.DataFrame, time_column: str, cutoff: str, test_fraction: float = 0.2, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Train = rows up to and including ``cutoff``, test = rows after it; says how it split.

    Without the time column the split is random (``test_fraction``, seeded); an empty ``cutoff``
    puts the last ``test_fraction`` of the time range in test.
    """
    if time_column and time_column in frame.columns:
        times = pd.to_datetime(frame[time_column], errors="coerce", format="mixed")
        if times.isna().any():
            bad = frame.loc[times.isna(), time_column].head(3).tolist()
            raise PrepError(f"time column {time_column!r} has values that are not dates: {bad}")
        order = np.argsort(times.to_numpy(), kind="stable")
        frame, times = frame.iloc[order].reset_index(drop=True), times.iloc[order].reset_index(drop=True)
        if cutoff:
            limit = pd.Timestamp(cutoff)
            how = f"by time: train <= {cutoff} < test"
        else:
            limit = times.iloc[max(0, int(len(times) * (1 - test_fraction)) - 1)]
            how = f"by time: last {test_fraction:.0%} of rows (after {limit.date()}) in test"
        train, test = frame[times <= limit], frame[times > limit]
        if train.empty or test.empty:
            raise PrepError(
                f"cutoff_date {cutoff} leaves {'no training' if train.empty else 'no test'} rows "
                f"(data spans {times.min().date()} to {times.max().date()}); set cutoff_date inside that range "
                "or to an empty value for an 80/20 split"
            )
        return train, test, how
    shuffled = frame.sample(frac=1.0, random_state=seed)
    n_test = max(1, int(round(len(frame) * test_fraction)))
    if len(frame) - n_test < 1:
        raise PrepError("too few rows to split into train and test")
    return (
        shuffled.iloc[n_test:],
        shuffled.iloc[:n_test],
        f"random {1 - test_fraction:.0%}/{test_fraction:.0%} (no time column)",
    )


def prepare(
    frame: pd.DataFrame, label: str, time_column: str, cutoff: str, task: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Validate, drop leaks and rows without a label, split; returns train, test and a report."""
    validate_schema(frame, label, task)
    leaks = find_leaking_columns(frame, label) if task != "classification" else {}
    unlabeled = int(frame[label].isna().sum())
    clean = frame.drop(columns=list(leaks)).dropna(subset=[label])
    train, test, how = split_by_time(clean, time_column, cutoff)
    report = {
        "rows": len(frame),
        "rows_without_label": unlabeled,
        "dropped_leaking_columns": leaks,
        "split": how,
        "train_rows": len(train),
        "test_rows": len(test),
        "label": label,
        "label_min": float(frame[label].min()) if task != "classification" else None,
        "label_max": float(frame[label].max()) if task != "classification" else None,
        "feature_columns": [c for c in clean.columns if c != label],
        "time_column": time_column if time_column and time_column in clean.columns else None,
    }
    return train, test, report


def data_checksum(path: Path) -> str:
    """sha256 of the raw data file (or of the folder's CSV files, in name order)."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(path.rglob("*.csv")) if path.is_dir() else [path]:
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw_data", required=True, type=Path)
    parser.add_argument("--label", required=True)
    parser.add_argument("--time_column", default="")
    parser.add_argument("--cutoff_date", default="")
    parser.add_argument("--task", default="regression")
    parser.add_argument("--train_data", required=True, type=Path)
    parser.add_argument("--test_data", required=True, type=Path)
    args, _ = parser.parse_known_args(argv)
    try:
        train, test, report = prepare(
            load_csvs(args.raw_data), args.label, args.time_column, args.cutoff_date, args.task
        )
    except PrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["data_sha256"] = data_checksum(args.raw_data)
    for folder, part in ((args.train_data, train), (args.test_data, test)):
        folder.mkdir(parents=True, exist_ok=True)
        part.to_csv(folder / "data.csv", index=False)
    (args.test_data / "prep_report.json").write_text(json.dumps(report, indent=2))
    print(f"prep: {report['rows']} rows; split {report['split']}: {len(train)} train, {len(test)} test")
    for col, why in report["dropped_leaking_columns"].items():
        print(f"prep: dropped target-leaking column {col!r}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
