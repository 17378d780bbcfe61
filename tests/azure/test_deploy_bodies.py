"""The deployment request bodies the SDK builds offline from this project's InferenceConfig and
deployment configurations (``Model.deploy`` sends these); only the upload of score.py's folder is faked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.settings import PROJECT_ROOT
from tests.azure.fake import configured_fake


@pytest.fixture
def ws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    import azureml.core.model as model_module

    from pipelines.azure.workspace import get_workspace

    configured_fake(monkeypatch, tmp_path)
    uploads: list[str] = []

    def upload_dependency(workspace, path, create_tar=False, arc_name=None, show_output=False):
        uploads.append(str(path))
        return f"aml://artifact/{Path(path).name}", Path(path).name

    monkeypatch.setattr(model_module, "upload_dependency", upload_dependency)
    workspace = get_workspace()
    workspace.uploads = uploads
    return workspace


def inference_pins() -> list[str]:
    spec = yaml.safe_load((PROJECT_ROOT / "environments" / "inference.yml").read_text())
    return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))


def image_request(ws: Any, **kwargs: Any) -> dict[str, Any]:
    from pipelines.azure import deploy

    return deploy.inference_config(**kwargs)._build_environment_image_request(ws, ["bike-demand:3"])


def test_the_image_request_carries_score_py_its_folder_and_the_inference_environment(ws):
    body = image_request(ws, scoring_timeout_ms=30000, cors_origins="https://app.example")
    assert body["modelIds"] == ["bike-demand:3"]
    assert str(PROJECT_ROOT / "scoring") in ws.uploads
    env = body["environment"]
    assert env["name"] == "amlops-inference"
    pip = next(d for d in env["python"]["condaDependencies"]["dependencies"] if isinstance(d, dict))["pip"]
    assert pip == inference_pins() and "azureml-defaults==1.62.0" in pip
    variables = env["environmentVariables"]
    assert (
        variables["AZUREML_ENTRY_SCRIPT"] == "scoring/score.py"
    )  # set by the SDK, as ours, on the Environment
    assert (variables["SCORING_TIMEOUT_MS"], variables["AML_CORS_ORIGINS"]) == (
        "30000",
        "https://app.example",
    )
    assert int(variables["WORKER_TIMEOUT"]) * 1000 > 30000


def test_aci_and_aks_create_bodies(ws):
    from pipelines.azure import deploy

    request = image_request(ws)
    aci = deploy.aci_config(cpu_cores=2, memory_gb=3)._build_create_payload("bike-svc", request)
    assert (aci["name"], aci["computeType"], aci["authEnabled"], aci["appInsightsEnabled"]) == (
        "bike-svc", "ACI", True, True,
    )  # fmt: skip
    assert aci["containerResourceRequirements"]["cpu"] == 2
    assert aci["containerResourceRequirements"]["memoryInGB"] == 3
    assert aci["environmentImageRequest"]["environment"]["name"] == "amlops-inference"

    aks = deploy.aks_config(token_auth=True, autoscale_max_replicas=5, scoring_timeout_ms=45000)
    body = aks._build_create_payload("bike-aks", request)
    assert (body["computeType"], body["authEnabled"], body["aadAuthEnabled"]) == ("AKS", False, True)
    assert body["scoringTimeoutMs"] == 45000 and body["autoScaler"]["maxReplicas"] == 5
