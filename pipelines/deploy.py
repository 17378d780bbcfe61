"""Deploy the registered model as a key-authenticated real-time web service, and manage it.

    python -m pipelines.deploy [deploy] [--target local|aci|aks] [--model NAME[:VERSION]] [--name SERVICE]
                               [--workers N] [--port N] [--json]
    python -m pipelines.deploy list | show | logs | keys [--regen primary|secondary]
                               | update --enable-app-insights | stop | start | delete   [--name SERVICE]

``local`` (the default when no Azure ML workspace is configured) serves scoring/score.py with
azureml-inference-server-http under gunicorn on 127.0.0.1, behind a key check, supervised; ``aci`` and
``aks`` deploy with ``Model.deploy`` to Azure Container Instances or Kubernetes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from pipelines.errors import PORT, UserError, cli_main, int_in_range, print_json, refuse_empty_options
from pipelines.settings import load_settings

VERBS = ("deploy", "list", "show", "logs", "keys", "update", "invoke", "stop", "start", "delete", "export")
TARGETS = (
    "local",
    "aci",
    "aks",
    "azure-v2",
)  # azure-v2: a managed online endpoint (Kubernetes with --aks-cluster)
ENVIRONMENT_HELP = (
    "Azure: the workspace or curated Environment score.py runs in, e.g. AzureML-AutoML for a model Azure"
    " AutoML trained (default: the deploy_environment setting; empty: environments/inference.yml)"
)
ORIGIN = re.compile(r"https?://[^/\s:?#]+(:\d{1,5})?")  # a browser origin: scheme, host, optional port


def default_target() -> str:
    """``aci`` when an Azure ML workspace is configured, else ``local``."""
    from pipelines.azure.workspace import is_configured

    return "aci" if is_configured() else "local"


def default_service_name() -> str:
    return f"{load_settings().model_name}-svc"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.deploy",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="verbs: " + ", ".join(VERBS) + " (deploy is the default); each has --help",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--target", choices=TARGETS, help="local, or an Azure target (default: aci if a workspace is configured, else local)")  # fmt: skip
        p.add_argument("--name", help="service name (default: <model_name>-svc, e.g. bike-demand-svc)")
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    p = verb("deploy", "deploy the registered model as a real-time web service")
    p.add_argument("--model", help="NAME or NAME:VERSION (default: the settings' model_name, latest version)")
    p.add_argument("--workers", type=int, help="local: gunicorn worker processes (default: one per core)")
    p.add_argument("--port", type=PORT, help="local: port on 127.0.0.1 (default: a free one)")
    p.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="local: larger bodies get 413 (default 1 MiB)"
    )
    p.add_argument(
        "--enable-app-insights", action="store_true", help="local: log every request (status, latency)"
    )
    p.add_argument("--entry-script", type=Path, help="local: a scoring script other than scoring/score.py")
    p.add_argument("--overwrite", action="store_true", help="replace an existing service of that name")
    p.add_argument(
        "--scoring-timeout-ms", type=int,
        help="a run() taking longer is answered 500 'Scoring timeout' (default: the server's, as on ACI; AKS: 60000)",
    )  # fmt: skip
    p.add_argument(
        "--cors-origins", default="", metavar="ORIGINS",
        help="comma-separated origins whose browser pages may call the service, e.g. https://app.example.com"
        " (the inference server's AML_CORS_ORIGINS)",
    )  # fmt: skip
    p.add_argument("--aks-cluster", default="", help="aks: the AKS compute target's name")
    p.add_argument("--token-auth", action="store_true", help="aks: Azure AD token auth instead of keys")
    p.add_argument("--cpu-cores", type=float, help="aci/aks: CPU cores per container (default 1)")
    p.add_argument("--memory-gb", type=float, help="aci/aks: memory per container in GB (default 1)")
    p.add_argument("--max-replicas", type=int, help="aks: autoscale up to this many replicas (default 3)")
    p.add_argument("--instance-type", help="azure-v2: the VM size (default Standard_DS3_v2), with"
                   " --aks-cluster the cluster's Kubernetes instance type (default: the cluster's)")  # fmt: skip
    p.add_argument(
        "--instance-count", type=int_in_range(1), default=1, help="azure-v2: instances (default 1)"
    )
    p.add_argument("--environment", metavar="NAME", help=ENVIRONMENT_HELP)
    p.add_argument(
        "--timeout", type=float, default=180.0, help="local: seconds to wait for health (default 180)"
    )
    p = verb("export", "write the deployment as Azure ML SDK v2 online endpoint + deployment YAML (offline)")
    p.add_argument("--sdk", choices=("v2",), required=True, help="the SDK to export for")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the YAML files")
    p.add_argument("--model", help="NAME or NAME:VERSION (default: the settings' model_name, latest version)")
    p.add_argument("--aks-cluster", default="", help="a Kubernetes online endpoint on this attached cluster")
    p.add_argument("--instance-type", help="managed: the VM size (default Standard_DS3_v2); kubernetes: the"
                   " cluster's instance type")  # fmt: skip
    p.add_argument("--environment", metavar="NAME", help=ENVIRONMENT_HELP)
    p.add_argument("--instance-count", type=int_in_range(1), default=1, help="instances (default 1)")
    p.add_argument("--scoring-timeout-ms", type=int_in_range(1), help="request_settings.request_timeout_ms")
    p.add_argument("--cors-origins", default="", metavar="ORIGINS", help="AML_CORS_ORIGINS for the server")
    p.add_argument("--disable-app-insights", action="store_true", help="app_insights_enabled: false")
    p.add_argument("--cpu-cores", type=float, help="kubernetes: CPU request")
    p.add_argument("--memory-gb", type=float, help="kubernetes: memory request in GB")
    verb("list", "list the deployed services")
    verb("show", "show a service: state, URIs, where its keys and logs are")
    p = verb("logs", "print a service's logs")
    p.add_argument("--tail", type=int_in_range(0), default=50, help="last N lines (default 50)")
    p.add_argument(
        "--requests",
        action="store_true",
        help="local: the request log (status, latency per request) and its summary (p50/p95/p99, status codes)",
    )
    p.add_argument("--plot", type=Path, metavar="PNG", help="with --requests: write the latency plot there")  # fmt: skip
    p = verb("keys", "print a service's primary and secondary keys, or regenerate one")
    p.add_argument(
        "--regen", choices=("primary", "secondary"), help="regenerate this key (the old one stops working)"
    )
    p = verb("update", "serve another model version, or turn App Insights (the request log) on or off")
    p.add_argument(
        "--model", help="NAME or NAME:VERSION to serve instead (latest version of NAME by default)"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--enable-app-insights", dest="app_insights", action="store_const", const=True)
    group.add_argument("--disable-app-insights", dest="app_insights", action="store_const", const=False)
    p.add_argument(
        "--timeout", type=float, default=180.0, help="local: seconds to load a new model (default 180)"
    )
    p = verb(
        "invoke", "call a service with a request file (local: key auth over HTTP; Azure: Webservice.run)"
    )
    p.add_argument("--request-file", type=Path, required=True, metavar="FILE",
                   help='the JSON request body, e.g. {"data": [{...}]} (amlops endpoint call writes one)')  # fmt: skip
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    verb("stop", "stop a local service (its record, keys and logs stay)")
    p = verb("start", "start a stopped local service again")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health (default 180)")
    verb("delete", "stop a service and delete it with its keys and logs")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Parse the verb and its options, and run it on the target's backend (local, ACI or AKS)."""
    from pipelines.backends import DeployRequest, load_backend
    from pipelines.local.workspace.registry import parse_model_ref

    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0] not in VERBS and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "deploy")
    parser = build_parser()
    args = parser.parse_args(args_list)
    refuse_empty_options(parser, args, args_list)
    name = args.name if args.name is not None else default_service_name()
    if args.verb == "export":
        return _export(args, name)
    target = args.target or default_target()
    if args.verb == "deploy":
        _check_sizes(args)
    if args.verb == "update" and args.model is None and args.app_insights is None:
        raise UserError(
            "nothing to update",
            hint="pass --model NAME[:VERSION] and/or --enable-app-insights/--disable-app-insights",
        )
    services = load_backend(target, kind="deploy").deployments()
    if args.verb == "invoke":
        return _invoke(services, args, name)
    if args.verb == "deploy":
        model_name, version = parse_model_ref(args.model or load_settings().model_name)
        request = DeployRequest(
            model_name, version, name, overwrite=args.overwrite, scoring_timeout_ms=args.scoring_timeout_ms,
            cors_origins=args.cors_origins, app_insights=args.enable_app_insights, timeout=args.timeout,
            workers=args.workers, port=args.port, entry_script=args.entry_script, max_body_bytes=args.max_body_bytes,
            cpu_cores=args.cpu_cores, memory_gb=args.memory_gb, max_replicas=args.max_replicas,
            aks_cluster=args.aks_cluster, token_auth=args.token_auth, instance_type=args.instance_type,
            instance_count=args.instance_count, environment=args.environment,
            progress=lambda message: print(message, file=sys.stderr),
        )  # fmt: skip
        return _print_service(services.deploy(request), args.json, verb="deployed")
    if args.verb == "list":
        return _print_list(services.list(), args.json, target)
    if args.verb == "show":
        return _print_service(services.show(name), args.json)
    if args.verb == "logs":
        return _logs(services, args, name)
    if args.verb == "keys":
        return _print_keys(services.keys(name, args.regen), args.json, args.regen)
    if args.verb == "update":
        return _update(services, args, name, target)
    if args.verb == "stop":
        print(f"stopped {name}" if services.stop(name) else f"{name} was not running")
        return 0
    if args.verb == "start":
        print(f"starting {name}...", file=sys.stderr)
        return _print_service(services.start(name, args.timeout), args.json, verb="started")
    if args.verb == "delete":
        services.delete(name)
        print(f"deleted {name}")
        return 0
    raise UserError(f"unknown verb {args.verb!r}", hint="use one of " + ", ".join(VERBS))


def _logs(services: Any, args: argparse.Namespace, name: str) -> int:
    """A service's log; with --requests, its request log's latency summary (and --plot, its PNG)."""
    if args.plot and not args.requests:
        raise UserError("--plot draws the request log", hint="add --requests")
    if args.plot:
        from clients.endpoint import check_output_file

        check_output_file(args.plot, "--plot", example="latency.png")
    out = services.logs(name, args.tail, args.requests)
    if args.requests and out.get("log"):
        from pipelines.local.serving import request_stats

        records = request_stats.read_requests(Path(out["log"]))
        out["summary"] = request_stats.summarize(records)
        if args.plot:
            out["plot"] = str(request_stats.plot(records, args.plot, name).resolve())
    if args.json:
        print_json(out)
        return 0
    print("\n".join(out["lines"]))
    if out.get("log"):
        print(f"(last {len(out['lines'])} lines of {out['log']})", file=sys.stderr)
    if out.get("summary"):
        print("\n".join(request_stats.summary_lines(out["summary"])))
    if out.get("plot"):
        print(f"plot: {out['plot']}")
    return 0


def _invoke(services: Any, args: argparse.Namespace, name: str) -> int:
    """POST the request file to the service; print its answer (exit 1 if the service answered an error)."""
    import time

    try:
        body = args.request_file.read_text(encoding="utf-8")
        json.loads(body)
    except OSError as exc:
        raise UserError(f"cannot read --request-file {args.request_file}: {exc.strerror}",
                        hint="pass a JSON file, e.g. the data.json amlops endpoint call writes") from None  # fmt: skip
    except ValueError as exc:
        raise UserError(f"--request-file {args.request_file} is not JSON: {exc}",
                        hint='the body is JSON, e.g. {"data": [{"col": 1}]}') from None  # fmt: skip
    started = time.monotonic()
    status, text = services.invoke(name, body, args.timeout)
    seconds = time.monotonic() - started
    try:
        answer: Any = json.loads(text)
    except ValueError:
        answer = text
    if args.json:
        print_json({"service": name, "status": status, "seconds": round(seconds, 3), "answer": answer})
    else:
        print(json.dumps(answer))
        print(f"{name}: status {status} in {seconds * 1000:.0f} ms", file=sys.stderr)
    return 0 if status == 200 else 1


def _export(args: argparse.Namespace, name: str) -> int:
    """``deploy export --sdk v2``: the online endpoint and deployment YAML, verified with azure-ai-ml."""
    from pipelines.definitions import ENVIRONMENTS_DIR, SCORING_DIR
    from pipelines.local.workspace.registry import parse_model_ref
    from pipelines.v2.export import check_out_dir, report, write_verified
    from pipelines.v2.online import OnlineSpec, online_translation

    out = check_out_dir(args.out)
    model_name, version = parse_model_ref(args.model or load_settings().model_name)
    spec = OnlineSpec(
        name, model_name, version, SCORING_DIR, ENVIRONMENTS_DIR, out, aks_cluster=args.aks_cluster,
        instance_type=args.instance_type, instance_count=args.instance_count,
        scoring_timeout_ms=args.scoring_timeout_ms, app_insights=not args.disable_app_insights,
        cors_origins=args.cors_origins, cpu_cores=args.cpu_cores, memory_gb=args.memory_gb,
        environment=args.environment if args.environment is not None else load_settings().deploy_environment,
    )  # fmt: skip
    translation = online_translation(spec)
    files = write_verified(out, translation)
    report({"out": str(out), "files": files, "mapped": translation.mapped,
            "differences": translation.differences}, args.json)  # fmt: skip
    return 0


def _update(services: Any, args: argparse.Namespace, name: str, target: str) -> int:
    from pipelines.local.workspace.registry import parse_model_ref

    model = parse_model_ref(args.model) if args.model else None
    if model and target == "local":
        print(f"loading {args.model} for {name}, then replacing its workers...", file=sys.stderr)
    info = services.update(name, model, args.app_insights, args.timeout)
    if args.json:
        return _print_service(info, True)
    if model:
        print(f"{name} now serves {info['model']}")
    if args.app_insights is not None:
        where = f": {info['request_log']}" if args.app_insights and info.get("request_log") else ""
        print(f"App Insights (request log) {'enabled' if args.app_insights else 'disabled'}{where}")
    return 0


def _print_list(rows: list[dict[str, Any]], as_json: bool, target: str) -> int:
    if as_json:
        print_json(rows)
    elif not rows and target == "local":
        print("no local services; deploy one with: python -m pipelines.deploy")
    for r in [] if as_json else rows:
        print(
            f"{r['name']:<24} {r['state']:<13} {r.get('model') or r.get('target', ''):<20} {r['scoring_uri']}"
        )
    return 0


def _check_sizes(args: argparse.Namespace) -> None:
    """Deploy options checked before anything is started or any workspace is reached."""
    if args.cors_origins:
        origins = [o.strip() for o in args.cors_origins.split(",")]
        for origin in origins:
            if origin != "*" and not ORIGIN.fullmatch(origin):
                raise UserError(
                    f"--cors-origins: {origin!r} is not an origin",
                    hint="give scheme://host[:port] without a path, e.g. https://app.example.com, or *",
                )
        args.cors_origins = ",".join(origins)
    if args.scoring_timeout_ms is not None and args.scoring_timeout_ms < 1:
        raise UserError(
            f"--scoring-timeout-ms must be at least 1, got {args.scoring_timeout_ms}", hint="e.g. 60000"
        )
    for flag, value in (("--cpu-cores", args.cpu_cores), ("--memory-gb", args.memory_gb),
                        ("--max-replicas", args.max_replicas)):  # fmt: skip
        if value is not None and value <= 0:
            raise UserError(f"{flag} must be positive, got {value:g}", hint="e.g. 1")


def _print_service(info: dict[str, Any], as_json: bool, verb: str = "") -> int:
    if as_json:
        print_json(info)
        return 0
    title = f"{verb} {info.get('model', '')} as {info['name']}" if verb else info["name"]
    print(f"{title.strip()}  [{info.get('state', '')}]")
    if info.get("message"):
        print(f"  {info['message']}")
    rows = [
        ("scoring URI", info.get("scoring_uri")),
        ("swagger URI", info.get("swagger_uri")),
        ("swagger UI", info.get("swagger_ui_uri")),
        ("workers", info.get("workers")),
        ("scoring timeout", f"{info['scoring_timeout_ms']} ms" if info.get("scoring_timeout_ms") else None),
        ("app insights", info.get("app_insights")),
        ("CORS origins", info.get("cors_origins") or None),
        (
            "keys",
            f"{info['keys_file']} (print them: python -m pipelines.deploy keys --name {info['name']})"
            if "keys_file" in info
            else info.get("keys"),
        ),
        ("server log", info.get("server_log")),
        ("request log", info.get("request_log") if info.get("app_insights") else None),
        ("call it", f"python clients/endpoint.py --service {info['name']}" if "keys_file" in info else None),
    ]
    for label, value in rows:
        if value not in (None, ""):
            print(f"  {label:<16} {value}")
    return 0


def _print_keys(keys: dict[str, str], as_json: bool, regenerated: str | None) -> int:
    if as_json:
        print_json(keys)
        return 0
    if regenerated:
        print(f"regenerated the {regenerated} key (the old one no longer works)", file=sys.stderr)
    print(f"primary    {keys['primary']}")
    print(f"secondary  {keys['secondary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
