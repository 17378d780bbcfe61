"""Parallel entry script: load the MLflow model given as an input, predict each mini-batch's rows."""

import argparse

import mlflow
import pandas as pd

model = None


def init() -> None:
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    args, _ = parser.parse_known_args()
    model = mlflow.pyfunc.load_model(args.model)


def run(mini_batch: pd.DataFrame) -> pd.DataFrame:
    predictions = model.predict(mini_batch)
    return pd.DataFrame({"id": mini_batch["id"].to_numpy(), "prediction": list(predictions)})
