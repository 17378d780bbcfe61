"""Start a run through a published pipeline endpoint, wait for it with progress, print the final status.

python -m clients.trigger_pipeline URL [--version N] [--key KEY | --auth sp|interactive]
       [--experiment NAME] [--param NAME=VALUE]... [--dataset PARAM=NAME]
       [--no-wait] [--timeout SECONDS] [--poll SECONDS] [--json]

URL is an endpoint URL (``.../PipelineRuns/PipelineEndpointSubmit/Id/<id>``), one version of it
(``.../<version>``) or a published pipeline URL (``.../PipelineRuns/PipelineSubmit/<id>``), from the
local workspace service or from Azure ML. The request and response are Azure's: ``POST`` with
``{"ExperimentName", "ParameterAssignments", "DataSetDefinitionValueAssignments"}`` answers a
PipelineRunEntity with the run ``Id``; the status is polled at ``.../PipelineRuns/<run id>``
(``Status.StatusCode``; Azure's "Finished" and numeric codes are read as Completed etc.).

Authentication: ``--key`` (or ``AMLOPS_PIPELINE_KEY``) sends ``Authorization: Bearer <key>`` (the local
service: ``python -m pipelines.workspace keys --primary``). For Azure, ``--auth sp`` uses
``ServicePrincipalAuthentication`` from ``AZURE_TENANT_ID``/``AZURE_CLIENT_ID``/``AZURE_CLIENT_SECRET``
and ``--auth interactive`` ``InteractiveLoginAuthentication`` (azureml.core); the header is fetched
again for every poll, so long waits survive token expiry. The key is never printed.

Exit status: 0 the run Completed (or was submitted, with --no-wait); 1 it Failed or was Canceled;
2 bad input or a refused request (the service's message is shown); 3 still not finished at --timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from clients.http_url import check_http_url
from pipelines.errors import UserError, cli_main
from pipelines.settings import parse_assignments

FINAL = ("Completed", "Failed", "Canceled")
STATUS_NAMES = {
    "0": "NotStarted", "1": "Running", "2": "Failed", "3": "Completed", "4": "Canceled",
    "Finished": "Completed", "Cancelled": "Canceled",
}  # fmt: skip
EXIT_TIMEOUT = 3


class AuthProvider(Protocol):
    def get_authentication_header(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class KeyAuth:
    """``Authorization: Bearer <key>`` (a local workspace key or an endpoint key)."""

    key: str

    def get_authentication_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def __repr__(self) -> str:  # never show the key
        return "KeyAuth(key=***)"


def aad_auth(kind: str) -> AuthProvider:
    """An azureml.core authentication object for Azure ML (service principal or interactive login)."""
    from azureml.core.authentication import InteractiveLoginAuthentication, ServicePrincipalAuthentication

    if kind == "sp":
        names = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise UserError(
                "service principal authentication needs " + ", ".join(missing),
                hint="set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
            )
        return ServicePrincipalAuthentication(
            tenant_id=os.environ["AZURE_TENANT_ID"],
            service_principal_id=os.environ["AZURE_CLIENT_ID"],
            service_principal_password=os.environ["AZURE_CLIENT_SECRET"],
        )
    return InteractiveLoginAuthentication(tenant_id=os.environ.get("AZURE_TENANT_ID"))


def normalize_status(code: Any) -> str:
    """Azure's status names from either backend (``Finished`` -> Completed, ``"3"`` -> Completed, ...)."""
    text = str(code) if code is not None else "NotStarted"
    return STATUS_NAMES.get(text, text)


def run_status_url(submit_url: str, run_id: str) -> str:
    """Where a run's status lives, from the URL it was submitted to (``.../PipelineRuns/<run id>``)."""
    marker = "/PipelineRuns/"
    base, sep, _ = submit_url.partition(marker)
    if not sep:
        raise UserError(
            f"not a published pipeline URL: {submit_url}",
            hint="use the endpoint or pipeline URL that publish printed (it contains /PipelineRuns/)",
        )
    return f"{base}{marker}{run_id}"


def check_url(url: str) -> None:
    """UserError unless ``url`` is an http(s) pipeline URL whose runs can be polled: before anything is sent."""
    check_http_url(
        url,
        hint="pass the endpoint or pipeline URL that publish printed (http(s)://HOST/.../PipelineRuns/...)",
    )
    run_status_url(url, "")  # the same UserError now as after a submit, when the URL has no /PipelineRuns/


def check_wait_options(timeout: float, poll: float) -> None:
    """UserError unless ``--timeout`` is 0 or more seconds and ``--poll`` a positive number of seconds."""
    if not timeout >= 0:  # NaN too
        raise UserError(f"--timeout must be 0 or more seconds, got {timeout:g}", hint="e.g. --timeout 3600")
    if not 0 < poll < float("inf"):
        raise UserError(f"--poll must be a positive number of seconds, got {poll:g}", hint="e.g. --poll 5")


def request_body(experiment: str, params: dict[str, str], datasets: dict[str, str]) -> dict[str, Any]:
    """Azure's PipelineSubmissionInfo body."""
    body: dict[str, Any] = {"ExperimentName": experiment, "ParameterAssignments": params}
    if datasets:
        body["DataSetDefinitionValueAssignments"] = {
            name: {"DataSetReference": {"Name": value}} for name, value in datasets.items()
        }
    return body


def submit(
    url: str,
    auth: AuthProvider,
    experiment: str,
    params: dict[str, str] | None = None,
    datasets: dict[str, str] | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """POST a run request; returns the PipelineRunEntity (with ``Id``). UserError when refused."""
    headers = {**auth.get_authentication_header(), "Content-Type": "application/json"}
    body = request_body(experiment, params or {}, datasets or {})
    try:
        response = _call("POST", url, headers, body, timeout)
    except TransientError as exc:
        raise UserError(
            f"the service failed to take the run: {exc}", hint="try again; see the service log"
        ) from None
    except NoAnswer:  # the request was sent: the service may have queued the run all the same
        raise UserError(
            f"{url} did not answer within {timeout:g} s, so the run may or may not have been queued",
            hint="list the runs (local: python -m pipelines.workspace runs) before submitting again",
        ) from None
    try:
        entity = response.json()
        entity["Id"]
    except (ValueError, KeyError, TypeError):
        raise UserError(
            f"{url} answered {response.status_code} without a run Id: {response.text[:200]}",
            hint="is this a published pipeline URL?",
        ) from None
    return entity


def get_status(url: str, auth: AuthProvider, timeout: float = 30) -> tuple[str, dict[str, Any]]:
    """(status name, PipelineRunEntity) of a run at its status URL."""
    response = _call("GET", url, auth.get_authentication_header(), None, timeout)
    try:
        entity = response.json()
    except ValueError:
        entity = None
    if not isinstance(entity, dict):
        raise TransientError(
            f"{response.status_code} answer that is not a JSON object: {response.text[:100]!r}"
        )
    status = entity.get("Status") or {}
    code = status.get("StatusCode") if isinstance(status, dict) else status
    return normalize_status(code), entity


def wait(
    url: str,
    auth: AuthProvider,
    timeout: float,
    poll: float,
    out: Any = None,
    sleep: Any = time.sleep,
    request_timeout: float = 30,
) -> tuple[str, dict[str, Any]]:
    """Poll a run until it is final or ``timeout`` passes; prints each status change with the time waited."""
    out = out or sys.stderr
    started = time.monotonic()
    last = None
    last_print = started
    failures = 0
    entity: dict[str, Any] = {}
    while True:
        elapsed = time.monotonic() - started
        try:
            status, entity = get_status(url, auth, request_timeout)
            failures = 0
        except (Unreachable, TransientError) as exc:
            failures += 1
            if failures > 5:
                raise UserError(
                    f"lost contact with {url}: {exc}", hint="check the service, then poll again"
                ) from None
            status = last or "NotStarted"
        if status != last or time.monotonic() - last_print >= 30:
            print(f"[{elapsed:6.0f} s] {status}", file=out, flush=True)
            last, last_print = status, time.monotonic()
        if status in FINAL:
            return status, entity
        if elapsed >= timeout:
            return status, entity
        sleep(min(poll * (2 if failures else 1), max(0.05, timeout - elapsed)))


class TransientError(Exception):
    """A 5xx (or unreadable) answer (retried while polling)."""


class Unreachable(UserError):
    """No connection to the service (retried while polling)."""


class NoAnswer(Unreachable):
    """Connected, but no answer within the timeout (retried while polling)."""


RETRY_STATUSES = (429, 503)  # busy or throttled: the request was not taken, so sending it again is safe
RETRIES = 5
MAX_RETRY_AFTER = 60.0  # seconds: a longer Retry-After is waited for only this long


def retry_after(response: requests.Response, attempt: int) -> float:
    """Seconds to wait before sending again: the answer's Retry-After (seconds or HTTP date), else 1, 2, 4..."""
    import email.utils

    value = (response.headers.get("Retry-After") or "").strip()
    seconds: float | None = None
    if value.replace(".", "", 1).isdigit():
        seconds = float(value)
    elif value:
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = None
    if seconds is None:
        seconds = float(2**attempt)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _call(method: str, url: str, headers: dict[str, str], body: Any, timeout: float) -> requests.Response:
    """One request; a 429 or 503 is sent again (up to RETRIES times) after the wait its Retry-After asks."""
    for attempt in range(RETRIES + 1):
        response = _send(method, url, headers, body, timeout)
        if response.status_code not in RETRY_STATUSES or attempt == RETRIES:
            break
        wait_s = retry_after(response, attempt)
        print(
            f"{url} answered {response.status_code}; trying again in {wait_s:g} s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(wait_s)
    return _checked(response)


def _send(method: str, url: str, headers: dict[str, str], body: Any, timeout: float) -> requests.Response:
    try:
        return requests.request(method, url, headers=headers, json=body, timeout=timeout)
    except requests.ReadTimeout:
        raise NoAnswer(f"no answer from {url} within {timeout:g} s", hint="check the service") from None
    except requests.ConnectionError:  # (a connect timeout too)
        hint = (
            "start it: python -m pipelines.workspace serve"
            if url.startswith("http://127.0.0.1") or url.startswith("http://localhost")
            else "check the URL and the network"
        )
        raise Unreachable(f"cannot reach {url}", hint=hint) from None
    except requests.RequestException as exc:  # e.g. the connection dropped in the middle of the answer
        raise NoAnswer(
            f"no complete answer from {url} ({type(exc).__name__})", hint="check the service"
        ) from None


def _checked(response: requests.Response) -> requests.Response:
    if response.status_code >= 500:
        raise TransientError(f"{response.status_code} {error_message(response)}")
    if response.status_code >= 400:
        what = {401: "refused the credentials", 403: "refused the credentials", 404: "does not know it"}.get(
            response.status_code, "rejected the request"
        )
        raise UserError(
            f"the service {what} ({response.status_code}): {error_message(response)}",
            hint="check the key/token, the URL and the parameter names and types",
        )
    return response


def error_message(response: requests.Response) -> str:
    """The message of an Azure-shaped (or FastAPI) error answer."""
    try:
        data = response.json()
    except ValueError:
        return (response.text or response.reason or "")[:300]
    if isinstance(data, dict):
        error = data.get("error") or data.get("Error")
        if isinstance(error, dict):
            return str(error.get("message") or error.get("Message") or error)[:300]
        if "detail" in data:
            return str(data["detail"])[:300]
    return str(data)[:300]


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m clients.trigger_pipeline",
        description="Start a run through a published pipeline endpoint (local service or Azure ML) and wait for it.",
        epilog="exit status: 0 Completed, 1 Failed/Canceled, 2 bad input or refused, 3 timed out",
    )
    parser.add_argument(
        "url", metavar="URL", help="endpoint URL, endpoint version URL or published pipeline URL"
    )
    parser.add_argument("--version", help="endpoint version (appended to the URL as /<version>)")
    parser.add_argument("--key", help="key for 'Authorization: Bearer' (default: $AMLOPS_PIPELINE_KEY)")
    parser.add_argument("--auth", choices=("key", "sp", "interactive"), help="key (default when a key is given), "
                        "sp (service principal from AZURE_* variables) or interactive (Azure AD login)")  # fmt: skip
    parser.add_argument("--experiment", default="rest-trigger", help="experiment name (default rest-trigger)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="a pipeline parameter value")
    parser.add_argument("--dataset", action="append", metavar="PARAM=NAME",
                        help="bind a dataset parameter to a dataset by name (DataSetDefinitionValueAssignments)")  # fmt: skip
    parser.add_argument("--no-wait", action="store_true", help="print the run id and exit")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds to wait, 0 or more (default 3600; 0: check the status once)")  # fmt: skip
    parser.add_argument(
        "--poll", type=float, default=5, help="seconds between status checks, > 0 (default 5)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    return parser


@cli_main
def main(argv: list[str] | None) -> int:
    """Submit, wait, report."""
    args = build_parser().parse_args(argv)
    url = args.url.rstrip("/")
    check_url(url)
    check_wait_options(args.timeout, args.poll)
    if args.version:
        if not str(args.version).isdigit():
            raise UserError(
                f"--version must be a whole number, got {args.version!r}", hint="e.g. --version 2"
            )
        url = f"{url}/{args.version}"
    key = args.key or os.environ.get("AMLOPS_PIPELINE_KEY")
    mode = args.auth or ("key" if key else None)
    if mode is None:
        raise UserError(
            "no credentials: pass --key (local: $(python -m pipelines.workspace keys --primary)) or --auth sp|interactive",
            hint="or set AMLOPS_PIPELINE_KEY",
        )
    if mode == "key" and not key:
        raise UserError("--auth key needs --key or AMLOPS_PIPELINE_KEY", hint="pass the endpoint's key")
    auth: AuthProvider = KeyAuth(key) if mode == "key" else aad_auth(mode)
    entity = submit(
        url,
        auth,
        args.experiment,
        parse_assignments(args.param, "--param"),
        parse_assignments(args.dataset, "--dataset"),
    )
    run_id = str(entity["Id"])
    status_url = run_status_url(url, run_id)
    print(f"submitted run {run_id} (experiment {args.experiment})", file=sys.stderr, flush=True)
    if args.no_wait:
        status = normalize_status((entity.get("Status") or {}).get("StatusCode"))
        _report(args.json, run_id, status, status_url, entity, 0.0)
        return 0
    started = time.monotonic()
    status, final = wait(status_url, auth, args.timeout, args.poll)
    _report(args.json, run_id, status, status_url, final or entity, time.monotonic() - started)
    if status == "Completed":
        return 0
    if status in FINAL:
        return 1
    print(f"run {run_id} is still {status} after {args.timeout:.0f} s", file=sys.stderr)
    return EXIT_TIMEOUT


def _report(
    as_json: bool, run_id: str, status: str, url: str, entity: dict[str, Any], seconds: float
) -> None:
    detail = ((entity.get("Status") or {}).get("StatusDetail") or "") if isinstance(entity, dict) else ""
    if as_json:
        print(json.dumps({"run_id": run_id, "status": status, "status_url": url, "detail": detail,
                          "seconds": round(seconds, 1)}))  # fmt: skip
        return
    print(f"run {run_id}: {status}" + (f" ({detail})" if detail and status != "Completed" else ""))


if __name__ == "__main__":
    sys.exit(main())
