"""The serving benchmark's CPU accounting attributes CPU time to ab, the server's process tree and the machine."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from benchmarks.serving import CpuMeter

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
