"""Tiny step: count the rows of the input CSV(s) and optionally sleep (AMLOPS_TINY_SLEEP seconds)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def count_rows(path: Path) -> int:
    """Data rows (lines after the header) of a CSV file or of every CSV in a folder."""
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    return sum(max(0, sum(1 for _ in f.open()) - 1) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw_data", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path)
    args, _ = parser.parse_known_args()
    rows = count_rows(args.raw_data)
    time.sleep(float(os.environ.get("AMLOPS_TINY_SLEEP", "0")))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "count.txt").write_text(f"{rows}\n")
    print(f"count: {rows} rows, label {args.label}, seed {args.seed}")
    if os.environ.get("AMLOPS_TINY_NOTE"):  # lets a test see which environment the step ran in
        print(f"note {os.environ['AMLOPS_TINY_NOTE']}")


if __name__ == "__main__":
    main()
