"""Fit a ridge-regularized linear model with numpy; write its coefficients as JSON."""

import argparse
import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train_data", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--ridge", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--model_output", type=Path)
    args, _ = parser.parse_known_args()
    frame = pd.read_csv(args.train_data / "train.csv")
    features = [c for c in frame.columns if c not in (args.label, "day")]
    x = np.column_stack([frame[features].to_numpy(float), np.ones(len(frame))])
    y = frame[args.label].to_numpy(float)
    coef = np.linalg.solve(x.T @ x + args.ridge * np.eye(x.shape[1]), x.T @ y)
    model = {
        "features": features,
        "coef": coef.tolist(),
        "note": os.environ.get("MODEL_NOTE"),
        "seed": args.seed,
    }
    (args.model_output / "model.json").write_text(json.dumps(model))
    mlflow.log_metric("train_rows", len(frame))
    print(f"train: coefficients {np.round(coef, 2).tolist()}")


if __name__ == "__main__":
    main()
