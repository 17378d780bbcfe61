"""The serving benchmark's CPU accounting attributes CPU time to ab, the server's process tree and the machine."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest

from benchmarks.serving import (
    AbResult,
    CpuMeter,
    CpuPerRequest,
    RunCost,
    _timed,
    bare_gunicorn,
    render_section,
)
from benchmarks.serving import main as serving_main

BURN = """
import os, sys, time
go, done, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
while not os.path.exists(go):
    time.sleep(0.01)
start = time.process_time()
while time.process_time() - start < seconds:
    pass
open(done, "a").close()
time.sleep(60)
"""

SERVER = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3] + ".child", sys.argv[4]])
code, sys.argv[1:] = sys.argv[1], [sys.argv[2], sys.argv[3], sys.argv[4]]
exec(code, {"__name__": "__main__"})
"""


def test_cpu_meter_splits_ab_server_tree_and_machine(tmp_path: Path) -> None:
    go, done = tmp_path / "go", tmp_path / "done"
    # a "server" that, like gunicorn, has a child; each burns 0.3 s of CPU once told to, then idles
    server = subprocess.Popen([sys.executable, "-c", SERVER, BURN, str(go), str(done), "0.3"])
    try:
        time.sleep(0.5)  # both processes are up and waiting
        with CpuMeter(server.pid) as meter:
            go.touch()
            # the "ab": a waited-for child of this process burning 0.2 s
            ab = BURN.replace("time.sleep(60)", "")
            subprocess.run(
                [sys.executable, "-c", ab, str(go), str(tmp_path / "ab"), "0.2"], timeout=60, check=True
            )
            deadline = time.monotonic() + 60
            while not (done.exists() and Path(str(done) + ".child").exists()) and time.monotonic() < deadline:
                time.sleep(0.02)
        cpu = meter.per_request(1000)  # ms per request over 1000 "requests" = seconds of CPU
    finally:
        for proc in psutil.Process(server.pid).children(recursive=True):
            proc.kill()
        server.kill()
        server.wait()
    # process times come in 10 ms clock ticks, hence the 0.02 s of slack below each amount burned
    assert 0.18 <= cpu.ab_ms < 1.0  # ab's own 0.2 s (plus interpreter start-up)
    assert 0.56 <= cpu.server_ms < 2.0  # 0.3 s in the master and 0.3 s in its child
    assert cpu.busy_ms >= 0.74  # the machine did at least all of that


def _model_result(
    run_ms: float, rps: float, estimator: str | None = None, bare_rps: float | None = None
) -> dict:
    def ab(label: str, rps: float, p99: float) -> dict:
        level = AbResult(label, 8, 1000 if estimator else 5000, rps, p99 / 2, p99 * 0.9, p99, 0, 0)
        return asdict(level)

    return {
        "baseline": ab("baseline", rps / 4, 90.0),
        "project": ab("project", rps, 8 * 1000 / rps * 1.2),
        "project_cost": asdict(RunCost(run_ms, run_ms / 5, run_ms / 2, run_ms)),
        "baseline_cost": asdict(RunCost(run_ms * 3)),
        "ceiling_rps": 2 / (run_ms / 1000),
        "floor": None,
        "bare": (
            asdict(AbResult("bare", 8, 5000, bare_rps, 2.0, 3.0, 4.0, 0, 0, CpuPerRequest(0.1, 0.3, 0.5)))
            if bare_rps
            else None
        ),
        "sweep": [],
        "plot": "benchmarks/results/x.png",
        "workers": 2,
        "calls": 300 if estimator else 2000,
        "sweep_requests": 400 if estimator else 1000,
        "estimator": estimator,
    }


def _report(**models: dict) -> dict:
    """A report as benchmarks.serving builds it, for 2 cores, with these models' results."""
    return {
        "machine": {"nproc": "2", "cpu": "x", "ram": "1 GiB", "os": "Linux", "python": "3.11"},
        "date": "2026-11-26 09:00 UTC", "command": "python -m benchmarks.serving", "load_before": "0 0 0",
        "load_after": "1 1 1", "trees": 300, "requests": 5000, "concurrency": 8, "sweep_requests": 1000,
        "calls": 2000, "workers": 2, "models": models,
    }  # fmt: skip


def test_report_names_the_pipelines_estimator_and_says_when_p99_cannot_be_met() -> None:
    report = _report(raw=_model_result(1.2, 760.0), automl=_model_result(19.0, 98.0, "extra_tree"))
    text = render_section(report)
    raw, automl = text.split("### Model `raw`")[1].split("### Model `automl`")
    assert "registered this run: extra_tree" in automl
    assert "(300 calls, one model thread)" in automl and "(2000 calls, one model thread)" in raw
    assert "`ab -n 400` per point" in automl and "`ab -n 1000` per point" in raw
    # at -c 8 with a ceiling of 105 req/s, requests take 76 ms on average whatever the server: said, for automl only
    assert "with at most 105 req/s, 8 requests in flight take 76 ms on average" in automl
    assert "Little's law" not in raw
    assert "For this model both servers got `ab -c 8 -n 1000`: at the baseline's 24 req/s" in automl
    assert "For this model" not in raw
    assert "| throughput >= 80% of the ceiling | 93% of 105 req/s | met |" in automl
    assert "| throughput >= 80% of the ceiling | 46% of 1667 req/s | **missed** |" in raw


def test_unknown_model_kind_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        serving_main(["--models", "raw,nosuch", "--no-write"])
    assert exit_.value.code == 2
    assert (
        "--models takes a comma-separated list of raw, lean, automl; got 'raw,nosuch'"
        in capsys.readouterr().err
    )


def test_report_bounds_the_share_of_the_ceiling_by_gunicorn_alone() -> None:
    report = _report(
        raw=_model_result(1.2, 760.0, bare_rps=4000.0), automl=_model_result(19.0, 98.0, "x", 4000.0)
    )
    raw, automl = render_section(report).split("### Model `raw`")[1].split("### Model `automl`")
    # 2 cores / 4000 req/s = 0.50 ms per request for ab, the kernel and gunicorn: 1.2 / 1.7 = 71% at most
    assert "answers 4000 req/s (p99 4.0 ms, 0 non-2xx), i.e. 0.50 ms of the 2 cores per request" in raw
    assert "(gunicorn's processes 0.30 ms)" in raw
    assert (
        "could be at most 1.20 / (1.20 + 0.50) = 71%: the 80% target needs the whole stack within 0.30 ms"
        in raw
    )
    # a 19 ms run(): gunicorn alone allows 97%, and no "needs" sentence
    assert "could be at most 19.00 / (19.00 + 0.50) = 97%." in automl
    assert "target needs the whole stack" not in automl


def test_bare_gunicorn_answers_a_post_with_two_zeros(tmp_path: Path) -> None:
    import json
    import urllib.request

    with bare_gunicorn(1, tmp_path) as (url, pid):
        assert psutil.Process(pid).is_running()
        request = urllib.request.Request(
            url, data=b'{"data": []}', headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
            assert json.loads(resp.read()) == {"result": [0.0, 0.0]}
        assert url.startswith("http://127.0.0.1:")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_run_cost_is_the_mean_cpu_of_the_calls_not_their_wall_time() -> None:
    def burn() -> None:  # 3 ms of CPU
        start = time.process_time()
        while time.process_time() - start < 0.003:
            pass

    wall, cpu = _timed(lambda: time.sleep(0.003), 20)
    assert wall >= 3.0 and cpu < 1.0  # sleeping costs no CPU
    wall, cpu = _timed(burn, 20)
    assert 2.9 <= cpu < 6.0
    # the ceiling divides by the mean CPU of both measurements, else by the median wall time
    assert RunCost(1.0, cpu_ms=2.0, cpu_ms_after=3.0).cost_ms == 2.5
    assert RunCost(1.0, cpu_ms=2.0).cost_ms == 2.0 and RunCost(1.0).cost_ms == 1.0


def test_report_shows_both_cpu_measurements_and_divides_by_their_mean() -> None:
    result = _model_result(1.0, 700.0)
    result["project_cost"].update(cpu_ms=1.1, cpu_ms_after=1.3)
    result["ceiling_rps"] = 2 / 0.0012
    report = _report(raw=result)
    text = render_section(report)
    assert "mean CPU time: 1.10 ms before the loads and 1.30 ms after them" in text
    assert "Ceiling = 2 cores / 1.20 ms = 1667 req/s." in text
    assert "| throughput >= 80% of the ceiling | 42% of 1667 req/s | **missed** |" in text


def test_local_service_deploys_yields_the_key_and_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import serving
    from pipelines.local.serving import deployments

    calls: list[tuple] = []
    monkeypatch.setattr(deployments, "deploy", lambda *a, **k: calls.append(("deploy", a[2])) or "svc")
    monkeypatch.setattr(deployments, "keys", lambda name: {"primary": "k1"})
    monkeypatch.setattr(deployments, "delete", lambda name: calls.append(("delete", name)))
    with pytest.raises(RuntimeError), serving.local_service("bench-raw", 2) as (service, key):
        assert (service, key) == ("svc", "k1")
        raise RuntimeError("a load that fails")
    assert calls == [("deploy", serving.SERVICE_NAME), ("delete", serving.SERVICE_NAME)]
