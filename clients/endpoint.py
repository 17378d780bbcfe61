"""Call a deployed real-time endpoint with real rows: writes the payload to data.json, prints the answer.

    python clients/endpoint.py --service bike-demand-svc          # a local service: URI and key from its record
    python clients/endpoint.py --uri https://.../score --key KEY  # any endpoint, e.g. on ACI

The rows come from the dataset (the settings' ``dataset``, e.g. bike-no), restricted to the columns the
service's own swagger.json asks for: the model's raw input columns, so never the label or the columns
that leak it. ``data.json`` is then ready for ``clients/benchmark.sh`` (Apache Bench).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd
import requests

from clients.http_url import check_http_url
from pipelines.errors import UserError, cli_main


def service_endpoint(name: str) -> tuple[str, str]:
    """Scoring URI and primary key of a local deployment, from its record."""
    from pipelines.local.serving import deployments

    service = deployments.load(name)
    return service.scoring_uri, deployments.keys(name)["primary"]


def input_columns(scoring_uri: str, timeout: float = 10.0) -> list[str]:
    """The columns a service takes, from its swagger.json (served without a key, as on Azure)."""
    swagger_uri = scoring_uri.rsplit("/score", 1)[0] + "/swagger.json"
    try:
        resp = requests.get(swagger_uri, timeout=timeout)
        resp.raise_for_status()
        spec = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise UserError(f"cannot read {swagger_uri}: {exc}", hint="is the service running? (python -m pipelines.deploy list)") from None  # fmt: skip
    definitions = spec.get("definitions") or spec.get("components", {}).get("schemas", {})
    data = definitions.get("ServiceInput", {}).get("properties", {}).get("data", {})
    columns = list(data.get("items", {}).get("properties", {}))
    if not columns:
        raise UserError(
            f"{swagger_uri} does not describe the input columns", hint="is score.py schema-decorated?"
        )
    return columns


def read_rows(csv: Path) -> pd.DataFrame:
    """The rows of a CSV file; UserError naming the file when it is not a readable CSV with rows."""
    hint = "pass --data with a CSV file of the model's data, e.g. --data bike-no"
    try:
        frame = pd.read_csv(csv)
    except IsADirectoryError:
        raise UserError(f"{csv} is a folder, not a CSV file", hint=hint) from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{csv} is empty", hint=hint) from None
    except UnicodeDecodeError:
        raise UserError(f"{csv} is not a UTF-8 text CSV file", hint=hint) from None
    except pd.errors.ParserError as exc:
        raise UserError(f"{csv} is not a valid CSV file: {' '.join(str(exc).split())}", hint=hint) from None
    except OSError as exc:
        raise UserError(f"cannot read {csv}: {exc.strerror}", hint=hint) from None
    if frame.empty:
        raise UserError(f"{csv} has no rows", hint=hint)
    return frame


def payload_rows(
    frame: pd.DataFrame,
    columns: list[str],
    n_rows: int,
    *,
    offset: int | None = None,
    source: Path | str = "the data",
) -> list[dict[str, Any]]:
    """``n_rows`` real rows of ``frame`` with only ``columns`` (by default the last rows)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(
            f"{source} has no column(s) {', '.join(missing)}", hint="pass --data with the model's data"
        )
    start = len(frame) - n_rows if offset is None else offset
    rows = frame.iloc[max(0, start) : max(0, start) + n_rows][columns]
    return json.loads(rows.to_json(orient="records"))


def call(scoring_uri: str, key: str, payload: dict[str, Any], timeout: float = 30.0) -> requests.Response:
    """POST the payload with ``Authorization: Bearer <key>``."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    try:
        return requests.post(scoring_uri, data=json.dumps(payload), headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise UserError(f"cannot reach {scoring_uri}: {exc}", hint="is the service running?") from None


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--service`` (a local service), or ``--uri`` and ``--key`` (any endpoint): see resolve_endpoint."""
    parser.add_argument("--service", help="a local service's name (reads its URI and primary key)")
    parser.add_argument("--uri", help="scoring URI (e.g. http://127.0.0.1:PORT/score or an ACI URI)")
    parser.add_argument("--key", help="primary or secondary key")


def resolve_endpoint(service: str | None, uri: str | None, key: str | None) -> tuple[str, str]:
    """Scoring URI and key: a local service's (``--uri``/``--key`` override them), or the ones given."""
    if service:
        found_uri, found_key = service_endpoint(service)
        uri, key = uri or found_uri, key or found_key
    if not (uri and key):
        raise UserError("no endpoint given", hint="pass --service NAME, or --uri URI --key KEY")
    check_uri(uri)
    return uri, key


def check_uri(uri: str) -> None:
    """UserError unless ``uri`` is an http(s) URI with a host: before any request."""
    check_http_url(uri, hint="e.g. --uri http://127.0.0.1:PORT/score")


def check_output_file(
    path: Path, flag: str, *, make_folders: bool = False, example: str = "data.json"
) -> None:
    """UserError unless ``path`` can be written as a file: checked before any request is sent.

    The file's folder must exist, unless ``make_folders`` (the writer creates it): then the nearest existing
    folder above it must be a folder.
    """
    if path.is_dir():
        raise UserError(
            f"{flag} {path} is a folder", hint=f"pass {flag} with a file name, e.g. {flag} {path / example}"
        )
    hint = f"pass {flag} with a file name in an existing folder, e.g. {flag} {example}"
    parent = path.parent
    while make_folders and not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise UserError(f"{flag} {path}: {parent} {what}", hint=hint)
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag} {path} is not writable", hint=hint)


def write_payload(
    uri: str,
    out: Path,
    data: str | None = None,
    rows: int = 2,
    offset: int | None = None,
    *,
    out_flag: str = "--out",
) -> dict[str, Any]:
    """``{"data": [...]}`` with ``rows`` real rows in the columns the service asks for, written to ``out``.

    ``out`` (given on the command line as ``out_flag``) and the data are checked before the service is asked
    for its columns.
    """
    if rows < 1:
        raise UserError("--rows must be at least 1", hint="e.g. --rows 2")
    check_output_file(out, out_flag)
    from pipelines.datasets import resolve
    from pipelines.settings import load_settings

    csv = resolve(data or load_settings().dataset)
    frame = read_rows(csv)
    payload = {"data": payload_rows(frame, input_columns(uri), rows, offset=offset, source=csv)}
    try:
        out.write_text(json.dumps(payload, indent=2))
    except OSError as exc:
        raise UserError(
            f"cannot write {out}: {exc.strerror}", hint=f"pass {out_flag} with a writable file"
        ) from None
    return payload


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Build the payload, save it to data.json, call the endpoint, print the JSON answer."""
    parser = argparse.ArgumentParser(prog="clients/endpoint.py", description=__doc__.split("\n\n")[0])
    add_endpoint_arguments(parser)
    parser.add_argument("--data", help="dataset name or CSV path (default: the settings' dataset)")
    parser.add_argument("--rows", type=int, default=2, help="rows to send (default 2)")
    parser.add_argument("--offset", type=int, help="first row to send (default: the last --rows rows)")
    parser.add_argument("--out", type=Path, default=Path("data.json"), help="where to write the payload")
    parser.add_argument("--json", action="store_true", help="print the status and answer as one JSON object")
    args = parser.parse_args(argv)

    uri, key = resolve_endpoint(args.service, args.uri, args.key)
    payload = write_payload(uri, args.out, args.data, args.rows, args.offset)
    resp = call(uri, key, payload)
    try:
        answer = resp.json()
    except ValueError:
        answer = resp.text
    if args.json:
        print(json.dumps({"status": resp.status_code, "answer": answer, "payload": str(args.out.resolve())}))
    else:
        print(json.dumps(answer))
    print(f"payload: {args.out.resolve()}  status: {resp.status_code}", file=sys.stderr)
    if resp.status_code != 200:
        message = answer.get("message") if isinstance(answer, dict) else answer
        raise UserError(f"the endpoint answered {resp.status_code}: {message}", hint="see the service's logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
