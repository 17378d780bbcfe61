"""The azure-v2 backend against azure-ai-ml with only its HTTP transport faked: the REST requests it sends."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.backends import load_backend, targets
from pipelines.backends.azure_v2 import AzureV2Backend
from pipelines.errors import UserError
from tests.backends.azure_v2_transport import ARM, TOKEN, FakeTransport, StaticCredential, online_endpoint


def _backend(answer: Any) -> tuple[AzureV2Backend, FakeTransport]:
    from azure.ai.ml import MLClient

    transport = FakeTransport(answer)
    client = MLClient(StaticCredential(), "sub", "rg", "ws", transport=transport)
    return AzureV2Backend(client=client), transport


def _endpoint_or_keys(method: str, url: str, body: Any) -> tuple[int, Any]:
    if url.split("?")[0].endswith("/listKeys"):
        return 200, {"primaryKey": "key-one", "secondaryKey": "key-two"}
    if url.split("?")[0].endswith("/regenerateKeys"):
        return 200, None
    if "/onlineEndpoints/bike-svc" in url:
        return 200, online_endpoint("bike-svc")
    if url.split("?")[0].endswith("/onlineEndpoints"):
        return 200, {"value": [online_endpoint("bike-svc"), online_endpoint("other")]}
    return 404, {"error": {"code": "NotFound", "message": url}}


def test_azure_v2_is_a_target_of_publish_run_and_deploy() -> None:
    assert "azure-v2" in targets() and "azure-v2" in targets("deploy")
    assert isinstance(load_backend("azure-v2"), AzureV2Backend)


def test_keys_are_read_from_the_endpoints_list_keys() -> None:
    backend, transport = _backend(_endpoint_or_keys)
    keys = backend.deployments().keys("bike-svc")
    assert keys == {"primary": "key-one", "secondary": "key-two"}
    posts = [r for r in transport.requests if r.method == "POST"]
    assert [r.url.split("?")[0] for r in posts] == [
        f"https://management.azure.com{ARM}/onlineEndpoints/bike-svc/listKeys"
    ]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in transport.requests)


def test_regenerate_posts_the_key_type_then_reads_the_new_keys() -> None:
    backend, transport = _backend(_endpoint_or_keys)
    backend.deployments().keys("bike-svc", regenerate="secondary")
    regen = [r for r in transport.requests if r.url.split("?")[0].endswith("/regenerateKeys")]
    assert len(regen) == 1 and regen[0].method == "POST"
    # only the key type: azure-ai-ml's own begin_regenerate_keys would send the current key as keyValue
    assert regen[0].body == {"keyType": "Secondary"}
    assert transport.requests[-1].url.split("?")[0].endswith("/listKeys")  # read after regenerating


def test_list_and_show_read_online_endpoints() -> None:
    backend, transport = _backend(_endpoint_or_keys)
    rows = backend.deployments().list()
    assert [r["name"] for r in rows] == ["bike-svc", "other"]
    assert rows[0]["auth_mode"] == "key" and rows[0]["traffic"] == {"blue": 100}
    assert rows[0]["scoring_uri"].endswith("/score")
    assert transport.requests[0].method == "GET"
    assert transport.requests[0].url.split("?")[0] == f"https://management.azure.com{ARM}/onlineEndpoints"


def test_delete_sends_delete_for_the_endpoint() -> None:
    def answer(method: str, url: str, body: Any) -> tuple[int, Any]:
        if method == "DELETE":
            return 200, None
        return _endpoint_or_keys(method, url, body)

    backend, transport = _backend(answer)
    backend.deployments().delete("bike-svc")
    deletes = [r for r in transport.requests if r.method == "DELETE"]
    assert [r.url.split("?")[0] for r in deletes] == [
        f"https://management.azure.com{ARM}/onlineEndpoints/bike-svc"
    ]


def test_stop_is_refused_with_what_to_do_instead() -> None:
    backend, _ = _backend(_endpoint_or_keys)
    with pytest.raises(UserError, match="cannot be stopped"):
        backend.deployments().stop("bike-svc")


def test_no_workspace_is_a_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from pipelines.backends import azure_v2

    monkeypatch.setattr("pipelines.azure.workspace.workspace_details", lambda: None)
    with pytest.raises(UserError, match="no Azure ML workspace is configured"):
        azure_v2.ml_client()


def test_deleting_a_schedule_sends_delete() -> None:
    def answer(method: str, url: str, body: Any) -> tuple[int, Any]:
        return (200, None) if method == "DELETE" else (404, {"error": {"code": "NotFound", "message": url}})

    backend, transport = _backend(answer)
    row = backend.schedules().set_status("amlops-train-schedule", "delete")
    assert row["status"] == "Deleted"
    assert [(r.method, r.url.split("?")[0]) for r in transport.requests] == [
        ("DELETE", f"https://management.azure.com{ARM}/schedules/amlops-train-schedule")
    ]


def test_schedule_create_puts_a_recurrence_that_starts_later_on_the_published_component(
    tmp_path: Any,
) -> None:
    """A JobSchedule for version 3 of the published pipeline component: the REST body's trigger and job."""
    import datetime as dt

    import yaml
    from azureml.pipeline.core.schedule import ScheduleRecurrence

    from pipelines import train
    from pipelines.backends import ScheduleRequest
    from pipelines.settings import Settings
    from pipelines.v2.export import export_definition

    export_definition(train.build(Settings()), tmp_path / "v2")
    inputs = yaml.safe_load((tmp_path / "v2/amlops-train.component.yml").read_text())["inputs"]
    component_id = f"{ARM}/components/amlops_train_pipeline/versions/3"
    spec = {"name": "amlops_train_pipeline", "version": "3", "type": "pipeline", "inputs": inputs, "jobs": {}}

    def answer(method: str, url: str, body: Any) -> tuple[int, Any]:
        path = url.split("?")[0]
        if method == "GET" and path.endswith("/components/amlops_train_pipeline/versions/3"):
            return 200, {"id": component_id, "name": "3", "properties": {"componentSpec": spec}}
        if method == "PUT" and path.endswith("/schedules/nightly"):
            body["properties"]["isEnabled"] = True
            return 200, {**body, "id": f"{ARM}/schedules/nightly", "name": "nightly"}
        return 404, {"error": {"code": "NotFound", "message": url}}

    backend, transport = _backend(answer)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    recurrence = ScheduleRecurrence(
        frequency="Week", interval=2, hours=[2], minutes=[30], week_days=["Monday"]
    )
    request = ScheduleRequest(name="nightly", recurrence=recurrence, endpoint="amlops-train", version=3,
                              parameters={"cutoff_date": "2012-06-30", "training_dataset": "https://example.org/bike.csv"},
                              experiment_name="nightly")  # fmt: skip
    row = backend.schedules().create(request)
    assert row["status"] == "Active" and row["frequency"] == "week"
    put = transport.requests[-1]
    assert put.method == "PUT"
    trigger = put.body["properties"]["trigger"]
    assert (
        trigger["triggerType"] == "Recurrence" and trigger["frequency"] == "week" and trigger["interval"] == 2
    )
    assert trigger["schedule"] == {"hours": [2], "minutes": [30], "weekDays": ["monday"]}
    assert trigger["timeZone"] == "UTC"
    assert dt.datetime.fromisoformat(trigger["startTime"]) > before  # creating it never runs at once
    job = put.body["properties"]["action"]["jobDefinition"]
    assert job["componentId"] == component_id and job["experimentName"] == "nightly"
    assert job["inputs"]["cutoff_date"] == {"value": "2012-06-30", "jobInputType": "literal"}
