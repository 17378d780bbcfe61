"""The local deployment end to end: deploy, key auth, bad input, limits, logs, keys, stop/start, supervision.

Two real services on 127.0.0.1 for the whole module: the project's score.py with a small registered model,
and a probe script that counts its run() calls and can fail on demand. Both are deleted at the end.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks._model import LEAKING_COLUMNS, raw_rows, shared_model_home, using_home
from pipelines.deploy import main as deploy_main
from pipelines.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")

SERVICE = "bike-test"
PROBE = "probe-test"
PROBE_TIMEOUT_MS = 1500
PROBE_ORIGIN = "http://app.example.com"  # the probe service lets browser pages from here call it
PROBE_SCRIPT = """
import json, os, time
from pathlib import Path

import flask
from azureml_inference_server_http.api.aml_response import AMLResponse

CALLS = Path(__file__).with_suffix(".calls")


def init():
    pass


def run(raw_data):
    with open(CALLS, "a") as fh:
        fh.write("call\\n")
    try:
        data = json.loads(raw_data)
    except ValueError:
        data = None
    if not isinstance(data, dict):  # an undecorated run() gets the body as text, whatever it is
        return {"chars": len(raw_data)}
    if data.get("overloaded"):  # run()'s own 5xx answer
        return AMLResponse({"error": "overloaded", "retry_after": 5}, 503, json_str=True)
    if data.get("stream"):  # a streamed answer: its second part waits until the client has the first
        def parts():
            yield "first;"
            go, deadline = Path(data["stream"]), time.monotonic() + 20
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            yield "released" if go.exists() else "held back"
        return flask.Response(parts(), mimetype="text/plain")
    if data.get("crash"):
        raise RuntimeError("crash requested")
    if data.get("die"):
        os._exit(1)
    if data.get("sleep"):
        time.sleep(data["sleep"])
    return {"result": [data.get("echo")]}
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = deploy_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A local workspace with a registered model and the two services running; the services deleted afterwards."""
    from pipelines.datasets import resolve
    from pipelines.local.serving import deployments

    shared = PROJECT_ROOT.parent / "shared" / "data"
    if not os.environ.get("AMLOPS_DATA_DIR") and (shared / "bike-no.csv").is_file():
        os.environ["AMLOPS_DATA_DIR"] = str(shared)
    csv = resolve("bike-no")
    home = shared_model_home(tmp_path_factory.getbasetemp(), csv)
    probe = tmp_path_factory.mktemp("probe") / "probe_score.py"
    probe.write_text(PROBE_SCRIPT)
    with using_home(home):
        try:
            with ThreadPoolExecutor(2) as pool:
                started = [
                    pool.submit(
                        deployments.deploy, "bike-demand", None, SERVICE, workers=2, max_body_bytes=64 * 1024
                    ),
                    pool.submit(
                        deployments.deploy,
                        "bike-demand",
                        None,
                        PROBE,
                        workers=1,
                        entry_script=probe,
                        scoring_timeout_ms=PROBE_TIMEOUT_MS,
                        cors_origins=PROBE_ORIGIN,
                    ),
                ]
                for future in started:
                    future.result()
            yield {"home": home, "csv": csv, "probe_calls": probe.with_suffix(".calls")}
        finally:
            for name in (SERVICE, PROBE):
                if (deployments.service_dir(name) / "service.json").is_file():
                    deployments.delete(name)


@pytest.fixture
def ws(workspace: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AMLOPS_HOME", str(workspace["home"]))
    return workspace


def service_info(name: str = SERVICE) -> dict[str, Any]:
    from pipelines.local.serving import deployments

    return deployments.load(name).describe()


def keys(name: str = SERVICE) -> dict[str, str]:
    from pipelines.local.serving import deployments

    return deployments.keys(name)


def payload(csv: Path, n: int = 2) -> dict[str, Any]:
    return {"data": json.loads(raw_rows(csv).tail(n).to_json(orient="records"))}


def post(uri: str, body: Any, key: str | None, raw: bytes | None = None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return requests.post(uri, data=raw if raw is not None else json.dumps(body), headers=headers, timeout=30)


def probe_calls(ws: dict[str, Any]) -> int:
    path = ws["probe_calls"]
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_deployed_service_scores_with_either_key(ws: dict[str, Any]) -> None:
    info = service_info()
    assert info["state"] == "Healthy" and info["scoring_uri"].startswith("http://127.0.0.1:")
    for key in keys().values():
        resp = post(info["scoring_uri"], payload(ws["csv"]), key)
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["result"]) == 2
        assert resp.headers["x-request-id"]


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic {primary}", "Bearer", "{primary}"])
def test_no_or_wrong_key_is_401_and_run_is_not_called(ws: dict[str, Any], header: str | None) -> None:
    info = service_info(PROBE)
    before = probe_calls(ws)
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header.format(primary=keys(PROBE)["primary"])
    resp = requests.post(info["scoring_uri"], data=json.dumps({"echo": 1}), headers=headers, timeout=30)
    assert resp.status_code == 401
    assert "Bearer" in resp.json()["message"] and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert probe_calls(ws) == before
    ok = post(info["scoring_uri"], {"echo": 1}, keys(PROBE)["secondary"])
    assert ok.status_code == 200 and ok.json() == {"result": [1]}
    assert probe_calls(ws) == before + 1


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"data": [', "could not be decoded as JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"{}", "'data'"),
        (b'{"data": []}', "data: expected at least one row"),
        (None, "unknown column(s) 'casual'"),
        (b'{"data": [{"instant": "x"}]}', "missing column(s)"),
        (b"[" * 50_000, "nests JSON too deeply"),
        (b'{"data": ' + b"[" * 500 + b"]" * 500 + b"}", "nests JSON too deeply"),
    ],
)
def test_bad_input_over_http_is_400_naming_the_field(
    ws: dict[str, Any], raw: bytes | None, field: str
) -> None:
    info = service_info()
    if raw is None:
        body = payload(ws["csv"])
        body["data"][0]["casual"] = 100
        raw = json.dumps(body).encode()
    resp = post(info["scoring_uri"], None, keys()["primary"], raw=raw)
    assert resp.status_code == 400, resp.text
    assert field in resp.json()["message"]


def test_wrong_type_names_the_row_and_column(ws: dict[str, Any]) -> None:
    body = payload(ws["csv"])
    body["data"][1]["temp"] = "warm"
    resp = post(service_info()["scoring_uri"], body, keys()["primary"])
    assert resp.status_code == 400
    assert resp.json()["message"].startswith("data[1].temp: expected a number")


def test_body_over_the_limit_is_413(ws: dict[str, Any]) -> None:
    info = service_info()
    assert info["max_body_bytes"] == 64 * 1024
    rows = payload(ws["csv"], 731)["data"] * 2
    resp = post(info["scoring_uri"], {"data": rows}, keys()["primary"])
    assert resp.status_code == 413
    small = post(info["scoring_uri"], {"data": rows[:100]}, keys()["primary"])
    assert small.status_code == 200 and len(small.json()["result"]) == 100


def test_chunked_body_over_the_limit_is_413(ws: dict[str, Any]) -> None:
    info = service_info()
    chunks = (b" " * 8192 for _ in range(10))
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {keys()['primary']}"}
    resp = requests.post(info["scoring_uri"], data=chunks, headers=headers, timeout=30)
    assert resp.status_code == 413


def test_swagger_and_health_need_no_key(ws: dict[str, Any]) -> None:
    info = service_info()
    spec = requests.get(info["swagger_uri"], timeout=10).json()
    assert spec["schemes"] == ["http"] and "Bearer" in spec["securityDefinitions"]
    post_op = spec["paths"]["/score"]["post"]
    assert post_op["operationId"] == "RunMLService" and post_op["parameters"][0]["required"] is True
    data = spec["definitions"]["ServiceInput"]["properties"]["data"]
    assert data["items"]["properties"]["temp"]["type"] == "number"
    assert not set(LEAKING_COLUMNS) & set(data["items"]["properties"])
    assert len(spec["definitions"]["ServiceInput"]["example"]["data"]) == 2
    assert requests.get(info["health_uri"], timeout=10).text == "Healthy"
    assert requests.get(info["scoring_uri"], timeout=10).status_code == 401


def test_swagger_json_in_every_version_and_for_head_is_the_local_document(ws: dict[str, Any]) -> None:
    uri = service_info()["swagger_uri"]
    head = requests.head(uri, timeout=10)  # as a worker's first swagger request, this was a 500
    assert head.status_code == 200 and head.content == b""
    plain = requests.get(uri, timeout=10)
    assert int(head.headers["Content-Length"]) == len(plain.content)
    v2 = requests.get(f"{uri}?version=2", timeout=10)
    assert v2.json() == plain.json() and v2.json()["schemes"] == ["http"]  # was the server's "https" one
    v3 = requests.get(f"{uri}?version=3", timeout=10).json()
    assert v3["paths"]["/score"]["post"]["requestBody"]["required"] is True
    assert requests.get(f"{uri}?version=4", timeout=10).status_code == 404  # the server's answer
    assert requests.post(uri, timeout=10).status_code == 405  # was the document


def test_crash_in_run_is_500_with_request_id_and_the_service_stays_up(ws: dict[str, Any]) -> None:
    info = service_info(PROBE)
    resp = post(info["scoring_uri"], {"crash": True}, keys(PROBE)["primary"])
    assert resp.status_code == 500
    assert resp.json()["request_id"] == resp.headers["x-request-id"]
    assert resp.headers["x-ms-run-function-failed"] == "True"
    assert post(info["scoring_uri"], {"echo": 2}, keys(PROBE)["primary"]).json() == {"result": [2]}
    log = Path(info["server_log"]).read_text()
    assert "crash requested" in log


def post_path(uri: str, path: str, body: bytes, key: str | None) -> tuple[int, bytes]:
    """POST to ``path`` on the service of ``uri`` exactly as written (no client tidies the slashes)."""
    port = int(uri.split(":")[2].split("/")[0])
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["//score", "///score", "//score?x=1"])
def test_extra_leading_slashes_still_need_the_key_and_keep_the_limit(ws: dict[str, Any], path: str) -> None:
    probe, before = service_info(PROBE)["scoring_uri"], probe_calls(ws)
    assert post_path(probe, path, b'{"echo": 1}', None)[0] == 401  # was 200: the server routes it to /score
    assert probe_calls(ws) == before
    assert post_path(probe, path, b'{"echo": 1}', keys(PROBE)["primary"]) == (200, b'{"result": [1]}')
    big = json.dumps({"data": [{"x": "y" * 100}] * 1000}).encode()  # over bike-test's 64 KiB
    assert post_path(service_info()["scoring_uri"], path, big, keys()["primary"])[0] == 413


def test_an_undecorated_run_gets_any_text_body_as_the_server_gives_it(ws: dict[str, Any]) -> None:
    info, key = service_info(PROBE), keys(PROBE)["primary"]
    deep = b"[" * 150 + b"]" * 150  # JSON checks are for scripts the server parses JSON for
    resp = post(info["scoring_uri"], None, key, raw=deep)
    assert resp.status_code == 200 and resp.json() == {"chars": 300}, resp.text
    resp = requests.post(info["scoring_uri"], data="caf\xe9".encode("latin-1"), timeout=30,
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"})  # fmt: skip
    assert resp.status_code == 400 and "cannot be decoded as UTF-8" in resp.json()["message"]  # the server's


def test_runs_own_5xx_answer_and_a_stream_pass_unchanged(ws: dict[str, Any], tmp_path: Path) -> None:
    info, key = service_info(PROBE), keys(PROBE)["primary"]
    resp = post(info["scoring_uri"], {"overloaded": True}, key)
    assert resp.status_code == 503 and resp.json() == {"error": "overloaded", "retry_after": 5}
    assert resp.headers["x-ms-run-function-failed"] == "True"
    go = tmp_path / "go"
    with requests.post(info["scoring_uri"], data=json.dumps({"stream": str(go)}), stream=True, timeout=30,
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as resp:  # fmt: skip
        parts = resp.iter_content(chunk_size=None)
        assert next(parts) == b"first;"  # before the script has written the rest
        go.touch()
        assert b"".join(parts) == b"released"  # buffered, the first part came only after "held back"


def test_the_fronts_own_answers_carry_the_servers_tracing_headers(ws: dict[str, Any]) -> None:
    info = service_info(PROBE)
    resp = requests.post(info["scoring_uri"], data="{}", timeout=30,
                         headers={"x-ms-client-request-id": "client-7", "Content-Type": "application/json"})  # fmt: skip
    assert resp.status_code == 401
    assert resp.headers["x-ms-client-request-id"] == "client-7" == resp.headers["x-ms-request-id"]
    assert resp.headers["x-ms-server-version"].startswith("azmlinfsrv/")
    assert resp.json()["request_id"] == resp.headers["x-request-id"]
    got = requests.get(
        info["scoring_uri"], headers={"Authorization": f"Bearer {keys(PROBE)['primary']}"}, timeout=30
    )
    assert got.status_code == 405 and got.raw.headers.getlist("Allow") == ["POST, OPTIONS"]  # once, not twice


def test_browser_pages_from_an_allowed_origin_can_call_with_a_key(ws: dict[str, Any], monkeypatch) -> None:
    uri, key, before = service_info(PROBE)["scoring_uri"], keys(PROBE)["primary"], probe_calls(ws)
    assert service_info(PROBE)["cors_origins"] == PROBE_ORIGIN

    def preflight(origin: str) -> requests.Response:  # what a browser sends first: never a key
        return requests.options(uri, timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})  # fmt: skip

    allowed = preflight(PROBE_ORIGIN)
    assert allowed.status_code == 200, allowed.text  # was 401: no browser could call the service
    assert allowed.headers["Access-Control-Allow-Origin"] == PROBE_ORIGIN
    assert "authorization" in allowed.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Origin" not in preflight("http://other.example.com").headers
    assert probe_calls(ws) == before  # run() is not called for a preflight
    call = {"Origin": PROBE_ORIGIN, "Content-Type": "application/json"}
    ok = requests.post(
        uri, data='{"echo": 3}', headers={**call, "Authorization": f"Bearer {key}"}, timeout=30
    )
    assert ok.json() == {"result": [3]} and ok.headers["Access-Control-Allow-Origin"] == PROBE_ORIGIN
    refused = requests.post(uri, data='{"echo": 3}', headers=call, timeout=30)  # the page can read why
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == PROBE_ORIGIN
    assert requests.options(uri, timeout=30).status_code == 401  # not a preflight: the key is needed
    other = service_info()["scoring_uri"]  # a service deployed without origins
    assert (
        "Access-Control-Allow-Origin" not in requests.post(other, data="{}", headers=call, timeout=30).headers
    )
    from pipelines.local.serving import deployments

    monkeypatch.setenv("AML_CORS_ORIGINS", "http://leaked.example.com")  # not the service's setting
    assert deployments.server_env(deployments.load(PROBE))["AML_CORS_ORIGINS"] == PROBE_ORIGIN
    assert "AML_CORS_ORIGINS" not in deployments.server_env(deployments.load(SERVICE))


def test_a_run_over_the_scoring_timeout_is_answered_500_and_the_worker_serves_on(ws: dict[str, Any]) -> None:
    info = service_info(PROBE)
    assert info["scoring_timeout_ms"] == PROBE_TIMEOUT_MS
    started = time.monotonic()
    resp = post(info["scoring_uri"], {"sleep": 30}, keys(PROBE)["primary"])
    assert time.monotonic() - started < 20  # cut at the timeout, not after the 30 s run()
    assert resp.status_code == 500
    assert f"Scoring timeout after {PROBE_TIMEOUT_MS} ms" in resp.text and resp.headers["x-request-id"]
    ok = post(info["scoring_uri"], {"echo": 2}, keys(PROBE)["primary"])
    assert ok.status_code == 200 and ok.json() == {"result": [2]}


def _load_while_calling(uri: str, body: dict[str, Any], key: str, stop: Any) -> list[int]:
    """POST ``body`` again and again until ``stop`` is set; the status of every answer (0: no answer)."""
    statuses = []
    while not stop.is_set():
        try:
            statuses.append(post(uri, body, key).status_code)
        except requests.RequestException:
            statuses.append(0)
    return statuses


def test_update_to_another_model_replaces_the_workers_without_refusing_a_request(
    ws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    from benchmarks._model import register_demo_model

    version = register_demo_model(ws["csv"], name="bike-update", n_trees=40)
    info, key, body = service_info(), keys()["primary"], payload(ws["csv"])
    before = post(info["scoring_uri"], body, key).json()["result"]
    stop = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        callers = [pool.submit(_load_while_calling, info["scoring_uri"], body, key, stop) for _ in range(2)]
        try:
            code, out, err = cli(capsys, "update", "--name", SERVICE, "--model", f"bike-update:{version}")
        finally:
            stop.set()
        statuses = [status for caller in callers for status in caller.result()]
    assert code == 0, err
    assert f"now serves bike-update:{version}" in out
    assert len(statuses) > 20 and set(statuses) == {200}  # answered throughout the switch
    assert service_info()["model"] == f"bike-update:{version}"
    after = post(info["scoring_uri"], body, key).json()["result"]
    assert after != before  # the 40-tree model answers now, from every worker
    assert all(post(info["scoring_uri"], body, key).json()["result"] == after for _ in range(6))
    code, _, err = cli(capsys, "update", "--name", SERVICE, "--model", "bike-demand")  # back, for other tests
    assert code == 0, err
    assert post(info["scoring_uri"], body, key).json()["result"] == before


def test_update_to_a_model_that_does_not_load_changes_nothing(
    ws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks._model import register_demo_model
    from pipelines.local.workspace import registry

    version = register_demo_model(ws["csv"], name="bike-broken", n_trees=5)
    _, model_dir = registry.materialize_model("bike-broken", version)
    (model_dir / "bike-broken" / "artifacts" / "model.pkl").write_bytes(b"not a pickle")
    record = (Path(service_info()["folder"]) / "service.json").read_text()
    info = service_info()
    capsys.readouterr()  # registering logged MLflow's warnings
    code, _, err = cli(capsys, "update", "--name", SERVICE, "--model", f"bike-broken:{version}")
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "does not load" in line and "init() failed" in line and "the service is unchanged" in line
    assert (Path(info["folder"]) / "service.json").read_text() == record
    resp = post(info["scoring_uri"], payload(ws["csv"]), keys()["primary"])
    assert resp.status_code == 200 and service_info()["model"] == info["model"]


def test_a_dead_worker_is_replaced_and_its_ready_marker_dropped(ws: dict[str, Any]) -> None:
    import psutil

    from pipelines.local.serving import deployments

    info = service_info(PROBE)
    master = psutil.Process(deployments.read_runtime(PROBE)["server_pid"])
    markers = Path(info["folder"]) / "workers"
    before = {p.pid for p in master.children()}
    with pytest.raises(requests.ConnectionError):
        post(info["scoring_uri"], {"die": True}, keys(PROBE)["primary"])
    assert wait_for(lambda: _echo_ok(info["scoring_uri"], keys(PROBE)["primary"]), 60)

    def workers() -> set[int]:
        return {p.pid for p in master.children() if p.status() != psutil.STATUS_ZOMBIE}

    assert wait_for(lambda: len(workers() - before) == 1 and len(before - workers()) == 1, 30)
    assert wait_for(lambda: {int(m.name) for m in markers.iterdir()} == workers(), 30)


def test_a_killed_server_is_restarted_by_the_supervisor(ws: dict[str, Any]) -> None:
    from pipelines.local.serving import deployments

    info = service_info(PROBE)
    server_pid = deployments.read_runtime(PROBE)["server_pid"]
    os.kill(server_pid, signal.SIGKILL)
    assert wait_for(lambda: deployments.read_runtime(PROBE).get("server_pid") not in (None, server_pid), 30)
    assert wait_for(lambda: deployments.state(PROBE) == "Healthy", 60)
    assert _echo_ok(info["scoring_uri"], keys(PROBE)["primary"])
    assert deployments.read_runtime(PROBE)["restarts"] >= 1


def test_a_damaged_key_file_is_503_with_the_fix_and_regen_repairs_it(
    ws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    info, old = service_info(PROBE), keys(PROBE)
    before = probe_calls(ws)
    Path(info["keys_file"]).write_text('{"primary": "' + old["primary"][:5])
    resp = post(info["scoring_uri"], {"echo": 1}, old["primary"])
    assert resp.status_code == 503 and probe_calls(ws) == before
    assert f"keys --name {PROBE} --regen primary" in resp.json()["message"] and resp.json()["request_id"]
    code, _, err = cli(capsys, "keys", "--name", PROBE)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "damaged" in err
    code, _, err = cli(capsys, "keys", "--name", PROBE, "--regen", "primary")
    assert code == 0, err
    new = keys(PROBE)
    assert set(new.values()).isdisjoint(old.values())
    assert _echo_ok(info["scoring_uri"], new["secondary"])


def test_regenerated_key_works_at_once_and_the_old_one_does_not(
    ws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    old = keys()
    new = cli_json(capsys, "keys", "--name", SERVICE, "--regen", "primary")
    assert new["primary"] != old["primary"] and new["secondary"] == old["secondary"]
    uri = service_info()["scoring_uri"]
    assert post(uri, payload(ws["csv"]), old["primary"]).status_code == 401
    assert post(uri, payload(ws["csv"]), new["primary"]).status_code == 200
    assert post(uri, payload(ws["csv"]), old["secondary"]).status_code == 200
    mode = stat.S_IMODE(os.stat(Path(service_info()["keys_file"])).st_mode)
    assert mode == 0o600


def test_update_enables_the_request_log_with_status_and_latency(
    ws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "update", "--name", SERVICE, "--enable-app-insights")
    assert code == 0 and "enabled" in out
    info = service_info()
    log = Path(info["request_log"])
    # the workers reload (SIGHUP); keep calling until a request is logged
    assert wait_for(
        lambda: post(info["scoring_uri"], payload(ws["csv"]), keys()["primary"]).ok and log.exists(), 60
    )
    post(info["scoring_uri"], payload(ws["csv"]), "bad-key")
    assert wait_for(lambda: any(json.loads(x)["status"] == 401 for x in log.read_text().splitlines()), 10)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    ok = next(x for x in lines if x["status"] == 200)
    assert ok["path"] == "/score" and ok["latency_ms"] > 0 and ok["key"] == "primary" and ok["request_id"]
    assert all(keys()["primary"] not in x for x in log.read_text().splitlines())
    code, out, _ = cli(capsys, "logs", "--name", SERVICE, "--requests", "--tail", "3")
    assert code == 0 and '"status"' in out


def test_list_and_show(ws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    rows = cli_json(capsys, "list")
    assert {SERVICE, PROBE} <= {r["name"] for r in rows}
    shown = cli_json(capsys, "show", "--name", SERVICE)
    assert shown["model"] == "bike-demand:1" and shown["workers"] == 2 and shown["state"] == "Healthy"
    code, out, _ = cli(capsys, "logs", "--name", SERVICE, "--tail", "200")
    assert code == 0 and "Booting worker" in out


def test_stop_then_start_serves_again_on_the_same_port(
    ws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    uri = service_info(PROBE)["scoring_uri"]
    code, out, _ = cli(capsys, "stop", "--name", PROBE)
    assert code == 0 and "stopped" in out
    assert service_info(PROBE)["state"] == "Stopped"
    with pytest.raises(requests.ConnectionError):
        post(uri, {"echo": 3}, keys(PROBE)["primary"])
    started = cli_json(capsys, "start", "--name", PROBE)
    assert started["state"] == "Healthy" and started["scoring_uri"] == uri
    assert _echo_ok(uri, keys(PROBE)["primary"])


def test_a_service_that_died_with_its_supervisor_is_started_again_but_a_stopped_one_is_not(
    ws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.local.serving import deployments

    uri, key = service_info(PROBE)["scoring_uri"], keys(PROBE)["primary"]
    runtime = deployments.read_runtime(PROBE)
    os.kill(runtime["supervisor_pid"], signal.SIGKILL)  # as if the machine had gone down
    os.killpg(runtime["server_pid"], signal.SIGKILL)  # gunicorn and its workers (their own process group)
    assert wait_for(lambda: deployments.state(PROBE) == "Unhealthy", 30)  # not stopped by its user
    assert "starts it again" in service_info(PROBE)["message"]
    # the other service is running: left alone; this one once its dying processes have let go of the port
    assert wait_for(lambda: deployments.revive_all() == [PROBE], 30)
    deployments.wait_until_healthy(PROBE, timeout=120)
    assert _echo_ok(uri, key)  # same port, same keys
    assert deployments.revive_all() == []  # running again: nothing to do
    code, _, _ = cli(capsys, "stop", "--name", PROBE)
    assert code == 0 and deployments.revive_all() == [] and service_info(PROBE)["state"] == "Stopped"
    assert cli_json(capsys, "start", "--name", PROBE)["state"] == "Healthy"  # for the tests after this one


def test_cli_errors_are_one_line_exit_2(ws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "--model", "no-such-model", "--name", "other-svc")
    assert code == 2 and "no model named 'no-such-model'" in err and "Traceback" not in err
    code, _, err = cli(capsys, "--name", SERVICE)
    assert code == 2 and "already exists" in err and "deploying" not in err  # refused before starting
    for bad in (["--model", "no-such-model"], ["--workers", "0"], ["--scoring-timeout-ms", "0"]):
        code, _, err = cli(capsys, "--name", SERVICE, "--overwrite", *bad)
        assert code == 2 and "error:" in err
        assert service_info()["state"] == "Healthy"  # the existing service was not stopped
    code, _, err = cli(capsys, "show", "--name", "nope-svc")
    assert code == 2 and "no local service named 'nope-svc'" in err


def test_overwrite_keeps_the_port_and_the_keys(
    ws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before, key = service_info(PROBE), keys(PROBE)["primary"]
    code, out, err = cli(capsys, "--name", PROBE, "--overwrite", "--workers", "1",
                         "--entry-script", before["entry_script"], "--scoring-timeout-ms", str(PROBE_TIMEOUT_MS))  # fmt: skip
    assert code == 0, err
    assert f"on 127.0.0.1:{before['port']}" in err and "[Healthy]" in out
    after = service_info(PROBE)
    assert after["scoring_uri"] == before["scoring_uri"] and after["created"] != before["created"]
    assert _echo_ok(after["scoring_uri"], key)


def test_every_verb_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.deploy import VERBS

    for verb in VERBS:
        with pytest.raises(SystemExit) as exc:
            deploy_main([verb, "--help"])
        assert exc.value.code == 0
        assert "usage: python -m pipelines.deploy " + verb in capsys.readouterr().out


def test_endpoint_client_posts_real_rows_and_writes_data_json(ws: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    env = {**os.environ, "AMLOPS_HOME": str(ws["home"])}
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "clients" / "endpoint.py"), "--service", SERVICE, "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    sent = json.loads(out.read_text())["data"]
    assert len(answer["result"]) == len(sent) == 2
    assert set(sent[0]) == set(raw_rows(ws["csv"]).columns)
    assert not {"cnt", *LEAKING_COLUMNS} & set(sent[0])


@pytest.mark.skipif(shutil.which("ab") is None, reason="needs Apache Bench (apt-get install apache2-utils)")
def test_benchmark_script_runs_ab_with_the_key(ws: dict[str, Any], tmp_path: Path) -> None:
    env = {**os.environ, "AMLOPS_HOME": str(ws["home"])}
    proc = subprocess.run(
        ["bash", str(PROJECT_ROOT / "clients" / "benchmark.sh"), "--service", SERVICE, "-n", "40", "-c", "4"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Complete requests:      40" in proc.stdout and "Failed requests:        0" in proc.stdout
    assert "Non-2xx" not in proc.stdout
    assert (tmp_path / "data.json").is_file()


def test_python_benchmark_reports_each_level_and_writes_the_plot(ws: dict[str, Any], tmp_path: Path) -> None:
    env = {**os.environ, "AMLOPS_HOME": str(ws["home"])}
    proc = subprocess.run(
        [sys.executable, "-m", "clients.benchmark", "--service", SERVICE, "--concurrency", "3,1", "-n", "30",
         "--plot", str(tmp_path / "lat.png"), "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [level["concurrency"] for level in report["levels"]] == [1, 3]
    for level in report["levels"]:
        assert level["requests"] == 30 and level["non_2xx"] == 0 and level["failed"] == 0
        assert 0 < level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"] and level["rps"] > 0
    assert (tmp_path / "lat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((tmp_path / "data.json").read_text())["data"]) == 2  # written for it, real rows
    assert all(key not in proc.stdout + proc.stderr for key in keys().values())


def test_python_benchmark_counts_error_answers_and_refuses_a_wrong_key(ws: dict[str, Any]) -> None:
    from clients.benchmark import Target, probe, run_level
    from pipelines.errors import UserError

    uri = service_info(PROBE)["scoring_uri"]
    before = probe_calls(ws)
    crashing = Target(uri, keys(PROBE)["primary"], b'{"crash": true}', timeout=30)
    level = run_level(crashing, requests=12, concurrency=3)
    assert (level.requests, level.non_2xx, level.failed) == (12, 12, 0)  # every 500 counted, none lost
    assert probe_calls(ws) == before + 12
    with pytest.raises(UserError, match="answered 500"):
        probe(crashing, uri)
    with pytest.raises(UserError, match="answered 401"):
        probe(Target(uri, "wrong-key", b'{"echo": 1}', timeout=30), uri)
    assert probe_calls(ws) == before + 13  # the wrong key never reached run()


def test_schemathesis_fuzz_of_score_finds_no_server_error_or_schema_violation(
    ws: dict[str, Any], tmp_path: Path
) -> None:
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.skip("schemathesis is not installed")
    info = service_info()
    proc = subprocess.run(
        [
            str(st), "run", info["swagger_uri"],
            "-H", f"Authorization: Bearer {keys()['primary']}",
            "--checks", "all", "--max-examples", "25", "--max-time", "20", "--seed", "7",
            "--workers", "2", "--request-timeout", "10", "--generation-database", "none", "--no-color",
        ],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "No issues found" in proc.stdout


def _echo_ok(uri: str, key: str) -> bool:
    try:
        return post(uri, {"echo": "ok"}, key).json() == {"result": ["ok"]}
    except (requests.RequestException, ValueError):
        return False


def wait_for(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except (requests.RequestException, OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    return False


def test_invoke_sends_the_request_file_and_the_request_log_is_summarized(
    ws: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = tmp_path / "data.json"
    body.write_text(json.dumps(payload(ws["csv"])))
    answer = cli_json(capsys, "invoke", "--name", SERVICE, "--request-file", str(body))
    assert answer["status"] == 200 and len(answer["answer"]["result"]) == 2
    code, _, err = cli(capsys, "invoke", "--name", SERVICE, "--request-file", str(tmp_path / "none.json"))
    assert code == 2 and "cannot read --request-file" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = cli(capsys, "invoke", "--name", SERVICE, "--request-file", str(tmp_path / "bad.json"))
    assert code == 2 and "is not JSON" in err

    code, out, _ = cli(capsys, "update", "--name", SERVICE, "--enable-app-insights")
    assert code == 0
    log = Path(service_info()["request_log"])
    assert wait_for(lambda: post(service_info()["scoring_uri"], payload(ws["csv"]), keys()["primary"]).ok
                    and log.exists(), 60)  # fmt: skip
    assert cli_json(capsys, "invoke", "--name", SERVICE, "--request-file", str(body))["status"] == 200
    plot = tmp_path / "latency.png"
    shown = cli_json(capsys, "logs", "--name", SERVICE, "--requests", "--plot", str(plot))
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert shown["summary"]["count"] == len(logged) >= 2
    assert shown["summary"]["status_codes"].get("200", 0) >= 2
    assert 0 < shown["summary"]["latency_ms"]["p50"] <= shown["summary"]["latency_ms"]["p99"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shown["plot"] == str(plot.resolve())
    code, out, _ = cli(capsys, "logs", "--name", SERVICE, "--requests")
    assert code == 0 and "latency ms: p50" in out and "status codes: 200:" in out
