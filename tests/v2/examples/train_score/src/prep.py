"""Split the CSV files of a folder into train and test folders (the last rows by ``day`` are the test)."""

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw_data", type=Path)
    parser.add_argument("--test_fraction", type=float)
    parser.add_argument("--train_data", type=Path)
    parser.add_argument("--test_data", type=Path)
    args, _ = parser.parse_known_args()
    frame = pd.concat([pd.read_csv(f) for f in sorted(args.raw_data.glob("*.csv"))]).sort_values("day")
    cut = len(frame) - max(1, round(len(frame) * args.test_fraction))
    frame.iloc[:cut].to_csv(args.train_data / "train.csv", index=False)
    frame.iloc[cut:].to_csv(args.test_data / "test.csv", index=False)
    print(f"prep: {cut} train rows, {len(frame) - cut} test rows")


if __name__ == "__main__":
    main()
