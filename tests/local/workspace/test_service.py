"""The workspace service's HTTP API in-process (no dispatcher): auth, bad input, Azure shapes, routes, docs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipelines.local.runtime import runs
from pipelines.local.workspace import publishing, run_queue, service
from pipelines.local.workspace.routes.submit import MAX_BODY_BYTES
from pipelines.settings import Settings

PREFIX = "/pipelines/v1.0/PipelineRuns"


def publish_on_tiny_data(build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Publish the pipeline ``build`` makes, with 40 generated rows as its dataset "tiny"."""
    from pipelines.datagen import write_csv

    data = tmp_path / "data"
    write_csv(data / "tiny.csv", 40, seed=2)
    monkeypatch.setenv("AMLOPS_DATA_DIR", str(data))
    return publishing.publish(build(Settings(dataset="tiny")))


@pytest.fixture
def published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    from tests import tiny_pipeline

    return publish_on_tiny_data(tiny_pipeline.build, tmp_path, monkeypatch)


@pytest.fixture
def client() -> TestClient:
    with TestClient(service.create_app(background=False)) as c:
        yield c


@pytest.fixture
def key(client: TestClient) -> str:
    return service.key_store().keys()["primary"]


def endpoint_path(pub: dict) -> str:
    return f"{PREFIX}/PipelineEndpointSubmit/Id/{pub['endpoint_id']}"


def post(client: TestClient, path: str, body, key: str | None, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, content=data, headers={**headers, "Content-Type": "application/json"}, **kw)


def nothing_queued() -> bool:
    return run_queue.rows() == []


# ---- keys --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic abc", "Bearer "])
def test_no_or_wrong_key_is_401_and_nothing_runs(client, published, header) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.post(endpoint_path(published), json={"ExperimentName": "e"}, headers=headers)
    assert r.status_code == 401
    assert "invalid key" in r.json()["error"]["message"]
    assert nothing_queued()


def test_key_checked_before_the_body_is_read(client, published) -> None:
    r = post(client, endpoint_path(published), "{not json", "wrong")
    assert r.status_code == 401


def test_regenerated_key_works_at_once_and_the_old_one_stops(client, published, key) -> None:
    assert client.get("/runs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    secondary = service.key_store().keys()["secondary"]
    new = service.key_store().regenerate("primary")["primary"]
    assert client.get("/runs", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert client.get("/runs", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    assert client.get("/runs", headers={"Authorization": f"Bearer {secondary}"}).status_code == 200


def test_key_file_is_private(client) -> None:
    path = service.key_store().path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_damaged_key_file_is_503_saying_how_to_make_new_keys(client, published, key) -> None:
    service.key_store().path.write_text('{"primary": "abc')
    r = post(client, endpoint_path(published), {"ExperimentName": "e"}, key)
    assert r.status_code == 503 and "damaged" in r.text and "--regen primary" in r.text
    assert nothing_queued() and "abc" not in r.text
    new = service.key_store().regenerate("primary")
    assert (
        post(client, endpoint_path(published), {"ExperimentName": "e"}, new["secondary"]).status_code == 200
    )


# ---- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"ExperimentName": "e",', "malformed JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("", "empty request body"),
        ("[" * 100_000, "nests too deeply"),
        (
            {"ExperimentName": "e", "ParameterAssignment": {}},
            "unknown field(s) in the body: ParameterAssignment",
        ),
        ({"ExperimentName": "e", "ParameterAssignments": {"nope": "1"}}, "unknown pipeline parameter 'nope'"),
        ({"ExperimentName": "e", "ParameterAssignments": {"seed": "abc"}}, "parameter 'seed' expects an int"),
        ({"ExperimentName": "e", "ParameterAssignments": {"seed": 1.5}}, "parameter 'seed' expects an int"),
        ({"ExperimentName": "e", "ParameterAssignments": {"label": 5}}, "parameter 'label' expects a str"),
        ({"ExperimentName": "e", "ParameterAssignments": {"label": None}}, "parameter 'label' expects a str"),
        ({"ExperimentName": "e", "ParameterAssignments": []}, "ParameterAssignments must be a JSON object"),
        ({"ExperimentName": "bad name!"}, "is not a valid experiment name"),
        ({"ExperimentName": "e", "ParameterAssignments": {"tiny_dataset": "no-such-data"}}, "'no-such-data'"),
        (
            {
                "ExperimentName": "e",
                "DataPathAssignments": {"tiny_dataset": {"DataStoreName": "s", "RelativePath": "p"}},
            },
            "the local workspace has no datastores",
        ),
        (
            {
                "ExperimentName": "e",
                "DataSetDefinitionValueAssignments": {"tiny_dataset": {"SavedDataSetReference": {"Id": "x"}}},
            },
            "SavedDataSetReference",
        ),
        (
            {
                "ExperimentName": "e",
                "DataSetDefinitionValueAssignments": {"label": {"DataSetReference": {"Name": "tiny"}}},
            },
            "not a dataset parameter",
        ),
        (
            {
                "ExperimentName": "e",
                "ParameterAssignments": {"tiny_dataset": "tiny"},
                "DataSetDefinitionValueAssignments": {"tiny_dataset": {"DataSetReference": {"Name": "tiny"}}},
            },
            "assigned twice",
        ),
    ],
)
def test_bad_input_is_400_naming_the_problem_and_nothing_runs(client, published, key, body, fragment) -> None:
    r = post(client, endpoint_path(published), body, key)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "UserError"
    assert fragment in r.json()["error"]["message"]
    assert nothing_queued()
    assert list(runs.runs_dir().iterdir()) == []


@pytest.mark.parametrize(
    "path",
    [
        f"{PREFIX}/PipelineEndpointSubmit/Id/no-such-endpoint",
        f"{PREFIX}/PipelineSubmit/no-such-pipeline",
        "{endpoint}/7",
    ],
)
def test_unknown_endpoint_pipeline_or_version_is_404(client, published, key, path) -> None:
    r = post(client, path.format(endpoint=endpoint_path(published)), {"ExperimentName": "e"}, key)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "NotFound"
    assert nothing_queued()


def test_version_must_be_a_number_and_agree_with_the_query(client, published, key) -> None:
    assert post(client, endpoint_path(published) + "/one", {"ExperimentName": "e"}, key).status_code == 400
    r = post(client, endpoint_path(published) + "/1?pipelineVersion=2", {"ExperimentName": "e"}, key)
    assert r.status_code == 400 and "pipelineVersion=2" in r.json()["error"]["message"]
    assert nothing_queued()


def test_oversized_body_is_413(client, published, key) -> None:
    body = json.dumps({"ExperimentName": "e", "Description": "x" * (MAX_BODY_BYTES + 1)})
    assert post(client, endpoint_path(published), body, key).status_code == 413
    assert nothing_queued()


def test_unknown_run_is_404(client, key) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get(f"{PREFIX}/nope", headers=headers).status_code == 404
    assert client.get("/runs/nope/logs", headers=headers).status_code == 404


# ---- submitting ----------------------------------------------------------------------------------------
def test_submit_answers_azure_shape_and_queues_the_assignments(client, published, key, tmp_path) -> None:
    body = {
        "ExperimentName": "from-rest",
        "ParameterAssignments": {"seed": 7, "label": "cnt", "tiny_dataset": "tiny"},
    }
    r = post(client, endpoint_path(published), body, key)
    assert r.status_code == 200, r.text
    entity = r.json()
    assert entity["Status"]["StatusCode"] == "Queued"
    assert entity["RunHistoryExperimentName"] == "from-rest"
    assert entity["PipelineId"] == published["pipeline_id"] and entity["PipelineEndpointVersion"] == "0"
    assert entity["ParameterAssignments"]["seed"] == "7"
    assert entity["RunUrl"].endswith(f"/runs/{entity['Id']}")
    (row,) = run_queue.rows()
    assert (
        row["run_id"] == entity["Id"] and row["state"] == "Queued" and row["module"] == "tests.tiny_pipeline"
    )
    args = json.loads(row["args"])
    assert "seed=7" in args and "experiment_name=from-rest" in args
    # the run reads the file the name stands for (never a path the name might also be); the record shows the name
    assert args[args.index("--data") + 1] == str((tmp_path / "data" / "tiny.csv").resolve())
    assert entity["ParameterAssignments"]["tiny_dataset"] == "tiny"
    assert runs.read_record(entity["Id"])["status"] == "Queued"


def test_version_url_query_and_pipeline_url_all_submit(client, published, key) -> None:
    paths = [
        endpoint_path(published) + "/0",
        endpoint_path(published) + "?pipelineVersion=0",
        f"{PREFIX}/PipelineSubmit/{published['pipeline_id']}",
    ]
    ids = [post(client, p, {"ExperimentName": "e"}, key).json()["Id"] for p in paths]
    assert len(set(ids)) == 3 and len(run_queue.rows()) == 3


def test_dataset_reference_by_name_binds_the_dataset(client, published, key, tmp_path) -> None:
    body = {
        "ExperimentName": "e",
        "DataSetDefinitionValueAssignments": {
            "tiny_dataset": {"DataSetReference": {"Name": "tiny", "Version": "latest"}}
        },
    }
    r = post(client, endpoint_path(published), body, key)
    assert r.status_code == 200, r.text
    args = json.loads(run_queue.rows()[0]["args"])
    assert args[args.index("--data") + 1] == str((tmp_path / "data" / "tiny.csv").resolve())


def test_default_version_decides_what_the_endpoint_url_runs(client, published, key) -> None:
    from tests import tiny_pipeline

    second = publishing.publish(tiny_pipeline.build(Settings(dataset="tiny", label="cnt2")))
    r = post(client, endpoint_path(published), {"ExperimentName": "e"}, key)
    assert r.json()["PipelineEndpointVersion"] == "0"  # Azure numbers an endpoint's versions from 0
    publishing.set_default_version(published["endpoint_id"], 1)
    r = post(client, endpoint_path(published), {"ExperimentName": "e"}, key)
    assert r.json()["PipelineEndpointVersion"] == "1" and r.json()["PipelineId"] == second["pipeline_id"]


# ---- runs over HTTP --------------------------------------------------------------------------------------
def test_status_list_logs_metrics_and_cancel(client, published, key) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    run_id = post(client, endpoint_path(published), {"ExperimentName": "e"}, key).json()["Id"]
    assert client.get(f"{PREFIX}/{run_id}", headers=headers).json()["Status"]["StatusCode"] == "Queued"
    r = client.delete(f"{PREFIX}/{run_id}/Execution", headers=headers)
    assert r.json() == {"run_id": run_id, "status": "Canceled"}
    assert client.get(f"/runs/{run_id}", headers=headers).json()["status"] == "Canceled"
    assert run_queue.get_row(run_id)["state"] == "Canceled"

    record = runs.read_record(run_id) | {"status": "Completed", "metrics": {"rows": 40.0}}
    record["steps"] = [{"name": "count", "kind": "script", "status": "Completed"}]
    runs.write_record(run_id, record)
    (runs.run_folder(run_id) / "logs").mkdir()
    (runs.run_folder(run_id) / "logs" / "count.log").write_text("count: 40 rows\n")
    listed = client.get("/runs?status=Completed", headers=headers).json()["runs"]
    assert [r["run_id"] for r in listed] == [run_id]
    assert client.get(f"/runs/{run_id}/metrics", headers=headers).json()["metrics"] == {"rows": 40.0}
    assert client.get(f"/runs/{run_id}/logs", headers=headers).json()["logs"]["count"] == "count: 40 rows"
    assert client.get(f"/runs/{run_id}/logs/count", headers=headers).text == "count: 40 rows\n"
    assert client.get(f"/runs/{run_id}/logs/other", headers=headers).status_code == 404
    assert client.get("/runs?status=Done", headers=headers).status_code == 400
    assert client.get("/endpoints", headers=headers).json()["endpoints"][0]["default_version"] == 0


# ---- OpenAPI and Swagger UI (offline) ------------------------------------------------------------------
def test_openapi_and_offline_swagger_ui(client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.0")
    assert f"{PREFIX}/PipelineEndpointSubmit/Id/{{endpoint_id}}/{{version}}" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    html = client.get("/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in html and "/openapi.json" in html
    assert "cdn" not in html and "https://" not in html
    js = client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/health").json() == {"status": "ok"}


# ---- local deployments over HTTP -------------------------------------------------------------------------
def test_deployments_are_listed_with_their_uris_and_never_their_keys(client, key) -> None:
    from dataclasses import asdict

    from pipelines.local.serving import deployments
    from pipelines.local.workspace.keys import KeyStore

    record = deployments.LocalService(
        name="bike-api", model_name="bike-demand", model_version=2, entry_script="score.py", port=45678,
        workers=2, app_root="app", model_dir="model", scoring_timeout_ms=5000,
    )  # fmt: skip
    folder = deployments.service_dir("bike-api")
    folder.mkdir(parents=True)
    (folder / "service.json").write_text(json.dumps(asdict(record)))
    service_keys = KeyStore(folder / "keys.json").keys()
    headers = {"Authorization": f"Bearer {key}"}
    listed = client.get("/deployments", headers=headers)
    assert listed.status_code == 200
    (entry,) = listed.json()["deployments"]
    assert entry["name"] == "bike-api" and entry["model"] == "bike-demand:2" and entry["state"] == "Stopped"
    assert entry["scoring_uri"] == "http://127.0.0.1:45678/score" and entry["scoring_timeout_ms"] == 5000
    assert client.get("/deployments/bike-api", headers=headers).json() == entry
    assert all(k not in listed.text for k in service_keys.values())
    assert client.get("/deployments").status_code == 401
    missing = client.get("/deployments/nope", headers=headers)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]


@pytest.fixture
def published_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    from pipelines import batch_score

    return publish_on_tiny_data(batch_score.build, tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("version", "model"), [(2, "bike-demand:2"), ("3", "bike-demand:3"), (0, "bike-demand")]
)
def test_the_batch_pipelines_model_version_parameter_picks_the_model(
    client, published_batch, key, version, model
) -> None:
    body = {"ExperimentName": "e", "ParameterAssignments": {"model_version": version}}
    r = post(client, endpoint_path(published_batch), body, key)
    assert r.status_code == 200, r.text
    args = json.loads(run_queue.rows()[0]["args"])
    assert args[args.index("--model") + 1] == model
    assert runs.read_record(r.json()["Id"])["parameters"]["model_version"] == int(version)


@pytest.mark.parametrize("version", [-1, "x", 1.5])
def test_a_bad_model_version_is_400_and_nothing_runs(client, published_batch, key, version) -> None:
    body = {"ExperimentName": "e", "ParameterAssignments": {"model_version": version}}
    r = post(client, endpoint_path(published_batch), body, key)
    assert r.status_code == 400 and "model_version" in r.text and nothing_queued()


def test_a_run_list_limit_below_one_is_400(client, key) -> None:
    r = client.get("/runs?limit=-5", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400 and "limit" in r.json()["error"]["message"]
