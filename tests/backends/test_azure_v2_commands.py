"""The azure-v2 commands end to end, offline: the CLIs run unchanged against azure-ai-ml, whose HTTP transport
(and that of the storage client it builds to upload a component's code) is the only thing faked. The tests
assert the REST requests a workspace would receive."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.backends.azure_v2_transport import (
    ARM,
    CONTAINER,
    MGMT,
    STORAGE,
    FakeTransport,
    FakeWorkspace,
    configure,
    registered_model,
    sent,
)

pytestmark = pytest.mark.slow  # services, the SDK's graph builder or the package index

DATA_URL = "https://amlopsstore.blob.core.windows.net/data/bike-no.csv"


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeWorkspace, FakeTransport]:
    """A configured workspace (AZUREML_* variables) whose every HTTP request is answered by a FakeWorkspace."""
    fake = FakeWorkspace()
    return fake, configure(monkeypatch, fake)


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
    assert sent(transport, "POST", "/codes/" + _code_name(transport) + "/versions/1/startPendingUpload")

    [component] = sent(transport, "PUT", "/components/amlops_train_pipeline/versions/1")
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
    # register loads AutoML's MLflow model: it runs in the curated AutoML environment, prep in the project's
    steps = _anonymous_components(transport)
    assert steps["register"]["environment"] == (
        "azureml://registries/azureml/environments/AzureML-AutoML/labels/latest"
    )
    assert "/environments/CliV2AnonymousEnvironment/" in steps["prep"]["environment"]

    endpoint_puts = sent(transport, "PUT", "/batchEndpoints/amlops-train")
    assert endpoint_puts[0]["properties"]["authMode"] == "aadToken"
    assert endpoint_puts[-1]["properties"]["defaults"] == {"deploymentName": "v1"}
    [deployment] = sent(transport, "PUT", "/batchEndpoints/amlops-train/deployments/v1")
    config = deployment["properties"]["deploymentConfiguration"]
    assert config["deploymentConfigurationType"] == "PipelineComponent"
    assert config["componentId"]["assetId"] == ARM + "/components/amlops_train_pipeline/versions/1"
    assert config["settings"]["default_compute"] == "cpu-cluster"

    [schedule] = sent(transport, "PUT", "/schedules/amlops-train-schedule")
    trigger = schedule["properties"]["trigger"]
    assert trigger["triggerType"] == "Recurrence" and trigger["frequency"] == "week"  # the settings' default
    assert trigger["schedule"] == {"hours": [3], "minutes": [0], "weekDays": ["monday"]}
    assert dt.datetime.fromisoformat(trigger["startTime"]) > before  # creating it never runs at once
    job = schedule["properties"]["action"]["jobDefinition"]
    assert job["componentId"] == ARM + "/components/amlops_train_pipeline/versions/1"  # the published version
    assert job["inputs"]["training_dataset"]["jobInputType"] == "uri_file"


def _anonymous_components(transport: FakeTransport) -> dict[str, Any]:
    """The step components azure-ai-ml registered for a pipeline component, by display name (the v1 step's)."""
    specs = [r.body["properties"]["componentSpec"] for r in transport.requests
             if r.method == "PUT" and "/components/azureml_anonymous/versions/" in r.url]  # fmt: skip
    return {spec["display_name"]: spec for spec in specs}


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
    assert sent(transport, "PUT", "/components/amlops_train_pipeline/versions/2")
    assert sent(transport, "PUT", "/batchEndpoints/amlops-train/deployments/v2")
    # created, its default set to v1, then left alone: v2 is deployed but not the default
    endpoint_puts = sent(transport, "PUT", "/batchEndpoints/amlops-train")
    assert [b["properties"].get("defaults") for b in endpoint_puts] == [None, {"deploymentName": "v1"}]
    assert not any(path.startswith("/schedules") for _, path in _arm(transport))
    assert train.main(["publish", "--target", "azure-v2", "--no-schedule", "--set-default"]) == 0
    assert sent(transport, "PUT", "/batchEndpoints/amlops-train")[-1]["properties"]["defaults"] == {
        "deploymentName": "v3"
    }


def test_batch_score_publish_sends_a_parallel_node_that_looks_the_model_up_when_it_runs(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    """The model is a name (and a version, 0 = the latest) the entry script looks up in the MLflow registry when
    it runs: nothing sent names a model version, so a schedule scores with the model latest when it fires."""
    from pipelines import batch_score

    fake, transport = workspace
    model, body = registered_model("bike-demand", 3)
    fake.resources[model] = body
    assert batch_score.main(["publish", "--target", "azure-v2"]) == 0
    assert "has no version in the workspace yet" not in capsys.readouterr().out
    puts = [path for method, path in _arm(transport) if method == "PUT" and "/components/" in path]
    pipeline = [p for p in puts if "azureml_anonymous" not in p]
    assert len(pipeline) == 1 and pipeline[0].endswith("/versions/1")
    spec = sent(transport, "PUT", pipeline[0])[0]["properties"]["componentSpec"]
    assert spec["inputs"]["model_name"] == {"type": "string", "default": "bike-demand"}
    assert spec["inputs"]["model_version"] == {"type": "integer", "default": "0"}
    assert not [k for k, v in spec["inputs"].items() if v["type"] in ("mlflow_model", "custom_model")]
    [parallel] = [j for j in spec["jobs"].values() if j["type"] == "parallel"]
    assert parallel["inputs"]["model_name"]["value"] == "${{parent.inputs.model_name}}"
    assert parallel["inputs"]["model_version"]["value"] == "${{parent.inputs.model_version}}"
    component = [b for p in puts for b in sent(transport, "PUT", p) if p.endswith(parallel["componentId"].split(
        "/components")[1])][0]["properties"]["componentSpec"]  # fmt: skip
    assert component["type"] == "parallel"
    assert component["task"]["type"] == "run_function" and component["task"]["entry_script"] == "scoring.py"
    arguments = component["task"]["program_arguments"]
    assert arguments.startswith(
        "--model_name ${{inputs.model_name}} --model_version ${{inputs.model_version}}"
    )
    assert arguments.endswith("--model_registry mlflow")
    assert component["retry_settings"] == {"max_retries": 3, "timeout": 60}
    assert component["task"]["append_row_to"].startswith("${{outputs.")
    [schedule] = [b for m, p in _arm(transport) if m == "PUT" and p.startswith("/schedules/")
                  for b in sent(transport, "PUT", p)]  # fmt: skip
    job = schedule["properties"]["action"]["jobDefinition"]
    assert job["componentId"] == ARM + pipeline[0]  # the published version
    # the schedule's job names the model, not a version of it: azure-ai-ml has nothing to pin at creation
    assert job["inputs"]["model_name"] == {"value": "bike-demand", "jobInputType": "literal"}
    assert job["inputs"]["model_version"] == {"value": "0", "jobInputType": "literal"}
    body = json.dumps(schedule)
    assert "/models/" not in body and "azureml:bike-demand" not in body and "mlflow_model" not in body
    data = job["inputs"]["input_dataset"]
    assert data["jobInputType"] == "mltable" and data["uri"].startswith(
        "azureml://datastores/workspaceblobstore/"
    )
    assert any(k.endswith("/MLTable") for k in fake.blobs)


def test_batch_score_publish_without_a_registered_model_says_runs_need_one(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import batch_score

    _, transport = workspace
    assert batch_score.main(["publish", "--target", "azure-v2"]) == 0  # the model is looked up when it runs
    out = capsys.readouterr().out
    assert "model bike-demand has no version in the workspace yet" in out
    assert sent(transport, "PUT", "/schedules/amlops-batch-score-schedule")


def test_train_run_submits_a_pipeline_job(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import train

    _, transport = workspace
    assert train.main(["run", "--target", "azure-v2", "--set", "cutoff_date=2012-06-30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # stdout is the JSON alone (no upload progress bar)
    jobs = [(m, p) for m, p in _arm(transport) if m == "PUT" and p.startswith("/jobs/")]
    assert len(jobs) == 1
    body = sent(transport, "PUT", jobs[0][1])[0]["properties"]
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
    assert not sent(transport, "PUT", "/schedules/weekly")
    argv += ["--param", f"training_dataset={DATA_URL}"]
    assert workspace_cli.main(argv) == 0
    [body] = sent(transport, "PUT", "/schedules/weekly")
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
    endpoint = sent(transport, "PUT", "/onlineEndpoints/bike-svc")
    assert endpoint[0]["properties"]["authMode"] == "Key"
    assert endpoint[-1]["properties"]["traffic"] == {"blue": 100}
    [deployment] = sent(transport, "PUT", "/onlineEndpoints/bike-svc/deployments/blue")
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
    updated = sent(transport, "PUT", "/onlineEndpoints/bike-svc/deployments/blue")[-1]["properties"]
    assert updated["model"].endswith("/models/bike-demand/versions/4")
    assert updated["instanceType"] == "Standard_F4s_v2"

    assert deploy.main(["keys", "--target", "azure-v2", "--name", "bike-svc", "--json"]) == 0
    assert sent(transport, "POST", "/onlineEndpoints/bike-svc/listKeys")
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
    uri = sent(transport, "PUT", job)[0]["properties"]["inputs"]["training_dataset"]["uri"]
    assert uri.startswith("azureml://datastores/workspaceblobstore/paths/") and uri.endswith("bikes.csv")


def test_train_run_refuses_a_local_file_it_cannot_upload(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from pipelines import train

    _, transport = workspace
    assert train.main(["run", "--target", "azure-v2", "--data", str(tmp_path / "missing.csv")]) == 2
    assert "local file Azure cannot reach" in capsys.readouterr().err
    assert not any(p.startswith("/jobs/") for _, p in _arm(transport))


def test_batch_score_run_names_the_model_for_the_step_to_look_up_or_says_there_is_none(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import batch_score

    fake, transport = workspace
    assert batch_score.main(["run", "--target", "azure-v2"]) == 2  # nothing registered: one line, no job
    err = capsys.readouterr().err
    assert "model bike-demand is not registered in the workspace" in err and "Traceback" not in err
    assert not any(p.startswith("/jobs/") for _, p in _arm(transport))

    model, body = registered_model("bike-demand", 3)
    fake.resources[model] = body
    assert batch_score.main(["run", "--target", "azure-v2", "--json"]) == 0
    [job] = [p for m, p in _arm(transport) if m == "PUT" and p.startswith("/jobs/")]
    inputs = sent(transport, "PUT", job)[0]["properties"]["inputs"]
    assert inputs["model_name"] == {"value": "bike-demand", "jobInputType": "literal"}
    assert inputs["model_version"] == {"value": "0", "jobInputType": "literal"}  # the latest when it runs
    assert "model" not in inputs

    assert batch_score.main(["run", "--target", "azure-v2", "--model", "bike-demand:7"]) == 2
    assert "version 7 of model bike-demand is not registered" in capsys.readouterr().err
    assert batch_score.main(["run", "--target", "azure-v2", "--model", "bike-demand:3", "--json"]) == 0
    jobs = [p for m, p in _arm(transport) if m == "PUT" and p.startswith("/jobs/")]
    assert len(jobs) == 2  # the refused one sent nothing
    pinned = sent(transport, "PUT", jobs[-1])[0]["properties"]["inputs"]
    assert pinned["model_version"] == {"value": "3", "jobInputType": "literal"}  # an explicit pin


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_a_publish_refused_half_way_takes_back_what_it_created(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    """The first publish: the deployment is refused, so the endpoint it created is deleted and the component
    version it registered archived; the failure is one line, exit 2."""
    from pipelines import train

    fake, transport = workspace
    fake.refuse("PUT", "/batchEndpoints/amlops-train/deployments/v1", "Compute cpu-cluster is not found")
    assert train.main(["publish", "--target", "azure-v2"]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: Azure ML: (BadRequest) Compute cpu-cluster is not found")
    assert line.endswith(
        "(undone: deleted batch endpoint amlops-train, archived component amlops_train_pipeline version 1)"
    )
    assert [r for r in _arm(transport) if r[0] == "DELETE"] == [("DELETE", "/batchEndpoints/amlops-train")]
    archive = sent(transport, "PUT", "/components/amlops_train_pipeline/versions/1")
    assert len(archive) == 2 and archive[-1]["properties"]["isArchived"] is True
    assert archive[-1]["properties"]["componentSpec"] == archive[0]["properties"]["componentSpec"]
    assert ARM + "/batchEndpoints/amlops-train" not in fake.resources
    assert not sent(transport, "PUT", "/schedules/amlops-train-schedule")  # never reached

    # the archived version is not reused: the next publish registers version 2
    fake.refused.clear()
    assert train.main(["publish", "--target", "azure-v2", "--no-schedule"]) == 0
    assert "registered pipeline component amlops_train_pipeline version 2" in capsys.readouterr().out
    assert sent(transport, "PUT", "/batchEndpoints/amlops-train/deployments/v2")


def test_a_failed_publish_leaves_what_existed_before_and_restores_the_default(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    """A second publish with --set-default whose schedule update is refused: the default goes back to v1, the
    v2 deployment is deleted and component version 2 archived; the endpoint, v1 and the schedule stay."""
    from pipelines import train

    fake, transport = workspace
    assert train.main(["publish", "--target", "azure-v2"]) == 0
    schedule_before = fake.resources[ARM + "/schedules/amlops-train-schedule"]
    first = len(transport.requests)
    fake.refuse("PUT", "/schedules/amlops-train-schedule", "The schedule's trigger is invalid")
    assert train.main(["publish", "--target", "azure-v2", "--set-default"]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: Azure ML: (BadRequest) The schedule's trigger is invalid (undone: ")
    assert line.endswith(
        "(undone: restored default deployment v1 of amlops-train, deleted deployment v2 of amlops-train,"
        " archived component amlops_train_pipeline version 2)"
    )
    later = transport.requests[first:]
    deletes = [r.url.split("?")[0].removeprefix(MGMT) for r in later if r.method == "DELETE"]
    assert deletes == ["/batchEndpoints/amlops-train/deployments/v2"]
    defaults = [r.body["properties"]["defaults"] for r in later if r.method == "PUT"
                and r.url.split("?")[0] == MGMT + "/batchEndpoints/amlops-train"]  # fmt: skip
    assert defaults == [{"deploymentName": "v2"}, {"deploymentName": "v1"}]  # switched, then switched back
    archived = [r.url.split("?")[0].rsplit("/", 1)[-1] for r in later if r.method == "PUT"
                and "/components/amlops_train_pipeline/versions/" in r.url and r.body["properties"].get("isArchived")]  # fmt: skip
    assert archived == ["2"]
    # what existed before the failed publish is as it was
    assert fake.resources[ARM + "/batchEndpoints/amlops-train"]["properties"]["defaults"] == {
        "deploymentName": "v1"
    }
    assert ARM + "/batchEndpoints/amlops-train/deployments/v1" in fake.resources
    assert ARM + "/batchEndpoints/amlops-train/deployments/v2" not in fake.resources
    assert not fake.resources[ARM + "/components/amlops_train_pipeline/versions/1"]["properties"].get(
        "isArchived"
    )
    assert fake.resources[ARM + "/schedules/amlops-train-schedule"] == schedule_before


def test_what_could_not_be_taken_back_is_named_in_the_same_line(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import train

    fake, _ = workspace
    fake.refuse("PUT", "/batchEndpoints/amlops-train/deployments/v1", "Quota exceeded")
    fake.refuse("DELETE", "/batchEndpoints/amlops-train", "The endpoint is locked")
    assert train.main(["publish", "--target", "azure-v2", "--no-schedule"]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith(
        "error: Azure ML: (BadRequest) Quota exceeded (undone: could not be deleted: batch endpoint"
    )
    assert "The endpoint is locked" in line and line.endswith(
        "archived component amlops_train_pipeline version 1)"
    )
    assert ARM + "/batchEndpoints/amlops-train" in fake.resources  # left, and said so


def test_a_schedule_a_refused_request_still_created_is_deleted(
    workspace: tuple[FakeWorkspace, FakeTransport], capsys: pytest.CaptureFixture[str]
) -> None:
    """The schedule request fails after the service stored it: this publish created it, so it is deleted; a
    refused request that created nothing (the endpoint here existed) costs no delete."""
    from pipelines import train

    fake, transport = workspace
    assert train.main(["publish", "--target", "azure-v2", "--no-schedule"]) == 0
    first = len(transport.requests)
    fake.refuse("PUT", "/schedules/amlops-train-schedule", "Gateway timeout", stored=True)
    assert train.main(["publish", "--target", "azure-v2"]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.endswith(
        "(undone: deleted schedule amlops-train-schedule, deleted deployment v2 of amlops-train,"
        " archived component amlops_train_pipeline version 2)"
    )
    deletes = [
        r.url.split("?")[0].removeprefix(MGMT) for r in transport.requests[first:] if r.method == "DELETE"
    ]
    assert deletes == ["/schedules/amlops-train-schedule", "/batchEndpoints/amlops-train/deployments/v2"]
    assert ARM + "/schedules/amlops-train-schedule" not in fake.resources
    assert fake.resources[ARM + "/batchEndpoints/amlops-train"]["properties"]["defaults"] == {
        "deploymentName": "v1"
    }
