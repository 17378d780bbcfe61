"""Bad input to the clients: one ``error:`` line, exit status 2, no traceback, and nothing sent or written.

The endpoint is a fake on 127.0.0.1 that serves a swagger.json and records every request, so a test can show
that a check came before anything was sent; no live service is needed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from clients import benchmark, endpoint, trigger_pipeline
from pipelines.settings import PROJECT_ROOT
from tests.conftest import JsonHandler

SWAGGER = {
    "definitions": {
        "ServiceInput": {
            "properties": {
                "data": {"items": {"properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}
            }
        }
    }
}


class Recorder(JsonHandler):
    """A scoring service and a pipeline endpoint in one: swagger.json for GET, a run Id for POST."""

    seen: list[tuple[str, str]]

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path))
        self._send(SWAGGER if self.path.endswith("/swagger.json") else {"Status": {"StatusCode": "Running"}})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(("POST", self.path))
        self._send({"Id": "run-1", "Status": {"StatusCode": "Running"}, "result": [1.0]})


@pytest.fixture
def fake() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(base URL, requests seen) of a fresh recorder on 127.0.0.1."""
    seen: list[tuple[str, str]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (Recorder,), {"seen": seen}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each client from an empty folder, so default outputs (data.json, latency.png) would land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_error_line(code: int, err: str, *expected: str) -> str:
    """The single ``error:`` line, after checking the exit status and that there is no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# ---- clients.trigger_pipeline ------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["not-a-url", "ftp://127.0.0.1/PipelineRuns/x", "http:///PipelineRuns/x",
                                 "http://127.0.0.1:port/PipelineRuns/x"])  # fmt: skip
def test_trigger_refuses_a_url_that_is_not_http(url: str, capsys) -> None:
    code = trigger_pipeline.main([url, "--key", "K"])
    one_error_line(code, capsys.readouterr().err, "not an http(s) URL", "PipelineRuns")


def test_trigger_refuses_a_url_without_pipeline_runs_before_submitting(fake, capsys) -> None:
    base, seen = fake
    code = trigger_pipeline.main([f"{base}/score", "--key", "K", "--no-wait"])
    one_error_line(code, capsys.readouterr().err, "not a published pipeline URL")
    assert seen == []  # before the fix the run was submitted, then the status URL was refused


@pytest.mark.parametrize(
    ("option", "value"),
    [("--poll", "-1"), ("--poll", "0"), ("--poll", "nan"), ("--timeout", "-5"), ("--timeout", "nan")],
)
def test_trigger_checks_wait_options_before_submitting(
    fake, monkeypatch, capsys, option: str, value: str
) -> None:
    base, seen = fake

    def no_wait(*args: object, **kwargs: object) -> None:  # with --poll 0 or --timeout nan it never ended
        raise AssertionError("submitted a run and started waiting")

    monkeypatch.setattr(trigger_pipeline, "wait", no_wait)
    url = f"{base}/pipelines/v1.0/PipelineRuns/PipelineSubmit/p-1"
    code = trigger_pipeline.main([url, "--key", "K", option, value])
    one_error_line(code, capsys.readouterr().err, option)
    assert seen == []  # nothing submitted


# ---- clients/endpoint.py -----------------------------------------------------------------------------------
BAD_CSVS = {
    "empty.csv": (b"", "is empty"),
    "binary.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not a UTF-8 text CSV file"),
    "quote.csv": (b'a,b\n1,"unclosed\n', "is not a valid CSV file"),
    "header-only.csv": (b"a,b\n", "has no rows"),
}


@pytest.mark.parametrize("name", sorted(BAD_CSVS))
def test_endpoint_names_a_bad_csv_and_sends_nothing(fake, in_tmp: Path, capsys, name: str) -> None:
    base, seen = fake
    content, message = BAD_CSVS[name]
    (in_tmp / name).write_bytes(content)
    code = endpoint.main(["--uri", f"{base}/score", "--key", "k", "--data", name])
    one_error_line(code, capsys.readouterr().err, name, message, "--data")
    assert ("POST", "/score") not in seen
    assert not (in_tmp / "data.json").exists()


def test_endpoint_refuses_a_folder_of_csvs_as_data(fake, in_tmp: Path, capsys) -> None:
    (in_tmp / "rows").mkdir()
    (in_tmp / "rows" / "part.csv").write_text("a,b\n1,2\n")
    code = endpoint.main(["--uri", f"{fake[0]}/score", "--key", "k", "--data", "rows"])
    one_error_line(code, capsys.readouterr().err, "is a folder, not a CSV file")
    assert fake[1] == []


@pytest.mark.parametrize(("out", "message"), [("nodir/x.json", "nodir does not exist"),
                                              ("afolder", "is a folder"), ("good.csv/x.json", "is not a folder")])  # fmt: skip
def test_endpoint_checks_out_before_any_request(fake, in_tmp: Path, capsys, out: str, message: str) -> None:
    base, seen = fake
    (in_tmp / "afolder").mkdir()
    (in_tmp / "good.csv").write_text("a,b\n1,2\n3,4\n")
    code = endpoint.main(["--uri", f"{base}/score", "--key", "k", "--data", "good.csv", "--out", out])
    one_error_line(code, capsys.readouterr().err, "--out", message)
    assert seen == []  # not even the swagger.json
    assert not (in_tmp / "nodir").exists() and list((in_tmp / "afolder").iterdir()) == []


def test_endpoint_with_good_input_still_writes_and_sends(fake, in_tmp: Path, capsys) -> None:
    base, seen = fake
    (in_tmp / "good.csv").write_text("a,b,label\n1,2,9\n3,4,9\n5,6,9\n")
    assert endpoint.main(["--uri", f"{base}/score", "--key", "k", "--data", "good.csv"]) == 0
    assert json.loads((in_tmp / "data.json").read_text()) == {"data": [{"a": 3, "b": 4}, {"a": 5, "b": 6}]}
    assert seen == [("GET", "/swagger.json"), ("POST", "/score")]
    capsys.readouterr()


# ---- clients.benchmark -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "afolder"], "--data afolder is a folder"),
        (["--data", "nodir/data.json"], "--data nodir/data.json: nodir does not exist"),
        (["--plot", "afolder"], "--plot afolder is a folder"),
        (["--plot", "payload.json/latency.png"], "payload.json is not a folder"),
        (["--timeout", "nan"], "--timeout must be positive"),
        (["--uri", "not-a-url"], "not an http(s) URL"),
    ],
)
def test_benchmark_checks_files_before_any_request(
    fake, in_tmp: Path, capsys, args: list[str], message: str
) -> None:
    base, seen = fake
    (in_tmp / "afolder").mkdir()
    (in_tmp / "payload.json").write_text('{"data": [{"a": 1, "b": 2}]}')
    argv = ["--uri", f"{base}/score", "--key", "k", "--data", "payload.json", "-n", "2", "--concurrency", "1"]
    code = benchmark.main([*argv, *args])
    one_error_line(code, capsys.readouterr().err, message)
    assert seen == []  # no probe, no load, no swagger.json
    assert list((in_tmp / "afolder").iterdir()) == [] and not (in_tmp / "nodir").exists()


# ---- clients/benchmark.sh ----------------------------------------------------------------------------------
def run_benchmark_sh(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """The script with a stand-in ``ab`` first on PATH that only records that it was called."""
    bin_dir, called = tmp_path / "bin", tmp_path / "ab-was-called"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ab").write_text(f"#!/bin/sh\ntouch {called}\n")
    (bin_dir / "ab").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}
    env.pop("SCORING_URI", None)
    env.pop("KEY", None)
    proc = subprocess.run(["bash", str(PROJECT_ROOT / "clients" / "benchmark.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return proc, called


def test_benchmark_sh_unknown_service_is_one_error_line(in_tmp: Path) -> None:
    proc, called = run_benchmark_sh(in_tmp, "--service", "nosuch")
    one_error_line(proc.returncode, proc.stderr, "no local service named 'nosuch'")
    assert not called.exists() and not (in_tmp / "data.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "afolder"], "--data afolder is not a file"),
        (["--data"], "--data needs a value"),
        (["-n", "abc"], "-n must be a whole number of 1 or more, got 'abc'"),
        (["-c", "0"], "-c must be a whole number of 1 or more, got '0'"),
        (["-n", "5", "-c", "8"], "-c 8 is more than -n 5"),
    ],
)
def test_benchmark_sh_bad_options_are_one_error_line(in_tmp: Path, args: list[str], message: str) -> None:
    (in_tmp / "afolder").mkdir()
    proc, called = run_benchmark_sh(
        in_tmp, "--uri", f"http://127.0.0.1:{closed_port()}/score", "--key", "k", *args
    )
    one_error_line(proc.returncode, proc.stderr, message)
    assert not called.exists() and list((in_tmp / "afolder").iterdir()) == []
