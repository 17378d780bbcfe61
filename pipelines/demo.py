"""The quick-start walk-through on the local engine: train, publish, batch-score, deploy, call the endpoint.

    amlops demo [--skip-deploy] [--timeout-minutes N] [--json]      (or python -m pipelines.demo)

Each stage runs the same command a user would type (printed before it runs), so the output shows
the whole path and where every result is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from pipelines.errors import UserError, cli_main
from pipelines.settings import PROJECT_ROOT, amlops_home


def _step(title: str, args: list[str], capture_json: bool = False) -> dict | None:
    """Run ``amlops ARGS`` (as ``python -m pipelines.amlops``, so no install is needed) under a title."""
    print(f"\n== {title}\n$ amlops {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.amlops", *args],
        cwd=PROJECT_ROOT,
        text=True,
        stdout=subprocess.PIPE if capture_json else None,
    )
    if done.returncode != 0:
        raise UserError(f"'{title}' failed (exit {done.returncode})", hint="see the output above")
    if capture_json:
        result = json.loads(done.stdout)
        print(json.dumps(result, indent=2, default=str)[:3000])
        return result
    return None


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout-minutes", type=int, default=1, help="AutoML time budget (default 1)")
    parser.add_argument("--skip-deploy", action="store_true", help="stop after batch scoring")
    parser.add_argument("--json", action="store_true", help="end with the table of results as JSON")
    args = parser.parse_args(argv)
    home = amlops_home()
    where: dict[str, str] = {"local workspace": str(home)}

    train = _step("1. train on the local engine (prep -> AutoML on FLAML -> register)",
                  ["train", "run", "--set", f"timeout_minutes={args.timeout_minutes}", "--json"],
                  capture_json=True)  # fmt: skip
    assert train is not None
    reg = train.get("registration") or {}
    where["training run"] = train["folder"]
    where["model"] = (
        f"{reg.get('model_name')}:{reg.get('version')} (mlflow ui --backend-store-uri sqlite:///{home}/mlflow.db)"
    )

    published = _step("2. publish the training and batch pipelines (local workspace)",
                      ["train", "publish", "--target", "local", "--json"], capture_json=True)  # fmt: skip
    assert published is not None
    where["training endpoint"] = published["endpoint_url"]
    batch_pub = _step("", ["batch-score", "publish", "--target", "local", "--json"], capture_json=True)
    assert batch_pub is not None
    where["batch endpoint"] = batch_pub["endpoint_url"]

    new_file = home / "demo" / "new-days.csv"
    new_file.parent.mkdir(parents=True, exist_ok=True)
    _step("3. make a new file to score (seeded bike-like data)",
          ["datagen", "--rows", "5000", "--seed", "7", "--out", str(new_file)])  # fmt: skip
    out_dir = home / "demo" / "predictions"
    batch = _step("4. batch-score it with the ParallelRunStep pipeline",
                  ["batch-score", "run", "--input", str(new_file), "--output", str(out_dir), "--json"],
                  capture_json=True)  # fmt: skip
    assert batch is not None
    where["batch predictions"] = str(out_dir / "predictions.csv")
    where["batch run (ParallelRunStep report)"] = batch["folder"]

    if not args.skip_deploy:
        deployed = _step("5. deploy the model as a key-authenticated real-time endpoint on 127.0.0.1",
                         ["deploy", "deploy", "--target", "local", "--name", "bike-demand-local",
                          "--overwrite", "--json"],
                         capture_json=True)  # fmt: skip
        assert deployed is not None
        where["scoring URI"] = str(deployed.get("scoring_uri"))
        where["swagger.json"] = str(deployed.get("swagger_uri"))
        where["Swagger UI"] = str(deployed.get("swagger_ui_uri"))
        _step("6. call it once with real rows (writes data.json)",
              ["endpoint", "call", "--service", "bike-demand-local", "--rows", "2",
               "--out", str(home / "demo" / "data.json")])  # fmt: skip
        where["request payload"] = str(home / "demo" / "data.json")
        where["benchmark it"] = (
            f"amlops benchmark --service bike-demand-local --data {home / 'demo' / 'data.json'}"
        )
        where["stop the service"] = "amlops deploy stop --name bike-demand-local"

    if args.json:
        print(json.dumps(where))
        return 0
    print("\n== where everything is")
    width = max(len(k) for k in where)
    for key, value in where.items():
        print(f"  {key.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
