"""clients/trigger_pipeline.py against the real local service, and against an Azure-shaped fake on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
import requests

from clients import trigger_pipeline
from tests.conftest import JsonHandler
from tests.local.workspace import test_service_e2e as e2e
from tests.local.workspace.test_service_e2e import PREFIX, Service

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")

running_service = e2e.running_service  # the same fixtures: a service of this module's own
in_service_home = e2e.in_service_home


def endpoint_url(svc: Service) -> str:
    return f"{svc.url}{PREFIX}/PipelineEndpointSubmit/Id/{svc.published['endpoint_id']}"


def test_starts_a_run_waits_and_exits_0_when_completed(running_service: Service, capsys) -> None:
    svc = running_service
    code = trigger_pipeline.main([
        endpoint_url(svc), "--key", svc.key(), "--experiment", "client", "--param", "seed=11",
        "--poll", "0.5", "--timeout", "180", "--json",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["status"] == "Completed"
    progress = [line.split("] ")[1] for line in captured.err.splitlines() if line.startswith("[")]
    assert progress[0] in ("Queued", "Running") and progress[-1] == "Completed"  # progress was shown
    assert svc.key() not in captured.out + captured.err
    record = svc.run(result["run_id"])
    assert record["parameters"]["seed"] == 11 and record["experiment"] == "client"


def test_a_failing_run_exits_1_with_the_reason(running_service: Service, capsys) -> None:
    code = trigger_pipeline.main([
        endpoint_url(running_service) + "/0", "--key", running_service.key(), "--param", "label=no_such_column",
        "--poll", "0.5", "--timeout", "180",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "Failed" in out and "no_such_column" in out


def test_refused_requests_exit_2_with_the_service_message(running_service: Service, capsys) -> None:
    url = endpoint_url(running_service)
    assert trigger_pipeline.main([url, "--key", "wrong", "--no-wait"]) == 2
    assert "refused the credentials (401)" in capsys.readouterr().err
    assert trigger_pipeline.main([url, "--key", running_service.key(), "--param", "nope=1", "--no-wait"]) == 2
    assert "unknown pipeline parameter 'nope'" in capsys.readouterr().err
    assert trigger_pipeline.main([url, "--no-wait"]) == 2  # no credentials at all
    assert (
        trigger_pipeline.main(
            ["http://127.0.0.1:9/pipelines/v1.0/PipelineRuns/PipelineSubmit/x", "--key", "k"]
        )
        == 2
    )
    assert "cannot reach" in capsys.readouterr().err


# ---- Azure's shapes ----------------------------------------------------------------------------------------
class FakeAzure(JsonHandler):
    """Answers like Azure ML's pipeline REST API: PipelineRunEntity with numeric and 'Finished' codes."""

    seen: list[tuple[str, str, dict, str]] = []
    statuses = ["0", "Running", "Finished"]

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("POST", self.path, body, self.headers.get("Authorization", "")))
        self._send({"Id": "azure-run-1", "Status": {"StatusCode": "0"}, "RunHistoryExperimentName": "x"})

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path, {}, self.headers.get("Authorization", "")))
        code = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        self._send({"Id": "azure-run-1", "Status": {"StatusCode": code}})


class FakeToken:
    """Stands in for ServicePrincipalAuthentication: a fresh header per call."""

    def __init__(self) -> None:
        self.calls = 0

    def get_authentication_header(self) -> dict[str, str]:
        self.calls += 1
        return {"Authorization": f"Bearer aad-token-{self.calls}"}


def test_azure_shapes_aad_header_and_status_polling(monkeypatch, capsys) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAzure)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = FakeToken()
    monkeypatch.setattr(trigger_pipeline, "aad_auth", lambda kind: token)
    workspace_path = (
        "/pipelines/v1.0/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices"
        "/workspaces/w/PipelineRuns"
    )
    url = f"http://127.0.0.1:{server.server_port}{workspace_path}/PipelineEndpointSubmit/Id/ep-1"
    try:
        code = trigger_pipeline.main([
            url, "--version", "2", "--auth", "sp", "--experiment", "nightly", "--param", "cutoff_date=2012-08-31",
            "--dataset", "training_dataset=bike-no", "--poll", "0.05", "--json",
        ])  # fmt: skip
    finally:
        server.shutdown()
    assert code == 0
    assert json.loads(capsys.readouterr().out)["status"] == "Completed"  # "Finished" is Completed
    method, path, body, auth = FakeAzure.seen[0]
    assert (method, path) == ("POST", f"{workspace_path}/PipelineEndpointSubmit/Id/ep-1/2")
    assert body == {
        "ExperimentName": "nightly",
        "ParameterAssignments": {"cutoff_date": "2012-08-31"},
        "DataSetDefinitionValueAssignments": {"training_dataset": {"DataSetReference": {"Name": "bike-no"}}},
    }
    assert auth == "Bearer aad-token-1"
    polls = [s for s in FakeAzure.seen if s[0] == "GET"]
    assert {p[1] for p in polls} == {f"{workspace_path}/azure-run-1"}
    assert token.calls == 1 + len(polls)  # the token is fetched again for every poll


class Flaky(JsonHandler):
    """POST answers after 1 s; each GET answers as the next item of ``script`` says."""

    script: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(1)  # the client has given up by then: nothing to answer

    def do_GET(self) -> None:  # noqa: N802
        step = self.script.pop(0) if self.script else "Finished"
        if step == "hang":
            time.sleep(1)
            return
        if step == "drop":  # close the connection without an answer
            self.close_connection = True
            return
        elif step == "html":
            data = b"<html>gateway</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        elif step == "503":
            self.send_error(503)
            return
        self._send({"Id": "late-run", "Status": {"StatusCode": step}})


@pytest.fixture
def flaky() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/pipelines/v1.0/PipelineRuns"
    finally:
        server.shutdown()
        server.server_close()


def test_a_submit_without_an_answer_says_the_run_may_be_queued(flaky: str) -> None:
    with pytest.raises(trigger_pipeline.UserError) as caught:
        trigger_pipeline.submit(
            f"{flaky}/PipelineSubmit/p-1", trigger_pipeline.KeyAuth("K"), "x", timeout=0.2
        )
    assert "did not answer within 0.2 s, so the run may or may not have been queued" in caught.value.message
    assert "pipelines.workspace runs" in caught.value.hint  # a traceback (ReadTimeout) before


def test_polling_rides_out_a_hang_a_dropped_connection_a_5xx_and_a_non_json_answer(flaky: str) -> None:
    Flaky.script = ["hang", "drop", "503", "html", "Running", "Finished"]
    status, entity = trigger_pipeline.wait(
        f"{flaky}/late-run", trigger_pipeline.KeyAuth("K"), timeout=60, poll=0.01, out=io.StringIO(),
        request_timeout=0.2,
    )  # fmt: skip
    assert (status, entity["Id"]) == ("Completed", "late-run")  # the drop used to end it: "cannot reach"
    assert Flaky.script == []


def test_polling_gives_up_after_repeated_failures(flaky: str) -> None:
    Flaky.script = ["drop"] * 6
    with pytest.raises(trigger_pipeline.UserError, match="lost contact with"):
        trigger_pipeline.wait(f"{flaky}/late-run", trigger_pipeline.KeyAuth("K"), 60, 0.01, io.StringIO())


def test_status_names_are_normalized() -> None:
    assert [trigger_pipeline.normalize_status(c) for c in ("0", "1", "2", "3", "4", "Finished", "Queued", None)] == [
        "NotStarted", "Running", "Failed", "Completed", "Canceled", "Completed", "Queued", "NotStarted",
    ]  # fmt: skip
    with pytest.raises(Exception, match="not a published pipeline URL"):
        trigger_pipeline.run_status_url("http://127.0.0.1/score", "x")


# ---- the training pipeline, end to end through the service -------------------------------------------------
def test_training_pipeline_published_and_triggered_over_http(in_service_home: Service, capsys) -> None:
    from pipelines import train
    from pipelines.local.workspace import publishing
    from pipelines.settings import Settings

    svc = in_service_home
    settings = Settings(
        dataset="tiny",
        iterations=2,
        n_cross_validations=2,
        cutoff_date="2011-06-01",
        model_name="tiny-demand",
    )
    published = publishing.publish(train.build(settings))
    url = published["endpoint_url"].replace(publishing.service_url(), svc.url)
    code = trigger_pipeline.main([
        url, "--key", svc.key(), "--experiment", "train-over-http", "--param", "model_name=tiny-demand-http",
        "--poll", "1", "--timeout", "240", "--json",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run_id = json.loads(captured.out)["run_id"]
    metrics = requests.get(f"{svc.url}/runs/{run_id}/metrics", headers=svc.headers(), timeout=10).json()[
        "metrics"
    ]
    assert "test_rmse" in metrics
    assert [s["status"] for s in svc.run(run_id)["steps"]] == ["Completed"] * 3
