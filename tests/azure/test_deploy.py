"""The Azure deployment path, offline: real SDK v1 configuration objects; only the service calls are faked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azureml.core.model import InferenceConfig, Model
from azureml.core.webservice import AciWebservice, AksWebservice

from pipelines.azure import deploy as azure
from pipelines.deploy import main as deploy_main
from pipelines.errors import UserError
from pipelines.settings import PROJECT_ROOT


class FakeService:
    """Stands in for the Webservice that Azure would return (state, URIs, keys, update, logs)."""

    def __init__(self, name: str, compute_type: str = "ACI", token: bool = False) -> None:
        self.name = name
        self.compute_type = compute_type
        self.state = "Healthy"
        self.scoring_uri = f"http://{name}.eastus.azurecontainer.io/score"
        self.swagger_uri = f"http://{name}.eastus.azurecontainer.io/swagger.json"
        self.auth_enabled = not token
        self.token_auth_enabled = token
        self.calls: list[tuple[str, Any]] = []
        self.keys = ["p1", "s1"]

    def wait_for_deployment(self, show_output: bool = False) -> None:
        self.calls.append(("wait_for_deployment", show_output))

    def get_keys(self) -> tuple[str, str]:
        return tuple(self.keys)

    def regen_key(self, key: str) -> None:
        self.calls.append(("regen_key", key))
        self.keys[0 if key == "Primary" else 1] += "-new"

    def update(self, **kwargs: Any) -> None:
        self.calls.append(("update", kwargs))

    def get_logs(self) -> str:
        return "line 1\nline 2\n"

    def delete(self) -> None:
        self.calls.append(("delete", None))


@pytest.fixture
def fake_azure(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fake workspace; Model(ws, ...), Model.deploy and AksCompute(ws, ...) recorded instead of called."""
    recorded: dict[str, Any] = {"workspace": object(), "services": {}}

    def model_init(self: Model, workspace: Any, name: str | None = None, version: int | None = None) -> None:
        self.name, self.version, self.workspace = name, version, workspace

    def model_deploy(workspace: Any, name: str, models: list, **kwargs: Any) -> FakeService:
        recorded["deploy"] = {"workspace": workspace, "name": name, "models": models, **kwargs}
        compute = "AKS" if kwargs.get("deployment_target") is not None else "ACI"
        token = bool(getattr(kwargs["deployment_config"], "token_auth_enabled", False))
        service = recorded["services"][name] = FakeService(name, compute, token)
        return service

    class FakeAksCompute:
        def __init__(self, workspace: Any, name: str) -> None:
            self.workspace, self.name = workspace, name

    import azureml.core.compute

    monkeypatch.setattr(Model, "__init__", model_init)
    monkeypatch.setattr(Model, "deploy", staticmethod(model_deploy))
    monkeypatch.setattr(azureml.core.compute, "AksCompute", FakeAksCompute)
    monkeypatch.setattr("pipelines.azure.workspace.get_workspace", lambda: recorded["workspace"])
    monkeypatch.setattr(
        azure, "get_service", lambda ws, name: recorded["services"].setdefault(name, FakeService(name))
    )
    return recorded


def test_inference_config_runs_score_py_in_the_inference_environment() -> None:
    config = azure.inference_config()
    assert isinstance(config, InferenceConfig)
    assert config.entry_script == "score.py"
    assert Path(config.source_directory) == PROJECT_ROOT / "scoring"
    assert (Path(config.source_directory) / config.entry_script).is_file()
    assert config.environment.name == "amlops-inference"
    conda = config.environment.python.conda_dependencies.serialize_to_string()
    assert "azureml-inference-server-http" in conda and "inference-schema" in conda and "mlflow" in conda


def test_aci_config_has_key_auth_and_app_insights() -> None:
    config = azure.aci_config()
    assert config._webservice_type is AciWebservice
    assert config.auth_enabled is True and config.enable_app_insights is True
    assert config.cpu_cores == 1 and config.memory_gb == 1


@pytest.mark.parametrize(("token", "key_auth"), [(False, True), (True, False)])
def test_aks_config_uses_key_or_token_auth(token: bool, key_auth: bool) -> None:
    config = azure.aks_config(token_auth=token)
    assert config._webservice_type is AksWebservice
    assert config.auth_enabled is key_auth and config.token_auth_enabled is token
    assert config.enable_app_insights is True and config.autoscale_enabled is True


def test_deploy_to_aci_calls_model_deploy_with_the_real_objects(fake_azure: dict[str, Any]) -> None:
    service = azure.deploy(fake_azure["workspace"], "bike-demand", 3, "bike-aci")
    call = fake_azure["deploy"]
    assert call["workspace"] is fake_azure["workspace"] and call["name"] == "bike-aci"
    (model,) = call["models"]
    assert isinstance(model, Model) and (model.name, model.version) == ("bike-demand", 3)
    assert isinstance(call["inference_config"], InferenceConfig)
    assert (
        call["deployment_config"].auth_enabled is True
        and call["deployment_config"].enable_app_insights is True
    )
    assert call["deployment_target"] is None and call["overwrite"] is False
    assert ("wait_for_deployment", True) in service.calls


def test_deploy_to_aks_targets_the_cluster(fake_azure: dict[str, Any]) -> None:
    azure.deploy(fake_azure["workspace"], "bike-demand", None, "bike-aks", target="aks", aks_cluster="aks-1",
                 token_auth=True)  # fmt: skip
    call = fake_azure["deploy"]
    assert call["deployment_target"].name == "aks-1"
    assert call["deployment_config"]._webservice_type is AksWebservice
    assert (
        call["deployment_config"].token_auth_enabled is True
        and call["deployment_config"].auth_enabled is False
    )


def test_cli_sizes_and_scoring_timeout_reach_the_sdk_objects(
    fake_azure: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--model",
        "bike-demand:2",
        "--cpu-cores",
        "0.5",
        "--memory-gb",
        "2",
        "--scoring-timeout-ms",
        "90000",
    ]
    assert deploy_main(["--target", "aci", "--name", "bike-aci", *args, "--json"]) == 0
    aci = fake_azure["deploy"]
    assert (aci["deployment_config"].cpu_cores, aci["deployment_config"].memory_gb) == (0.5, 2)
    # ACI has no timeout setting: the inference server in the container reads it, and its gunicorn waits longer
    variables = aci["inference_config"].environment.environment_variables
    assert variables["SCORING_TIMEOUT_MS"] == "90000" and int(variables["WORKER_TIMEOUT"]) > 90
    aks_args = ["--target", "aks", "--aks-cluster", "aks-1", "--name", "bike-aks", "--max-replicas", "5"]
    assert deploy_main([*aks_args, *args, "--json"]) == 0
    config = fake_azure["deploy"]["deployment_config"]
    assert (config.cpu_cores, config.memory_gb, config.autoscale_max_replicas) == (0.5, 2, 5)
    assert config.scoring_timeout_ms == 90000  # AKS's own setting
    assert "SCORING_TIMEOUT_MS" not in (
        fake_azure["deploy"]["inference_config"].environment.environment_variables or {}
    )
    capsys.readouterr()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "aci", "--cpu-cores", "0"], "--cpu-cores must be positive"),
        (["--target", "aci", "--max-replicas", "2"], "--max-replicas applies to AKS"),
        (["--target", "aks", "--aks-cluster", "a", "--memory-gb", "-1"], "--memory-gb must be positive"),
        (["--target", "aci", "--scoring-timeout-ms", "0"], "--scoring-timeout-ms must be at least 1"),
        (["--target", "local", "--cpu-cores", "2"], "--cpu-cores applies to ACI and AKS"),
    ],
)
def test_cli_refuses_bad_sizes_before_deploying(
    fake_azure: dict[str, Any], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert deploy_main([*args, "--name", "svc"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert "deploy" not in fake_azure


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "aks"}, "cluster"),
        ({"target": "aci", "token_auth": True}, "token"),
        ({"target": "gke"}, "unknown Azure target"),
    ],
)
def test_deploy_refuses_impossible_combinations(
    fake_azure: dict[str, Any], kwargs: dict, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        azure.deploy(fake_azure["workspace"], "bike-demand", None, "svc", **kwargs)
    assert "deploy" not in fake_azure


def test_cli_deploys_to_aci_and_prints_uris(
    fake_azure: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = deploy_main(["--target", "aci", "--model", "bike-demand:2", "--name", "bike-aci", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["scoring_uri"].endswith("/score") and out["swagger_uri"].endswith("/swagger.json")
    assert out["auth"] == "key" and "keys" in out["keys"]
    assert fake_azure["deploy"]["models"][0].version == 2


def test_cli_keys_update_logs_delete_on_azure(
    fake_azure: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert deploy_main(["keys", "--target", "aci", "--name", "svc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"primary": "p1", "secondary": "s1"}
    assert deploy_main(["keys", "--target", "aci", "--name", "svc", "--regen", "secondary", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["secondary"] == "s1-new"
    assert deploy_main(["update", "--target", "aci", "--name", "svc", "--enable-app-insights"]) == 0
    assert deploy_main(["logs", "--target", "aci", "--name", "svc", "--tail", "1"]) == 0
    assert deploy_main(["delete", "--target", "aci", "--name", "svc"]) == 0
    out = capsys.readouterr().out
    assert "line 2" in out and "line 1" not in out
    service = fake_azure["services"]["svc"]
    assert ("regen_key", "Secondary") in service.calls
    assert ("update", {"enable_app_insights": True}) in service.calls and ("delete", None) in service.calls


def test_cli_update_model_sends_the_model_and_the_same_inference_config(
    fake_azure: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert deploy_main(["update", "--target", "aci", "--name", "svc", "--model", "bike-demand:4"]) == 0
    assert "now serves bike-demand:4" in capsys.readouterr().out
    ((verb, kwargs), wait) = fake_azure["services"]["svc"].calls
    (model,) = kwargs["models"]
    assert verb == "update" and isinstance(model, Model) and (model.name, model.version) == ("bike-demand", 4)
    assert isinstance(kwargs["inference_config"], InferenceConfig)
    assert kwargs["inference_config"].entry_script == "score.py" and wait == ("wait_for_deployment", True)
    assert deploy_main(["update", "--target", "aci", "--name", "svc"]) == 2  # nothing to update
    assert "nothing to update" in capsys.readouterr().err


def test_cors_origins_reach_the_inference_server_and_a_model_update_keeps_the_services_settings(
    fake_azure: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from azureml.core import Environment

    origins = ["--cors-origins", "https://app.example.com, http://localhost:3000"]
    assert (
        deploy_main(["--target", "aci", "--name", "svc", "--scoring-timeout-ms", "90000", *origins, "--json"])
        == 0
    )
    deployed = fake_azure["deploy"]["inference_config"].environment.environment_variables
    assert deployed["AML_CORS_ORIGINS"] == "https://app.example.com,http://localhost:3000"
    service = fake_azure["services"]["svc"]
    service.environment = Environment("amlops-inference")  # what Azure returns for the running service
    service.environment.environment_variables = {**deployed, "UNRELATED": "x"}
    assert deploy_main(["update", "--target", "aci", "--name", "svc", "--model", "bike-demand:4"]) == 0
    kwargs = next(args for verb, args in service.calls if verb == "update")
    variables = kwargs["inference_config"].environment.environment_variables
    assert {k: variables[k] for k in ("AML_CORS_ORIGINS", "SCORING_TIMEOUT_MS", "WORKER_TIMEOUT")} == {
        k: deployed[k] for k in ("AML_CORS_ORIGINS", "SCORING_TIMEOUT_MS", "WORKER_TIMEOUT")
    }  # an update used to drop them: the service lost its timeout
    assert "UNRELATED" not in variables
    capsys.readouterr()


@pytest.mark.parametrize(
    "origins", ["app.example.com", "https://app.example.com/path", "https://a.com,,https://b.com"]
)
def test_a_bad_cors_origin_is_refused_before_azure_is_reached(
    fake_azure: dict[str, Any], capsys: pytest.CaptureFixture[str], origins: str
) -> None:
    assert deploy_main(["--target", "aci", "--name", "svc", "--cors-origins", origins]) == 2
    assert "is not an origin" in capsys.readouterr().err
    assert "deploy" not in fake_azure


def test_cli_stop_is_local_only(fake_azure: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy_main(["stop", "--target", "aci", "--name", "svc"]) == 2
    assert "local services" in capsys.readouterr().err


def test_default_target_follows_the_workspace_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipelines import deploy
    from pipelines.azure import workspace

    monkeypatch.chdir(tmp_path)
    for key in workspace.ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(workspace, "config_file", lambda: None)
    assert deploy.default_target() == "local"
    for key in workspace.ENV_KEYS:
        monkeypatch.setenv(key, "x")
    assert deploy.default_target() == "aci"
