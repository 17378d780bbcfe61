"""The azure-v2 commands end to end, offline: the CLIs run unchanged against azure-ai-ml, whose HTTP transport
(and that of the storage client it builds to upload a component's code) is the only thing faked. The tests
assert the REST requests a workspace would receive."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from azure.core.pipeline.transport import RequestsTransport

from tests.backends.azure_v2_transport import (
    ARM,
    CONTAINER,
    STORAGE,
    FakeTransport,
    FakeWorkspace,
    StaticCredential,
    registered_model,
)

pytestmark = pytest.mark.slow  # services, the SDK's graph builder or the package index

MGMT = "https://management.azure.com" + ARM
DATA_URL = "https://amlopsstore.blob.core.windows.net/data/bike-no.csv"


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeWorkspace, FakeTransport]:
    """A configured workspace (AZUREML_* variables) whose every HTTP request is answered by a FakeWorkspace."""
    fake = FakeWorkspace()
    transport = FakeTransport(fake)
    monkeypatch.setattr(RequestsTransport, "send", lambda self, request, **kw: transport.send(request, **kw))
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", StaticCredential)
    for key, value in (("SUBSCRIPTION_ID", "sub"), ("RESOURCE_GROUP", "rg"), ("WORKSPACE_NAME", "ws")):
        monkeypatch.setenv(f"AZUREML_{key}", value)
    return fake, transport


def _sent(transport: FakeTransport, method: str, suffix: str) -> list[Any]:
    """The bodies of the ``method`` requests to the workspace path ending in ``suffix``."""
    return [r.body for r in transport.requests if r.method == method and r.url.split("?")[0] == MGMT + suffix]


def _arm(transport: FakeTransport) -> list[tuple[str, str]]:
    return [(r.method, r.url.split("?")[0].removeprefix(MGMT)) for r in transport.requests if MGMT in r.url]


def test_train_publish_registers_the_component_endpoint_deployment_and_schedule(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import train

    fake, transport = workspace
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert train.main(["publish", "--target", "azure-v2"]) == 0
    out = capsys.readouterr().out
    assert "registered pipeline component amlops_train_pipeline version 1" in out
    assert "default deployment: v1" in out and "no keys" in out

    # the step code went to the workspace's storage through the SAS the service handed out
    uploads = [r for r in transport.requests if r.url.startswith(STORAGE) and r.method == "PUT"]
    assert any(r.url.split("?")[0] == f"{STORAGE}/{CONTAINER}/steps/prep.py" for r in uploads)
    assert b"def main" in fake.blobs[f"/{CONTAINER}/steps/prep.py"]
    assert _sent(transport, "POST", "/codes/" + _code_name(transport) + "/versions/1/startPendingUpload")

    [component] = _sent(transport, "PUT", "/components/amlops_train_pipeline/versions/1")
    spec = component["properties"]["componentSpec"]
    assert spec["type"] == "pipeline" and list(spec["jobs"]) == ["prep", "automl", "register"]
    assert spec["inputs"]["cutoff_date"] == {"type": "string", "default": "2012-08-31"}
    assert spec["inputs"]["training_dataset"]["type"] == "uri_file"
    automl = spec["jobs"]["automl"]
    assert automl["task"] == "regression" and automl["primary_metric"] == "normalized_root_mean_squared_error"
    assert automl["training_data"] == "${{parent.jobs.prep.outputs.train_data}}"
    assert automl["outputs"]["best_model"]["job_output_type"] == "mlflow_model"
    register = spec["jobs"]["register"]["inputs"]
    assert register["model_data"]["value"] == "${{parent.jobs.automl.outputs.best_model}}"
    assert spec["jobs"]["prep"]["componentId"].startswith(ARM + "/components/azureml_anonymous/versions/")

    endpoint_puts = _sent(transport, "PUT", "/batchEndpoints/amlops-train")
    assert endpoint_puts[0]["properties"]["authMode"] == "aadToken"
    assert endpoint_puts[-1]["properties"]["defaults"] == {"deploymentName": "v1"}
    [deployment] = _sent(transport, "PUT", "/batchEndpoints/amlops-train/deployments/v1")
    config = deployment["properties"]["deploymentConfiguration"]
    assert config["deploymentConfigurationType"] == "PipelineComponent"
    assert config["componentId"]["assetId"] == ARM + "/components/amlops_train_pipeline/versions/1"
    assert config["settings"]["default_compute"] == "cpu-cluster"

    [schedule] = _sent(transport, "PUT", "/schedules/amlops-train-schedule")
    trigger = schedule["properties"]["trigger"]
    assert trigger["triggerType"] == "Recurrence" and trigger["frequency"] == "week"  # the settings' default
    assert trigger["schedule"] == {"hours": [3], "minutes": [0], "weekDays": ["monday"]}
    assert dt.datetime.fromisoformat(trigger["startTime"]) > before  # creating it never runs at once
    job = schedule["properties"]["action"]["jobDefinition"]
    assert job["componentId"] == ARM + "/components/amlops_train_pipeline/versions/1"  # the published version
    assert job["inputs"]["training_dataset"]["jobInputType"] == "uri_file"


def _code_name(transport: FakeTransport) -> str:
    [first] = [r.url for r in transport.requests if r.url.split("?")[0].endswith("/startPendingUpload")][:1]
    return first.split("/codes/")[1].split("/")[0]


def test_a_second_publish_is_a_new_component_version_and_keeps_the_default(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import train

    _, transport = workspace
    assert train.main(["publish", "--target", "azure-v2", "--no-schedule"]) == 0
    assert train.main(["publish", "--target", "azure-v2", "--no-schedule"]) == 0
    assert _sent(transport, "PUT", "/components/amlops_train_pipeline/versions/2")
    assert _sent(transport, "PUT", "/batchEndpoints/amlops-train/deployments/v2")
    # created, its default set to v1, then left alone: v2 is deployed but not the default
    endpoint_puts = _sent(transport, "PUT", "/batchEndpoints/amlops-train")
    assert [b["properties"].get("defaults") for b in endpoint_puts] == [None, {"deploymentName": "v1"}]
    assert not any(path.startswith("/schedules") for _, path in _arm(transport))
    assert train.main(["publish", "--target", "azure-v2", "--no-schedule", "--set-default"]) == 0
    assert _sent(transport, "PUT", "/batchEndpoints/amlops-train")[-1]["properties"]["defaults"] == {
        "deploymentName": "v3"
    }


def test_batch_score_publish_sends_a_parallel_node_with_the_model_input(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import batch_score

    fake, transport = workspace
    assert batch_score.main(["publish", "--target", "azure-v2"]) == 2  # its schedule needs the model
    assert "model bike-demand is not registered" in capsys.readouterr().err
    assert not [m for m, _ in _arm(transport) if m != "GET"]  # nothing registered
    model, body = registered_model("bike-demand", 3)
    fake.resources[model] = body
    assert batch_score.main(["publish", "--target", "azure-v2"]) == 0
    puts = [path for method, path in _arm(transport) if method == "PUT" and "/components/" in path]
    pipeline = [p for p in puts if "azureml_anonymous" not in p]
    assert len(pipeline) == 1 and pipeline[0].endswith("/versions/1")
    spec = _sent(transport, "PUT", pipeline[0])[0]["properties"]["componentSpec"]
    assert spec["inputs"]["model"]["type"] == "mlflow_model"
    [parallel] = [j for j in spec["jobs"].values() if j["type"] == "parallel"]
    assert parallel["inputs"]["model"]["value"] == "${{parent.inputs.model}}"
    component = [b for p in puts for b in _sent(transport, "PUT", p) if p.endswith(parallel["componentId"].split(
        "/components")[1])][0]["properties"]["componentSpec"]  # fmt: skip
    assert component["type"] == "parallel"
    assert component["task"]["type"] == "run_function" and component["task"]["entry_script"] == "scoring.py"
    assert component["retry_settings"] == {"max_retries": 3, "timeout": 60}
    assert component["task"]["append_row_to"].startswith("${{outputs.")
    [schedule] = [b for m, p in _arm(transport) if m == "PUT" and p.startswith("/schedules/")
                  for b in _sent(transport, "PUT", p)]  # fmt: skip
    job = schedule["properties"]["action"]["jobDefinition"]
    assert job["componentId"] == ARM + pipeline[0]  # the published version
    # the schedule's job names the model version latest when it was created, and its data as uploaded
    assert job["inputs"]["model"]["uri"].endswith(model)
    data = job["inputs"]["input_dataset"]
    assert data["jobInputType"] == "mltable" and data["uri"].startswith(
        "azureml://datastores/workspaceblobstore/"
    )
    assert any(k.endswith("/MLTable") for k in fake.blobs)


def test_train_run_submits_a_pipeline_job(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import train

    _, transport = workspace
    assert train.main(["run", "--target", "azure-v2", "--set", "cutoff_date=2012-06-30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # stdout is the JSON alone (no upload progress bar)
    jobs = [(m, p) for m, p in _arm(transport) if m == "PUT" and p.startswith("/jobs/")]
    assert len(jobs) == 1
    body = _sent(transport, "PUT", jobs[0][1])[0]["properties"]
    assert body["jobType"] == "Pipeline" and body["experimentName"] == "bike-demand-train"
    assert body["inputs"]["cutoff_date"] == {"value": "2012-06-30", "jobInputType": "literal"}
    assert body["inputs"]["training_dataset"]["jobInputType"] == "uri_file"
    assert list(body["jobs"]) == ["prep", "automl", "register"]
    assert body["settings"]["default_compute"] == ARM + "/computes/cpu-cluster"
    assert result["run_id"] == jobs[0][1].rsplit("/", 1)[1] and result["status"] == "NotStarted"
    assert result["url"].startswith(f"https://ml.azure.com/runs/{result['run_id']}")


def test_workspace_schedules_create_runs_the_published_version_later(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import train
    from pipelines import workspace as workspace_cli

    _, transport = workspace
    assert train.main(["publish", "--target", "azure-v2", "--no-schedule"]) == 0
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    argv = ["schedules", "create", "--target", "azure-v2", "--name", "weekly", "--endpoint", "amlops-train",
            "--version", "1", "--frequency", "Week", "--week-days", "Monday,Thursday", "--time-of-day", "04:15",
            "--param", "cutoff_date=2012-06-30"]  # fmt: skip
    assert workspace_cli.main(argv) == 2
    assert "'training_dataset' has no value" in capsys.readouterr().err
    assert not _sent(transport, "PUT", "/schedules/weekly")
    argv += ["--param", f"training_dataset={DATA_URL}"]
    assert workspace_cli.main(argv) == 0
    [body] = _sent(transport, "PUT", "/schedules/weekly")
    trigger = body["properties"]["trigger"]
    assert trigger["frequency"] == "week" and trigger["interval"] == 1
    assert trigger["schedule"] == {"hours": [4], "minutes": [15], "weekDays": ["monday", "thursday"]}
    assert dt.datetime.fromisoformat(trigger["startTime"]) > before
    job = body["properties"]["action"]["jobDefinition"]
    assert job["componentId"] == ARM + "/components/amlops_train_pipeline/versions/1"
    assert job["inputs"]["cutoff_date"] == {"value": "2012-06-30", "jobInputType": "literal"}
    assert job["inputs"]["training_dataset"]["jobInputType"] == "uri_file"
    assert job["inputs"]["training_dataset"]["uri"] == DATA_URL
    assert job["settings"]["default_compute"] == ARM + "/computes/cpu-cluster"
    assert body["properties"].get("isEnabled", True) is True
    assert "created schedule weekly (Active)" in capsys.readouterr().out


def test_deploy_creates_the_endpoint_and_deployment_then_updates_reads_keys_and_deletes(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import deploy

    fake, transport = workspace
    argv = ["--target", "azure-v2", "--name", "bike-svc", "--model", "bike-demand:3", "--scoring-timeout-ms",
            "90000", "--instance-type", "Standard_F4s_v2", "--instance-count", "2"]  # fmt: skip
    assert deploy.main(argv) == 0
    endpoint = _sent(transport, "PUT", "/onlineEndpoints/bike-svc")
    assert endpoint[0]["properties"]["authMode"] == "Key"
    assert endpoint[-1]["properties"]["traffic"] == {"blue": 100}
    [deployment] = _sent(transport, "PUT", "/onlineEndpoints/bike-svc/deployments/blue")
    props = deployment["properties"]
    assert props["endpointComputeType"] == "Managed"
    assert props["model"] == ARM + "/models/bike-demand/versions/3"
    assert props["environmentId"].startswith(ARM + "/environments/")
    assert props["instanceType"] == "Standard_F4s_v2" and deployment["sku"]["capacity"] == 2
    assert props["requestSettings"]["requestTimeout"] == "PT1M30S"
    assert props["codeConfiguration"]["scoringScript"] == "score.py"
    assert any(r.url.split("?")[0].endswith("/score.py") for r in transport.requests if r.method == "PUT")

    assert (
        deploy.main(["update", "--target", "azure-v2", "--name", "bike-svc", "--model", "bike-demand:4"]) == 0
    )
    updated = _sent(transport, "PUT", "/onlineEndpoints/bike-svc/deployments/blue")[-1]["properties"]
    assert updated["model"].endswith("/models/bike-demand/versions/4")
    assert updated["instanceType"] == "Standard_F4s_v2"

    assert deploy.main(["keys", "--target", "azure-v2", "--name", "bike-svc", "--json"]) == 0
    assert _sent(transport, "POST", "/onlineEndpoints/bike-svc/listKeys")
    capsys.readouterr()
    assert deploy.main(["delete", "--target", "azure-v2", "--name", "bike-svc"]) == 0
    assert ("DELETE", "/onlineEndpoints/bike-svc") in _arm(transport)
    assert (
        MGMT.removeprefix("https://management.azure.com") + "/onlineEndpoints/bike-svc" not in fake.resources
    )


def test_train_run_uploads_a_local_data_file_to_the_default_datastore(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from pipelines import train

    fake, transport = workspace
    data = tmp_path / "bikes.csv"
    data.write_text("date,cnt\n2012-01-01,5\n")
    assert train.main(["run", "--target", "azure-v2", "--data", str(data), "--json"]) == 0
    assert any(m == "GET" and p.startswith("/datastores") for m, p in _arm(transport))
    assert ("POST", "/datastores/workspaceblobstore/listSecrets") in _arm(transport)
    [blob] = [k for k in fake.blobs if k.endswith("/bikes.csv")]
    assert fake.blobs[blob] == data.read_bytes()
    [job] = [p for m, p in _arm(transport) if m == "PUT" and p.startswith("/jobs/")]
    uri = _sent(transport, "PUT", job)[0]["properties"]["inputs"]["training_dataset"]["uri"]
    assert uri.startswith("azureml://datastores/workspaceblobstore/paths/") and uri.endswith("bikes.csv")


def test_train_run_refuses_a_local_file_it_cannot_upload(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from pipelines import train

    _, transport = workspace
    assert train.main(["run", "--target", "azure-v2", "--data", str(tmp_path / "missing.csv")]) == 2
    assert "local file Azure cannot reach" in capsys.readouterr().err
    assert not any(p.startswith("/jobs/") for _, p in _arm(transport))


def test_batch_score_run_binds_the_latest_registered_model_or_says_there_is_none(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import batch_score

    fake, transport = workspace
    assert batch_score.main(["run", "--target", "azure-v2"]) == 2  # nothing registered: one line, no job
    err = capsys.readouterr().err
    assert "Azure ML: Asset bike-demand does not exist" in err and "Traceback" not in err
    assert not any(p.startswith("/jobs/") for _, p in _arm(transport))

    model, body = registered_model("bike-demand", 3)
    fake.resources[model] = body
    assert batch_score.main(["run", "--target", "azure-v2", "--json"]) == 0
    [job] = [p for m, p in _arm(transport) if m == "PUT" and p.startswith("/jobs/")]
    inputs = _sent(transport, "PUT", job)[0]["properties"]["inputs"]
    assert inputs["model"]["jobInputType"] == "mlflow_model" and inputs["model"]["uri"].endswith(model)
