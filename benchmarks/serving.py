"""Real-time serving benchmark: what users deploy today vs the project's local deployment, side by side.

    .venv/bin/python -m benchmarks.serving [--requests 5000] [--concurrency 8] [--models raw,lean,automl]
                                           [--no-write]

For each model kind (``raw``: the project's raw-columns model class around a LightGBM regressor; ``lean``:
the same columns through benchmarks/_model.py's LeanColumnsModel and scikit-learn's wrapper, a dearer
predict; both 300-tree LightGBM, benchmarks/_model.py; ``automl``: the model the training pipeline
registers with its default settings, FLAML's choice):

1. registers the model in a throwaway local workspace (for ``automl``, by running the training pipeline)
   and writes a 2-row data.json of real rows;
2. times one ``run()`` in-process for both scripts (decode and predict apart): the ceiling = cores / cost of
   the project's run();
3. baseline: azureml-inference-server-http as its CLI runs it (gunicorn, default single worker; bound to
   127.0.0.1 here) serving benchmarks/baseline_score.py (inference-schema ``PandasParameterType``);
4. project: the local deployment (``pipelines.local.serving.deployments``: scoring/score.py, key check, N workers);
5. ``ab -c 8 -n 5000`` against each with the Bearer key, then a sweep of concurrencies for a latency plot.

Prints the results and writes the ``## Real-time serving`` section of BENCHMARKS.md and the PNG plots.
All traffic goes to 127.0.0.1 only, bounded by ``-n``; every server started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks._model import using_env
from benchmarks.report import model_name
from benchmarks.serving_report import SECTION, TARGETS, RunCost, render_section, write_section  # noqa: F401
from clients.benchmark import Level
from pipelines.processes import kill_group

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BASELINE_SCRIPT = PROJECT_ROOT / "benchmarks" / "baseline_score.py"
NOOP_SCRIPT = PROJECT_ROOT / "benchmarks" / "noop_score.py"
BARE_APP = "benchmarks.bare_wsgi:app"
SCORE_SCRIPT = PROJECT_ROOT / "scoring" / "score.py"
RESULTS_FILE = PROJECT_ROOT / "BENCHMARKS.md"
PLOT_FILE = PROJECT_ROOT / "benchmarks" / "results" / "serving-latency.png"
SERVICE_NAME = "bench-svc"
MODEL_KINDS = ("raw", "lean", "automl")
AUTOML_CALLS = 300  # in-process run() calls to time for the automl model (its run() costs ~20 ms)
AUTOML_SWEEP_REQUESTS = 400  # ab -n per sweep point for the automl model
AUTOML_REQUESTS = 1000  # ab -n of its main comparison: the baseline serves it at about 10 req/s


@dataclass
class AbResult(Level):
    """What one Apache Bench run measured (``failed``: ab's failed requests), and where the CPU went."""

    cpu: CpuPerRequest | None = None


@dataclass
class CpuPerRequest:
    """Where the machine's CPU went during one ab run, in ms per request."""

    ab_ms: float  # ab itself (its user + system time)
    server_ms: float  # gunicorn and its workers
    busy_ms: float  # the whole machine, all processes and the kernel (not idle, not stolen)


class CpuMeter:
    """CPU seconds of ab (this process's waited-for children), of a server's process tree, and of the machine."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> CpuMeter:
        self.start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = self._read()

    def per_request(self, requests: int) -> CpuPerRequest:
        ab, server, busy = (1000 * (b - a) / requests for a, b in zip(self.start, self.end, strict=True))
        return CpuPerRequest(ab_ms=ab, server_ms=server, busy_ms=busy)

    def _read(self) -> tuple[float, float, float]:
        import resource

        import psutil

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = 0.0
        if self.server_pid:
            root = psutil.Process(self.server_pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = proc.cpu_times()
                    server += times.user + times.system
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0)
        busy -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)  # already counted in user/nice
        return children.ru_utime + children.ru_stime, server, busy


def run_ab(
    url: str, data: Path, key: str, n: int, c: int, label: str, workdir: Path, server_pid: int | None = None
) -> AbResult:
    """``ab -n N -c C -p data.json -T application/json -H 'Authorization: Bearer ...'`` and its numbers.

    With ``server_pid`` (the gunicorn master), also where the CPU went per request (``AbResult.cpu``).
    """
    percentiles = workdir / f"ab-{label}-{c}.csv"
    cmd = ["ab", "-q", "-n", str(n), "-c", str(c), "-s", "30", "-p", str(data), "-T", "application/json",
           "-H", f"Authorization: Bearer {key}", "-e", str(percentiles), url]  # fmt: skip
    with CpuMeter(server_pid) as meter:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"ab failed: {proc.stderr.strip() or proc.stdout[-500:]}")
    out = proc.stdout
    by_percent = {}
    with open(percentiles) as fh:
        for row in csv.reader(fh):
            if row and row[0].replace(".", "").isdigit():
                by_percent[int(float(row[0]))] = float(row[1])
    requests = int(_field(out, r"Complete requests:\s+(\d+)"))
    return AbResult(
        label=label,
        concurrency=c,
        requests=requests,
        rps=float(_field(out, r"Requests per second:\s+([\d.]+)")),
        p50_ms=by_percent[50],
        p95_ms=by_percent[95],
        p99_ms=by_percent[99],
        failed=int(_field(out, r"Failed requests:\s+(\d+)")),
        non_2xx=int(_field(out, r"Non-2xx responses:\s+(\d+)", "0")),
        cpu=meter.per_request(requests) if server_pid else None,
    )


def _field(text: str, pattern: str, default: str | None = None) -> str:
    match = re.search(pattern, text)
    if match:
        return match.group(1)
    if default is None:
        raise RuntimeError(f"no {pattern!r} in ab's output:\n{text[-1500:]}")
    return default


def in_process_costs(
    env: dict[str, str], payload: dict[str, Any], calls: int, tag: str = ""
) -> tuple[RunCost, RunCost]:
    """Cost of one run() of the project's score.py and of the baseline script, in this process.

    ``run`` is called as the inference server calls it: with the JSON body's ``data`` as a keyword.
    Each is the median wall time of ``calls`` calls and, for the project, their mean CPU time.
    """
    with using_env(env):
        ours = _load_script(
            SCORE_SCRIPT, f"bench_score_{tag}"
        )  # inference-schema keys schemas by module name
        base = _load_script(BASELINE_SCRIPT, f"bench_baseline_{tag}")
    body = json.dumps(payload)
    assert (
        ours.run(data=json.loads(body)["data"])["result"] == base.run(data=json.loads(body)["data"])["result"]
    )

    def fresh_frames() -> Iterator[Any]:  # a new frame per call, as run() has (pandas caches column lookups)
        return iter(
            [ours.decode(json.loads(body)["data"], ours.SCHEMA) for _ in range(min(200, calls) + calls)]
        )

    frames, more_frames = fresh_frames(), fresh_frames()
    run_ms, cpu_ms = _timed(lambda: ours.run(data=json.loads(body)["data"]), calls)
    project = RunCost(
        run_ms=run_ms,
        cpu_ms=cpu_ms,
        decode_ms=_median_ms(lambda: ours.decode(json.loads(body)["data"], ours.SCHEMA), calls),
        predict_ms=_median_ms(lambda: ours.predict(next(frames)), calls),
        mlflow_predict_ms=_median_ms(lambda: ours.model.predict(next(more_frames)), calls),
    )
    baseline = RunCost(run_ms=_median_ms(lambda: base.run(data=json.loads(body)["data"]), calls))
    return project, baseline


def _load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.init()
    return module


def _median_ms(fn: Any, calls: int) -> float:
    return _timed(fn, calls)[0]


def _timed(fn: Any, calls: int) -> tuple[float, float]:
    """Median wall time and mean CPU time (this process, all its threads) of ``calls`` calls, in ms."""
    for _ in range(min(200, calls)):
        fn()
    samples = []
    cpu_start = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu_start
    return statistics.median(samples) * 1000, cpu / calls * 1000


def run_cpu_ms(env: dict[str, str], payload: dict[str, Any], calls: int, tag: str) -> float:
    """Mean CPU time of one run() of the project's score.py, in this process (ms)."""
    with using_env(env):
        ours = _load_script(SCORE_SCRIPT, f"bench_score_{tag}")
    body = json.dumps(payload)
    return _timed(lambda: ours.run(data=json.loads(body)["data"]), calls)[1]


@contextlib.contextmanager
def baseline_server(env: dict[str, str], workdir: Path) -> Iterator[str]:
    """azureml-inference-server-http with its CLI's gunicorn settings and default worker count, on 127.0.0.1."""
    port = _free_port()
    server_env = {
        **os.environ,
        **env,
        "AZUREML_ENTRY_SCRIPT": str(BASELINE_SCRIPT),
        "SERVICE_NAME": "baseline",
    }
    server_env.pop("OMP_NUM_THREADS", None)  # as users run it: LightGBM's default threads
    code = (
        "from azureml_inference_server_http import amlserver_linux as s\n"
        "from azureml_inference_server_http.constants import DEFAULT_WORKER_COUNT as n\n"
        f"s.run('127.0.0.1', {port}, n)\n"
    )
    log = workdir / "baseline-server.log"
    with _served([sys.executable, "-c", code], port, log, "the baseline server", env=server_env, cwd=workdir):
        yield f"http://127.0.0.1:{port}/score"


@contextlib.contextmanager
def bare_gunicorn(workers: int, workdir: Path) -> Iterator[tuple[str, int]]:
    """gunicorn with ``workers`` sync workers serving benchmarks/bare_wsgi.py on 127.0.0.1: its URL and pid."""
    port = _free_port()
    cmd = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
           "--no-control-socket", BARE_APP]  # fmt: skip
    with _served(cmd, port, workdir / "bare-gunicorn.log", "bare gunicorn", cwd=PROJECT_ROOT) as proc:
        yield f"http://127.0.0.1:{port}/score", proc.pid


@contextlib.contextmanager
def _served(
    cmd: list[str],
    port: int,
    log_path: Path,
    what: str,
    env: dict[str, str] | None = None,
    cwd: Path = PROJECT_ROOT,
) -> Iterator[subprocess.Popen]:
    """A server started in its own session, healthy on 127.0.0.1:port, stopped with its whole group after."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/", proc, log_path, what=what)
        yield proc
    finally:
        kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited; see {log}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not start in {timeout} s; see {log}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> dict[str, str]:
    """nproc, CPU model, RAM, OS and Python, for the results file."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if line.startswith("model name")
            ),
            cpu,
        )
    ram_gib = 0.0
    with contextlib.suppress(OSError, StopIteration):
        kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        ram_gib = kib / 1024 / 1024
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{ram_gib:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "n/a"


def wait_until_quiet(seconds: float) -> None:
    """Wait (at most ``seconds``) until other work leaves the cores mostly idle."""
    deadline = time.monotonic() + seconds
    limit = 0.5 * (os.cpu_count() or 1)
    while time.monotonic() < deadline and os.getloadavg()[0] > limit:
        print(f"waiting for a quiet machine (load {os.getloadavg()[0]:.2f} > {limit:.1f}) ...", flush=True)
        time.sleep(15)


def plot(sweep: list[AbResult], path: Path) -> None:
    """Latency percentiles and throughput against concurrency, baseline vs project."""
    from clients.benchmark import plot_levels

    plot_levels(sweep, path, title="2-row requests (ab)", p99_target_ms=TARGETS["p99_ms"])


@contextlib.contextmanager
def local_service(
    model: str, workers: int | None, entry_script: Path | None = None
) -> Iterator[tuple[Any, str]]:
    """``model`` deployed locally as SERVICE_NAME (deleted afterwards), and the service's primary key."""
    from pipelines.local.serving import deployments

    service = deployments.deploy(
        model, None, SERVICE_NAME, workers=workers, overwrite=True, entry_script=entry_script
    )
    try:
        yield service, deployments.keys(SERVICE_NAME)["primary"]
    finally:
        deployments.delete(SERVICE_NAME)


def _server_pid() -> int | None:
    """The benchmark deployment's gunicorn master."""
    from pipelines.local.serving import deployments

    return deployments.read_runtime(SERVICE_NAME).get("server_pid")


def bench_model(kind: str, csv_path: Path, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Register one model kind, time its run() in-process, and load both servers with ab."""
    from benchmarks._model import raw_rows, register_demo_model
    from pipelines.local.workspace.registry import model_env

    name = f"bench-{kind}"
    estimator = None
    if kind == "automl":
        print(f"[{kind}] training with the training pipeline's default settings ...", flush=True)
        estimator = train_pipeline_model(csv_path, name)
        print(f"  registered: {estimator}", flush=True)
    else:
        print(f"[{kind}] registering a {args.trees}-tree model ...", flush=True)
        register_demo_model(csv_path, name=name, n_trees=args.trees, kind=kind)
    calls, sweep_requests, requests = args.calls, args.sweep_requests, args.requests
    if kind == "automl":  # a run() of ~20 ms: fewer in-process calls and sweep requests keep this part short
        calls, sweep_requests = min(calls, AUTOML_CALLS), min(sweep_requests, AUTOML_SWEEP_REQUESTS)
        requests = min(requests, AUTOML_REQUESTS)
    env = {**model_env(name), "AMLOPS_MODEL_NAME": name}
    payload = {"data": json.loads(raw_rows(csv_path).tail(2).to_json(orient="records"))}
    data = workdir / "data.json"
    data.write_text(json.dumps(payload))

    print(f"[{kind}] timing run() in-process ...", flush=True)
    project_cost, baseline_cost = in_process_costs(env, payload, calls, kind)
    print(f"  project {project_cost}; baseline {baseline_cost}", flush=True)
    sweep_cs = [int(c) for c in args.sweep.split(",") if c]
    sweep: list[AbResult] = []
    print(f"[{kind}] baseline: azureml-inference-server-http defaults ...", flush=True)
    with baseline_server(env, workdir) as url:
        run_ab(url, data, "unused", 200, args.concurrency, "warmup", workdir)
        base = run_ab(url, data, "unused", requests, args.concurrency, "baseline", workdir)
        print(f"  {base}", flush=True)
        for c in sweep_cs:
            sweep.append(run_ab(url, data, "unused", max(100, sweep_requests // 2), c, "baseline", workdir))
    print(f"[{kind}] project: local deployment ...", flush=True)
    with local_service(name, args.workers) as (service, key):
        run_ab(service.scoring_uri, data, key, 500, args.concurrency, "warmup", workdir)
        proj = run_ab(
            service.scoring_uri, data, key, requests, args.concurrency, "project", workdir, _server_pid()
        )
        print(f"  {proj}", flush=True)
        for c in sweep_cs:
            sweep.append(run_ab(service.scoring_uri, data, key, sweep_requests, c, "project", workdir))
    floor, bare = _floors(kind, name, service.workers, data, key, args, workdir)
    project_cost.cpu_ms_after = run_cpu_ms(env, payload, calls, f"{kind}_after")
    print(
        f"[{kind}] run() again after the loads: {project_cost.cpu_ms_after:.2f} ms of CPU per call",
        flush=True,
    )
    plot_file = PLOT_FILE.with_name(f"{PLOT_FILE.stem}-{kind}.png")
    plot(sweep, workdir / plot_file.name if args.no_write else plot_file)
    return {
        "baseline": asdict(base),
        "project": asdict(proj),
        "project_cost": asdict(project_cost),
        "baseline_cost": asdict(baseline_cost),
        "ceiling_rps": (os.cpu_count() or 1) / (project_cost.cost_ms / 1000),
        "floor": asdict(floor),
        "bare": asdict(bare),
        "sweep": [asdict(r) for r in sweep],
        "plot": str(plot_file.relative_to(PROJECT_ROOT)),
        "workers": service.workers,
        "calls": calls,
        "sweep_requests": sweep_requests,
        "estimator": estimator,
    }


def _floors(
    kind: str, name: str, workers: int, data: Path, key: str, args: argparse.Namespace, workdir: Path
) -> tuple[AbResult, AbResult]:
    """The stack floor (the deployment serving a do-nothing run()) and the gunicorn floor (a bare WSGI app)."""
    print(f"[{kind}] stack floor: the same deployment serving a run() that does nothing ...", flush=True)
    with local_service(name, args.workers, NOOP_SCRIPT) as (floor_service, floor_key):
        run_ab(floor_service.scoring_uri, data, floor_key, 500, args.concurrency, "warmup", workdir)
        floor = run_ab(
            floor_service.scoring_uri, data, floor_key, args.requests, args.concurrency, "floor", workdir,
            _server_pid(),
        )  # fmt: skip
        print(f"  {floor}", flush=True)
    print(f"[{kind}] gunicorn floor: the same gunicorn serving a bare WSGI app ...", flush=True)
    with bare_gunicorn(workers, workdir) as (bare_url, bare_pid):
        run_ab(bare_url, data, key, 500, args.concurrency, "warmup", workdir)
        bare = run_ab(bare_url, data, key, args.requests, args.concurrency, "bare", workdir, bare_pid)
        print(f"  {bare}", flush=True)
    return floor, bare


def train_pipeline_model(csv_path: Path, name: str) -> str:
    """Register ``name`` as users get it: the training pipeline with its defaults; what it registered."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "run", "--data", str(csv_path), "--set", f"model_name={name}",
         "--json"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"the training pipeline failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    report = json.loads((Path(summary["folder"]) / "outputs" / "metrics_data" / "metrics.json").read_text())
    return model_name(report) + (", in FLAML's stacked ensemble" if report.get("ensemble") else "")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--requests", type=int, default=5000, help="ab -n for the main comparison (default 5000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="ab -c for the main comparison (default 8)"
    )
    parser.add_argument(
        "--sweep", default="1,2,4,8,16", help="concurrencies for the plot (default 1,2,4,8,16)"
    )
    parser.add_argument(
        "--sweep-requests", type=int, default=1000, help="ab -n per sweep point (default 1000)"
    )
    parser.add_argument("--trees", type=int, default=300, help="LightGBM trees (default 300)")
    parser.add_argument("--models", default="raw,lean,automl",
                        help="model kinds to serve: raw, lean, automl (default all three)")  # fmt: skip
    parser.add_argument("--workers", type=int, help="project workers (default: one per core)")
    parser.add_argument(
        "--calls", type=int, default=2000, help="in-process run() calls to time (default 2000)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop below 0.5 per core")  # fmt: skip
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(MODEL_KINDS))
    if unknown or not kinds:
        parser.error(
            f"--models takes a comma-separated list of {', '.join(MODEL_KINDS)}; got {args.models!r}"
        )
    if shutil.which("ab") is None:
        print("error: ab not found (apt-get install apache2-utils)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still stop every server it started
    os.environ["OMP_NUM_THREADS"] = "1"  # in-process timing with one model thread, as in each worker
    sys.path.insert(0, str(PROJECT_ROOT))
    from benchmarks._model import using_home
    from pipelines.datasets import resolve

    shared = PROJECT_ROOT.parent / "shared" / "data"
    if not os.environ.get("AMLOPS_DATA_DIR") and (shared / "bike-no.csv").is_file():
        os.environ["AMLOPS_DATA_DIR"] = str(shared)
    csv_path = resolve("bike-no")
    wait_until_quiet(args.wait_quiet)
    workdir = Path(tempfile.mkdtemp(prefix="amlops-serving-bench-"))
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.serving " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "load_before": load_average(),
        "trees": args.trees,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "sweep_requests": args.sweep_requests,
        "calls": args.calls,
        "models": {},
        "notes": [
            "in-process timings use one model thread; the baseline server keeps the model's default threads"
            " (LightGBM's, and the n_jobs=-1 that AutoML trains with)."
        ],
    }
    with using_home(workdir / "home"):
        for kind in kinds:
            report["models"][kind] = bench_model(kind, csv_path, args, workdir)
            report["workers"] = report["models"][kind]["workers"]
    report["load_after"] = load_average()
    section = render_section(report)
    print()
    print(section)
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    if not args.no_write:
        write_section(RESULTS_FILE, section)
        print(f"wrote {RESULTS_FILE} ({SECTION}) and the plots in {PLOT_FILE.parent}")
    shutil.rmtree(workdir / "home", ignore_errors=True)
    print(f"raw results: {workdir / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
