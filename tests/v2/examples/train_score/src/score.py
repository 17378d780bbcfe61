"""Score the linear model on the test folder; write metrics.json."""

import argparse
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_input", type=Path)
    parser.add_argument("--test_data", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--score_report", type=Path)
    args, _ = parser.parse_known_args()
    model = json.loads((args.model_input / "model.json").read_text())
    frame = pd.read_csv(args.test_data / "test.csv")
    x = np.column_stack([frame[model["features"]].to_numpy(float), np.ones(len(frame))])
    error = x @ np.array(model["coef"]) - frame[args.label].to_numpy(float)
    rmse = float(np.sqrt(np.mean(error**2)))
    report = {"rows": len(frame), "rmse": rmse, "note": model["note"]}
    (args.score_report / "metrics.json").write_text(json.dumps(report))
    mlflow.log_metric("test_rmse", rmse)
    print(f"score: rmse {rmse:.3f} on {len(frame)} rows")


if __name__ == "__main__":
    main()
