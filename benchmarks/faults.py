"""Deployment fault run: stop, start, update and delete racing the workspace service's reviver, repeated.

Each round runs the user's commands (``python -m pipelines.deploy ...``, each its own process) against a
local service while the workspace service runs (its keeper starts again services that should run) and a
second keeper in this process calls the same ``revive_all`` as fast as it can, to widen every window:

1. ``stop``, then 3 s later: the service is Stopped, nothing of it runs and its port is free;
2. ``start``: it reports Healthy, and it is;
3. two ``update --model`` of the same service at once, to two versions: the service serves the model the
   last command to succeed reported, and answers from it;
4. ``delete``, then 3 s later: its folder is gone, nothing of it runs, its port is free;
5. ``deploy`` again for the next round: it reports Healthy, and it is.

A round counts when every command ended in the state it reported. The section written to BENCHMARKS.md
has the machine, the date and the command.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.report import machine_line, update_section

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = PROJECT_ROOT / "BENCHMARKS.md"
SECTION = "Deployment faults"
SERVICE = "fault-svc"
MODEL = "fault-model"
SETTLE_SECONDS = 3.0
PROBE_SCRIPT = """
import os


def init():
    pass


def run(raw_data):
    return {"model_dir": os.environ.get("AZUREML_MODEL_DIR", "")}
"""


def deploy_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AMLOPS_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "pipelines.deploy", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def leftovers(folder: Path, port: int) -> list[int]:
    """Pids of the service's supervisor or gunicorn still alive."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        line = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if f"supervise {folder}" in line or ("gunicorn" in line and f"127.0.0.1:{port}" in line):
            found.append(proc.info["pid"])
    return found


def serves(name: str) -> str:
    """The model folder the running service answers from ("" if it does not answer)."""
    import requests

    from pipelines.local.serving import deployments

    service = deployments.load(name)
    key = deployments.keys(name)["primary"]
    try:
        resp = requests.post(
            service.scoring_uri, json={}, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
    except requests.RequestException:
        return ""
    return resp.json().get("model_dir", "") if resp.status_code == 200 else ""


class Round:
    """One round's checks: which commands ended in the state they reported, and why not."""

    def __init__(self, home: Path, versions: list[int], number: int) -> None:
        self.home, self.versions, self.number = home, versions, number
        self.failures: list[str] = []
        self.passed: dict[str, bool] = {}

    def check(self, what: str, ok: bool, detail: str) -> None:
        self.passed[what] = self.passed.get(what, True) and ok
        if not ok:
            self.failures.append(f"round {self.number} {what}: {detail}")

    def stopped_and_gone(self, what: str, port: int, folder: Path, deleted: bool) -> None:
        from pipelines.local.serving import deployments

        time.sleep(SETTLE_SECONDS)  # the keepers run all along
        if deleted:
            self.check(what, not folder.exists(), f"{folder} exists again")
        else:
            current = deployments.state(SERVICE)
            self.check(what, current == "Stopped", f"state {current} after it reported stopped")
        procs = leftovers(folder, port)
        self.check(what, not procs, f"still running: pids {procs}")
        self.check(what, port_free(port), f"port {port} still in use")

    def healthy(self, what: str, done: subprocess.CompletedProcess) -> None:
        from pipelines.local.serving import deployments

        reported = done.returncode == 0 and "[Healthy]" in done.stdout
        self.check(what, reported, f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")
        if reported:
            current = deployments.state(SERVICE)
            self.check(what, current == "Healthy", f"reported Healthy, state {current}")

    def run(self) -> None:
        from pipelines.local.serving import deployments

        service = deployments.load(SERVICE)
        done = deploy_cli(self.home, "stop", "--name", SERVICE)
        self.check(
            "stop", done.returncode == 0 and f"stopped {SERVICE}" in done.stdout, done.stdout + done.stderr
        )
        self.stopped_and_gone("stop", service.port, service.folder, deleted=False)
        self.healthy("start", deploy_cli(self.home, "start", "--name", SERVICE))
        self.updates()
        done = deploy_cli(self.home, "delete", "--name", SERVICE)
        self.check(
            "delete", done.returncode == 0 and f"deleted {SERVICE}" in done.stdout, done.stdout + done.stderr
        )
        self.stopped_and_gone("delete", service.port, service.folder, deleted=True)
        again = deploy_cli(self.home, "--name", SERVICE, "--model", f"{MODEL}:{self.versions[0]}", "--workers", "1",
                           "--entry-script", service.entry_script)  # fmt: skip
        self.healthy("deploy", again)

    def updates(self) -> None:
        """Two updates at once; the last one to succeed must be what the service serves."""
        from pipelines.local.serving import deployments

        order = self.versions if self.number % 2 else self.versions[::-1]
        ended: list[tuple[float, int, subprocess.CompletedProcess]] = []

        def update(version: int) -> None:
            done = deploy_cli(self.home, "update", "--name", SERVICE, "--model", f"{MODEL}:{version}")
            ended.append((time.monotonic(), version, done))

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(update, order))
        succeeded = [(t, v) for t, v, d in sorted(ended) if d.returncode == 0]
        for _, version, done in ended:
            if done.returncode == 0:
                said = re.search(rf"now serves {MODEL}:(\d+)", done.stdout)
                self.check(
                    "update", bool(said) and int(said.group(1)) == version, f"reported {done.stdout!r}"
                )
            else:
                self.check("update", "error:" in done.stderr, f"exit {done.returncode} without an error line")
        if not succeeded:
            self.check("update", False, "neither update succeeded")
            return
        last = succeeded[-1][1]
        record = deployments.load(SERVICE)
        self.check(
            "update",
            record.model_version == last,
            f"last reported {last}, record says {record.model_version}",
        )
        answering = serves(SERVICE)
        self.check(
            "update",
            answering == record.model_dir,
            f"answers from {answering!r}, record {record.model_dir!r}",
        )


def keeper(stop: threading.Event) -> None:
    from pipelines.local.serving import deployments

    while not stop.is_set():
        deployments.revive_all()
        time.sleep(0.05)


def prepare(home: Path) -> tuple[list[int], Path]:
    """Two versions of a small model, the probe entry script, and the service deployed once."""
    from benchmarks._model import register_demo_model
    from pipelines.datasets import resolve
    from pipelines.local.serving import deployments

    csv = resolve("bike-no")
    versions = [register_demo_model(csv, name=MODEL, n_trees=n) for n in (3, 4)]
    script = home / "which_model.py"
    script.write_text(PROBE_SCRIPT)
    deployments.deploy(MODEL, versions[0], SERVICE, workers=1, entry_script=script)
    return versions, script


def start_workspace_service(home: Path) -> subprocess.Popen:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "AMLOPS_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    log = open(home / "workspace-service.log", "w")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen([sys.executable, "-m", "pipelines.workspace", "serve", "--port", str(port)],
                            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


def section(rounds: list[Round], command: str, machine: tuple[str, str], seconds: float) -> str:
    kinds = ("stop", "start", "update", "delete", "deploy")
    whole = sum(1 for r in rounds if not r.failures)
    lines = [
        f"Measured {machine[0]}; after: load average {machine[1]}. The machine was shared with other people's",
        "work during the run, which widens the windows between a command's steps.",
        f"Command: `{command}` ({seconds / 60:.0f} min).",
        "",
        "Each round: `deploy stop`, `start`, two `update --model` at once (to two versions), `delete`, `deploy`, each",
        "a `python -m pipelines.deploy` process, while the workspace service runs and a second keeper calls",
        "`revive_all` every 50 ms. A command counts when the service ended in the state it reported (3 s later",
        "for stop and delete: Stopped or gone, no process left, port free; the last successful update's model",
        "is the one recorded and answering).",
        "",
        "| race | ended in the reported state |",
        "|---|---:|",
        *[f"| {k} | {sum(1 for r in rounds if r.passed.get(k, False))}/{len(rounds)} |" for k in kinds],
        f"| **whole rounds** | **{whole}/{len(rounds)}** |",
        "",
        *[f"- {f}" for r in rounds for f in r.failures],
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the five races (default 20)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    from benchmarks._model import using_home
    from pipelines.local.serving import deployments

    before = machine_line()
    began = time.monotonic()
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="amlops-faults-") as tmp, using_home(Path(tmp)) as home:
        versions, _ = prepare(home)
        service = start_workspace_service(home)
        stop = threading.Event()
        thread = threading.Thread(target=keeper, args=(stop,), daemon=True)
        thread.start()
        try:
            for number in range(1, args.rounds + 1):
                one = Round(home, versions, number)
                one.run()
                rounds.append(one)
                print(f"round {number}: {'ok' if not one.failures else '; '.join(one.failures)}", flush=True)
        finally:
            stop.set()
            thread.join(timeout=120)
            service.terminate()
            service.wait(timeout=60)
            for left in deployments.list_services():
                deployments.delete(left.name)
    after = " ".join(open("/proc/loadavg").read().split()[:3])
    command = "python -m benchmarks.faults" + (f" --rounds {args.rounds}" if args.rounds != 20 else "")
    text = section(rounds, command, (before, after), time.monotonic() - began)
    print(text)
    if not args.no_write:
        update_section(BENCHMARKS_MD, SECTION, text)
        print(f"wrote the {SECTION!r} section of {BENCHMARKS_MD}")
    return 0 if all(not r.failures for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
