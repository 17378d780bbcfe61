"""azure-v2 deploy verbs, offline: ``deploy``, ``logs``, ``invoke`` and Kubernetes endpoints run from the CLI against
azure-ai-ml with only its HTTP transport faked (tests/backends/azure_v2_transport.py); the tests assert the
requests a workspace, and the endpoint's scoring URI, would receive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.deploy import main as deploy
from tests.backends.azure_v2_transport import (
    ARM,
    FakeTransport,
    FakeWorkspace,
    configure,
    online_endpoint,
    sent,
)

pytestmark = pytest.mark.slow  # azure-ai-ml's loaders and validation

SCORING = "https://bike-svc.westeurope.inference.ml.azure.com/score"


class Workspace(FakeWorkspace):
    """The fake workspace, plus a deployment's getLogs and the endpoints' scoring URIs."""

    def __init__(self) -> None:
        super().__init__()
        self.log: str | None = "starting\nready\nscored 1 row\n"
        self.scores: list[tuple[int, Any]] = []  # answers of the scoring URI, in order

    def __call__(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        path = url.split("?")[0]
        if path.endswith("/deployments/blue/getLogs"):
            return 200, {"content": self.log}
        if ".inference.ml.azure.com/" in path:
            return self.scores.pop(0)
        return super().__call__(method, url, body)


@pytest.fixture
def ws(monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, FakeTransport]:
    fake = Workspace()
    return fake, configure(monkeypatch, fake)


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: "), err
    return err.splitlines()[-1]


def test_logs_posts_get_logs_with_the_tail_and_prints_the_lines(ws, capsys) -> None:
    fake, transport = ws
    assert deploy(["logs", "--target", "azure-v2", "--name", "bike-svc", "--tail", "2"]) == 0
    assert sent(transport, "POST", "/onlineEndpoints/bike-svc/deployments/blue/getLogs") == [{"tail": 2}]
    assert capsys.readouterr().out.splitlines() == ["ready", "scored 1 row"]
    fake.log = None  # nothing logged yet: the service answers {"content": null}
    assert deploy(["logs", "--target", "azure-v2", "--name", "bike-svc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lines"] == []  # azure-ai-ml's own get_logs gives "None"
    assert deploy(["logs", "--target", "azure-v2", "--name", "bike-svc", "--requests"]) == 2
    assert "--requests reads a local service's request log" in _error(capsys)


def test_invoke_posts_the_file_to_the_scoring_uri_with_the_primary_key(ws, capsys, tmp_path: Path) -> None:
    fake, transport = ws
    fake.resources[ARM + "/onlineEndpoints/bike-svc"] = online_endpoint("bike-svc")
    request = tmp_path / "data.json"
    request.write_text('{"data": [{"instant": 730, "temp": 0.25}]}')
    fake.scores = [(200, {"result": [2553.1]}), (500, {"message": "run() failed"}), (400, {"message": "bad"})]
    argv = ["invoke", "--target", "azure-v2", "--name", "bike-svc", "--request-file", str(request)]
    assert deploy([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["status"], out["answer"]) == (200, {"result": [2553.1]})
    [post] = [r for r in transport.requests if r.url == SCORING]
    assert post.method == "POST" and post.body == {"data": [{"instant": 730, "temp": 0.25}]}
    assert post.headers["Authorization"] == "Bearer key-one"  # the endpoint's primary key (listKeys)
    assert post.headers["Content-Type"] == "application/json"
    assert sent(transport, "POST", "/onlineEndpoints/bike-svc/listKeys")
    assert (
        deploy(argv) == 1
    )  # the service's 500 is printed and exits 1, sent once (no retry of a failing run())
    assert json.loads(capsys.readouterr().out) == {"message": "run() failed"}
    assert deploy(argv) == 1 and len([r for r in transport.requests if r.url == SCORING]) == 3


def test_kubernetes_endpoint_and_deployment_bodies(ws) -> None:
    fake, transport = ws
    argv = ["--target", "azure-v2", "--aks-cluster", "my-aks", "--name", "bike-aks", "--model", "bike-demand:3",
            "--instance-type", "cpu-small", "--instance-count", "2", "--scoring-timeout-ms", "300000"]  # fmt: skip
    assert deploy(argv) == 0
    endpoint = sent(transport, "PUT", "/onlineEndpoints/bike-aks")
    assert endpoint[0]["properties"]["authMode"] == "Key"
    assert endpoint[0]["properties"]["compute"] == ARM + "/computes/my-aks"
    assert endpoint[-1]["properties"]["traffic"] == {"blue": 100}
    [deployment] = sent(transport, "PUT", "/onlineEndpoints/bike-aks/deployments/blue")
    props = deployment["properties"]
    assert props["endpointComputeType"] == "Kubernetes" and props["instanceType"] == "cpu-small"
    requests = props["containerResourceRequirements"]["containerResourceRequests"]
    assert requests == {"cpu": "1", "memory": "1Gi"}  # azure-ai-ml cannot read a deployment back without them
    assert deployment["sku"]["capacity"] == 2 and props["requestSettings"]["requestTimeout"] == "PT5M"
    assert props["model"] == ARM + "/models/bike-demand/versions/3"

    assert deploy([*argv[:-6], "--name", "bike-aks2", "--cpu-cores", "2", "--memory-gb", "4"]) == 0
    [deployment] = sent(transport, "PUT", "/onlineEndpoints/bike-aks2/deployments/blue")
    requests = deployment["properties"]["containerResourceRequirements"]["containerResourceRequests"]
    assert requests == {"cpu": "2", "memory": "4Gi"} and "instanceType" not in deployment["properties"]


def test_an_existing_endpoint_needs_overwrite_which_updates_it_in_place(ws, capsys) -> None:
    fake, transport = ws
    argv = ["--target", "azure-v2", "--name", "bike-svc", "--model", "bike-demand:3"]
    assert deploy(argv) == 0
    puts = len([r for r in transport.requests if r.method == "PUT"])
    capsys.readouterr()
    assert deploy([*argv[:-1], "bike-demand:4"]) == 2
    assert _error(capsys).startswith("error: online endpoint 'bike-svc' already exists (pass --overwrite")
    assert len([r for r in transport.requests if r.method == "PUT"]) == puts  # nothing sent

    assert deploy([*argv[:-1], "bike-demand:4", "--overwrite"]) == 0
    endpoint = sent(transport, "PUT", "/onlineEndpoints/bike-svc")
    assert endpoint[2]["properties"]["traffic"] == {"blue": 100}  # the running deployment keeps serving
    deployments = sent(transport, "PUT", "/onlineEndpoints/bike-svc/deployments/blue")
    assert deployments[-1]["properties"]["model"].endswith("/models/bike-demand/versions/4")
    assert [r.method for r in transport.requests if r.url.split("?")[0].endswith("/onlineEndpoints/bike-svc")
            and r.method == "DELETE"] == []  # fmt: skip

    capsys.readouterr()
    assert (
        deploy([*argv, "--aks-cluster", "my-aks", "--overwrite"]) == 2
    )  # a managed one cannot become Kubernetes
    assert "is a managed endpoint, not a Kubernetes one" in _error(capsys)


def test_deploy_environment_references_the_curated_environment_in_the_azureml_registry(
    ws, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, transport = ws
    assert deploy(["--target", "azure-v2", "--name", "bike-svc", "--model", "bike-demand:3", "--environment",
                   "AzureML-AutoML"]) == 0  # fmt: skip
    [deployment] = sent(transport, "PUT", "/onlineEndpoints/bike-svc/deployments/blue")
    curated = "azureml://registries/azureml/environments/AzureML-AutoML/labels/latest"
    assert deployment["properties"]["environmentId"] == curated
    assert not [
        r for r in transport.requests if "/environments/" in r.url and r.method == "PUT"
    ]  # none built
    assert deployment["properties"]["codeConfiguration"]["scoringScript"] == "score.py"

    monkeypatch.setenv("AMLOPS_DEPLOY_ENVIRONMENT", "AzureML-AutoML")  # the setting is the default
    assert deploy(["--target", "azure-v2", "--name", "bike-svc2", "--model", "bike-demand:3"]) == 0
    [deployment] = sent(transport, "PUT", "/onlineEndpoints/bike-svc2/deployments/blue")
    assert deployment["properties"]["environmentId"] == curated


def test_deploy_export_writes_the_curated_reference_and_it_loads(tmp_path: Path) -> None:
    from pipelines.v2 import verify

    out = tmp_path / "online"
    assert deploy(["export", "--sdk", "v2", "--out", str(out), "--name", "bike-svc", "--environment", "AzureML-AutoML"]) == 0  # fmt: skip
    deployment = verify.load(out / "bike-svc.deployment.yml", "online_deployment")
    assert deployment.environment == "azureml://registries/azureml/environments/AzureML-AutoML/labels/latest"
    assert not (out / "environments").exists()  # no inference.yml copied: it is not used


def test_repair_dump_keeps_registry_uris_and_drops_the_bogus_prefix() -> None:
    from pipelines.v2.verify import repair_dump

    text = "environment: azureml://registries/azureml/environments/AzureML-AutoML/labels/latest\ncode: azureml:./src\n"
    assert repair_dump(text) == (
        "environment: azureml://registries/azureml/environments/AzureML-AutoML/labels/latest\ncode: ./src\n"
    )  # it used to strip "azureml:" from "azureml://", leaving "//registries/..."
