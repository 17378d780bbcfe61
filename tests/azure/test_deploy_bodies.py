"""The deployment request bodies the SDK builds offline from this project's InferenceConfig and
deployment configurations (``Model.deploy`` sends these); only the upload of score.py's folder is faked."""

from __future__ import annotations

import json
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

    service = configured_fake(monkeypatch, tmp_path)
    uploads: list[str] = []

    def upload_dependency(workspace, path, create_tar=False, arc_name=None, show_output=False):
        uploads.append(str(path))
        return f"aml://artifact/{Path(path).name}", Path(path).name

    monkeypatch.setattr(model_module, "upload_dependency", upload_dependency)
    workspace = get_workspace()
    workspace.uploads = uploads
    workspace.service = service
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


# --- a model Azure AutoML trained: score.py served in a copy of the curated AzureML-AutoML environment ---


@pytest.fixture
def mms(ws: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The model GET and the service POST of Model.deploy, answered here; the bodies are the SDK's own."""
    from azureml._restclient.models.model import Model as ModelDto
    from azureml._restclient.models_client import ModelsClient
    from azureml.core.webservice import Webservice

    sent: dict[str, Any] = {}

    def get_by_id(client, model_id):
        name, version = model_id.split(":")
        return ModelDto(name=name, url=f"aml://asset/{name}", mime_type="application/octet-stream",
                        id=model_id, version=int(version), datasets=[])  # fmt: skip

    class Deployed:
        def __init__(self, name: str, payload: dict[str, Any]) -> None:
            self.name, self.compute_type, self.state = name, payload["computeType"], "Healthy"
            self.scoring_uri = f"http://{name}.westeurope.azurecontainer.io/score"
            self.auth_enabled = payload["authEnabled"]

        def wait_for_deployment(self, show_output: bool = False) -> None:
            pass

    def validate_name(workspace, name):  # MMS's name check: an error body for a service that exists
        if name in sent.setdefault("services", set()):
            return json.dumps({"error": {"message": f"Service {name} already exists in this workspace."}})
        return None

    def deploy_webservice(workspace, name, payload, overwrite, webservice_class, show_output=False):
        Webservice.check_for_existing_webservice(workspace, name, overwrite)  # the SDK's own first check
        sent["payload"], sent["overwrite"] = payload, overwrite
        sent.setdefault("services", set()).add(name)
        return Deployed(name, payload)

    monkeypatch.setattr(Webservice, "_request_validate_service_name", staticmethod(validate_name))
    monkeypatch.setattr(ModelsClient, "get_by_id", get_by_id)
    monkeypatch.setattr(Webservice, "_deploy_webservice", staticmethod(deploy_webservice))
    return sent


def _pip(env: dict[str, Any]) -> list[str]:
    return next(d for d in env["python"]["condaDependencies"]["dependencies"] if isinstance(d, dict))["pip"]


def test_deploy_environment_serves_score_py_in_a_copy_of_the_curated_automl_environment(ws, mms, capsys):
    from pipelines.deploy import main
    from tests.azure.fake import curated_automl_environment

    argv = ["--target", "aci", "--name", "bike-svc", "--model", "bike-demand:3", "--environment", "AzureML-AutoML",
            "--scoring-timeout-ms", "30000", "--cors-origins", "https://app.example"]  # fmt: skip
    assert main(argv) == 0
    image = mms["payload"]["environmentImageRequest"]
    assert image["modelIds"] == ["bike-demand:3"] and str(PROJECT_ROOT / "scoring") in ws.uploads
    env = image["environment"]
    # a copy under the project's name: a curated AzureML-* environment may not be changed or registered
    assert env["name"] == "amlops-inference-AzureML-AutoML" and env["version"] is None
    assert "azureml-train-automl-runtime==1.62.0" in _pip(env)  # AutoML's runtime, not inference.yml's pins
    assert _pip(env) != inference_pins()
    variables = env["environmentVariables"]
    assert variables["AZUREML_ENTRY_SCRIPT"] == "scoring/score.py"
    assert (variables["SCORING_TIMEOUT_MS"], variables["AML_CORS_ORIGINS"]) == (
        "30000",
        "https://app.example",
    )
    assert int(variables["WORKER_TIMEOUT"]) * 1000 > 30000
    assert variables["EXAMPLE_ENV_VAR"] == "EXAMPLE_VALUE"  # the curated environment's own are kept
    assert ("environment.get", "AzureML-AutoML") in ws.service.calls
    assert (
        "environment.register" not in ws.service.names()
    )  # the curated one is neither changed nor registered
    curated = ws.service.curated_environments["AzureML-AutoML"]
    assert curated == curated_automl_environment() and "SCORING_TIMEOUT_MS" not in str(curated)
    assert mms["payload"]["computeType"] == "ACI" and mms["payload"]["authEnabled"] is True


def test_the_deploy_environment_setting_is_the_default_and_inference_yml_without_it(
    ws, mms, monkeypatch: pytest.MonkeyPatch
):
    from pipelines.deploy import main

    assert main(["--target", "aci", "--name", "bike-svc", "--model", "bike-demand:3"]) == 0
    assert mms["payload"]["environmentImageRequest"]["environment"]["name"] == "amlops-inference"
    assert _pip(mms["payload"]["environmentImageRequest"]["environment"]) == inference_pins()
    monkeypatch.setenv("AMLOPS_DEPLOY_ENVIRONMENT", "AzureML-AutoML")
    assert main(["--target", "aci", "--name", "bike-svc2", "--model", "bike-demand:3"]) == 0
    env = mms["payload"]["environmentImageRequest"]["environment"]
    assert env[
        "name"
    ] == "amlops-inference-AzureML-AutoML" and "azureml-train-automl-runtime==1.62.0" in _pip(env)


def test_a_deploy_environment_the_workspace_lacks_is_one_line_before_anything_is_deployed(ws, mms, capsys):
    from pipelines.deploy import main

    assert (
        main(["--target", "aci", "--name", "bike-svc", "--model", "bike-demand:3", "--environment", "nope"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(
        "error: cannot get the Environment 'nope' from the workspace: Environment nope NotFound ("
    )
    assert "Traceback" not in err and "payload" not in mms


def test_a_model_update_keeps_the_services_automl_environment_copy(ws, mms):
    from azureml.core import Environment

    from pipelines.azure import deploy

    class Service:  # what Azure returns for a service deployed in the copy, with its timeout
        environment = Environment._deserialize_and_add_to_object(
            {
                **Environment._serialize_to_dict(deploy.workspace_environment(ws, "AzureML-AutoML")),
                "version": "1",
            }
        )
        environment.environment_variables = {
            **environment.environment_variables,
            "SCORING_TIMEOUT_MS": "30000",
        }

        def update(self, **kwargs: Any) -> None:
            self.updated = kwargs

        def wait_for_deployment(self, show_output: bool = False) -> None:
            pass

    service = Service()
    deploy.update_model(ws, service, "bike-demand", 4)
    assert [m.id for m in service.updated["models"]] == ["bike-demand:4"]
    body = service.updated["inference_config"]._build_environment_image_request(ws, ["bike-demand:4"])
    env = body["environment"]
    assert (env["name"], env["version"]) == (
        "amlops-inference-AzureML-AutoML",
        None,
    )  # not back to inference.yml
    assert "azureml-train-automl-runtime==1.62.0" in _pip(env)
    assert env["environmentVariables"]["SCORING_TIMEOUT_MS"] == "30000"


def test_score_py_imports_only_what_the_curated_automl_environment_has():
    """score.py (and input_rules.py beside it) import only the standard library and packages AutoML's curated
    environment installs: numpy, pandas, inference-schema, azureml-defaults (the inference server, azureml-core)
    and MLflow; anything more would fail init() in a deployment made with --environment AzureML-AutoML."""
    import ast
    import sys

    in_automl_environment = {"numpy", "pandas", "inference_schema", "azureml", "azureml_inference_server_http", "mlflow"}  # fmt: skip
    beside = {"input_rules"}
    imported: set[str] = set()
    for name in ("score.py", "input_rules.py"):
        tree = ast.parse((PROJECT_ROOT / "scoring" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"} - beside
    assert third_party <= in_automl_environment, third_party - in_automl_environment
    assert {"numpy", "pandas", "inference_schema", "mlflow"} <= third_party  # the check reads the imports


def test_an_existing_service_is_refused_without_overwrite_in_one_line(ws, mms, capsys):
    from pipelines.deploy import main

    argv = ["--target", "aci", "--name", "bike-svc", "--model", "bike-demand:3"]
    assert main(argv) == 0
    first = mms["payload"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1] == (
        "error: Azure ML refused to deploy 'bike-svc': Service bike-svc already exists in this workspace."
        " (pass --overwrite to replace it, or delete it first)"
    )
    assert mms["payload"] is first  # nothing sent
    assert main([*argv, "--overwrite"]) == 0 and mms["overwrite"] is True and mms["payload"] is not first
