"""Benchmark a real-time endpoint from Python: req/s and p50/p95/p99 latency at several concurrencies, and a plot.

    python -m clients.benchmark --service bike-demand-svc                # a local service: URI and key from its record
    python -m clients.benchmark --uri https://.../score --key KEY       # any endpoint, e.g. on ACI or AKS
        [--concurrency 1,2,4,8,16] [-n 500] [--data data.json] [--plot latency.png] [--json]

Each level posts data.json (written by clients/endpoint.py when it is missing) ``-n`` times with the Bearer key
from ``c`` threads, each holding its own HTTP connection (opened again whenever the server closes it, as
gunicorn's sync workers do after every answer), and times every answer. The load generator is Python: on the
endpoint's own machine it takes CPU from the server, so Apache Bench (clients/benchmark.sh) is the reference for
throughput, and this reports what a Python caller sees. It stops after the last level; every request times out
after ``--timeout`` seconds. The key is sent only to the endpoint and never printed.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import sys
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.endpoint import (
    add_endpoint_arguments,
    check_output_file,
    check_uri,
    resolve_endpoint,
    write_payload,
)
from pipelines.errors import UserError, cli_main, print_json

MAX_CONCURRENCY = 256


@dataclass
class Level:
    """One concurrency level: throughput, latency percentiles and what went wrong."""

    label: str
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    non_2xx: int
    failed: int  # no answer at all: connection refused or reset, or a timeout


class Target:
    """POSTs one body to one scoring URI with the Bearer key, over connections it makes."""

    def __init__(self, uri: str, key: str, body: bytes, timeout: float) -> None:
        check_uri(uri)
        parts = urllib.parse.urlsplit(uri)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.body, self.timeout = body, timeout
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    def connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def post(self, conn: http.client.HTTPConnection) -> tuple[int, bytes]:
        """Status and body of one POST; the connection is reopened by the next call if the server closed it."""
        conn.request("POST", self.path, body=self.body, headers=self.headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.will_close:
            conn.close()
        return resp.status, body


def probe(target: Target, uri: str) -> None:
    """One request before the load: a wrong key, URI or payload is an error, not a benchmark of 4xx answers."""
    conn = target.connection()
    try:
        status, body = target.post(conn)
    except (OSError, http.client.HTTPException) as exc:
        raise UserError(f"cannot reach {uri}: {exc}", hint="is the service running?") from None
    finally:
        conn.close()
    if status == 401:
        raise UserError(
            f"{uri} answered 401", hint="check the key (python -m pipelines.deploy keys --name NAME)"
        )
    if status != 200:
        text = body.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
        raise UserError(
            f"{uri} answered {status}: {text}", hint="check the payload against the service's swagger.json"
        )


def run_level(target: Target, requests: int, concurrency: int, label: str = "endpoint") -> Level:
    """``requests`` POSTs from ``concurrency`` threads; latency of every answer, throughput over the whole level."""
    tickets = itertools.count()  # next() on it is atomic under the GIL: each request is taken once

    def client() -> list[tuple[float, int | None]]:
        conn, timings = target.connection(), []
        try:
            while next(tickets) < requests:
                start = time.perf_counter()
                try:
                    status: int | None = target.post(conn)[0]
                except (OSError, http.client.HTTPException):
                    conn.close()
                    status = None
                timings.append((time.perf_counter() - start, status))
        finally:
            conn.close()
        return timings

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(client) for _ in range(concurrency)]
        timings = [t for f in futures for t in f.result()]
    wall = time.perf_counter() - started
    answered = sorted(seconds * 1000 for seconds, status in timings if status is not None)
    return Level(
        label=label,
        concurrency=concurrency,
        requests=len(timings),
        rps=len(answered) / wall,
        p50_ms=percentile(answered, 50),
        p95_ms=percentile(answered, 95),
        p99_ms=percentile(answered, 99),
        non_2xx=sum(1 for _, status in timings if status is not None and not 200 <= status < 300),
        failed=sum(1 for _, status in timings if status is None),
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile of sorted values (nearest rank, as Apache Bench reports them); NaN if empty."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least the first
    return float(ordered[int(rank) - 1])


def plot_levels(levels: Sequence[Any], path: Path, *, title: str, p99_target_ms: float | None = None) -> None:
    """Latency (p50, p99) and throughput against concurrency, one line per label; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = list(dict.fromkeys(level.label for level in levels))
    for label, color in zip(labels, itertools.cycle(["tab:blue", "tab:red", "tab:green", "tab:purple"])):
        rows = sorted((r for r in levels if r.label == label), key=lambda r: r.concurrency)
        cs = [r.concurrency for r in rows]
        lat.plot(cs, [r.p50_ms for r in rows], "o-", color=color, label=f"{label} p50")
        lat.plot(cs, [r.p99_ms for r in rows], "s--", color=color, label=f"{label} p99")
        thr.plot(cs, [r.rps for r in rows], "o-", color=color, label=label)
    if p99_target_ms is not None:
        lat.axhline(p99_target_ms, color="grey", lw=0.8, ls=":", label="p99 target")
    ticks = sorted({level.concurrency for level in levels})
    for ax, ylabel in ((lat, "latency (ms)"), (thr, "requests / s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, labels=[str(c) for c in ticks])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lat.set_title(f"latency, {title}")
    thr.set_title("throughput")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def concurrencies(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or not all(1 <= c <= MAX_CONCURRENCY for c in levels):
        raise UserError(
            f"--concurrency must be a comma-separated list of 1..{MAX_CONCURRENCY}, got {text!r}",
            hint="e.g. 1,2,4,8",
        )
    return sorted(set(levels))


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Load the endpoint level by level, print the table (or JSON) and write the plot."""
    parser = argparse.ArgumentParser(prog="python -m clients.benchmark", description=__doc__.split("\n\n")[0])
    add_endpoint_arguments(parser)
    parser.add_argument(
        "--data", type=Path, default=Path("data.json"), help="payload file (default data.json)"
    )
    parser.add_argument("--concurrency", default="1,2,4,8,16", help="levels (default 1,2,4,8,16)")
    parser.add_argument("-n", "--requests", type=int, default=500, help="requests per level (default 500)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    parser.add_argument(
        "--plot", type=Path, default=Path("latency.png"), help="PNG to write (default latency.png)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    levels = concurrencies(args.concurrency)
    if args.requests < 1:
        raise UserError(f"-n must be at least 1, got {args.requests}", hint="e.g. -n 500")
    if not args.timeout > 0:  # NaN too
        raise UserError(f"--timeout must be positive, got {args.timeout}", hint="e.g. --timeout 30")
    if not args.data.is_file():  # it will be written below: check where, before anything is sent
        check_output_file(args.data, "--data")
    check_output_file(args.plot, "--plot", make_folders=True, example="latency.png")
    uri, key = resolve_endpoint(args.service, args.uri, args.key)
    if not args.data.is_file():
        print(f"{args.data} not found: writing it with clients/endpoint.py's rows", file=sys.stderr)
        write_payload(uri, args.data, out_flag="--data")
    try:
        body = args.data.read_bytes()
    except OSError as exc:
        raise UserError(
            f"cannot read {args.data}: {exc.strerror}", hint="pass --data with a readable file"
        ) from None
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise UserError(
            f"{args.data} is not JSON: {exc}", hint="write it with python clients/endpoint.py"
        ) from None
    rows = payload.get("data") if isinstance(payload, dict) else None
    title = f"{len(rows)}-row requests" if isinstance(rows, list) else f"{args.data.name} requests"
    target = Target(uri, key, body, args.timeout)
    probe(target, uri)
    results = []
    for c in levels:
        results.append(run_level(target, args.requests, c))
        if not args.json:
            print(f"  -c {c}: {results[-1].rps:.0f} req/s, p99 {results[-1].p99_ms:.1f} ms", file=sys.stderr)
    plot_levels(results, args.plot, title=title)
    if args.json:
        print_json({"uri": uri, "requests_per_level": args.requests, "levels": [asdict(r) for r in results],
                    "plot": str(args.plot.resolve())})  # fmt: skip
        return 0
    print(f"{uri}: {args.requests} requests per level, {args.data}")
    print(f"{'-c':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'failed':>7}")
    for r in results:
        print(
            f"{r.concurrency:>4} {r.rps:>8.0f} {r.p50_ms:>8.1f} {r.p95_ms:>8.1f} {r.p99_ms:>8.1f} {r.non_2xx:>8}"
            f" {r.failed:>7}"
        )
    print(f"plot: {args.plot.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
