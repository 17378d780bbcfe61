"""Workspace configuration and authentication, offline: the auth classes' network calls are faked."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from azureml.core.authentication import (
    AzureCliAuthentication,
    InteractiveLoginAuthentication,
    ServicePrincipalAuthentication,
)

from pipelines.azure import workspace
from pipelines.errors import UserError

DETAILS = {"subscription_id": "sub-1", "resource_group": "rg-1", "workspace_name": "ws-1"}
ENV_NAMES = workspace.ENV_KEYS + workspace.SP_KEYS + ("AZUREML_CONFIG",)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No workspace settings from the machine: empty cwd and project root, no variables, no network."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "cwd"
    root = tmp_path / "project"
    cwd.mkdir()
    root.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(workspace, "PROJECT_ROOT", root)

    def blocked(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    return tmp_path


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_nothing_configured_means_local_and_get_workspace_says_how_to_configure():
    assert workspace.workspace_details() is None
    assert workspace.is_configured() is False
    with pytest.raises(UserError, match="no Azure ML workspace is configured") as err:
        workspace.get_workspace()
    assert "AZUREML_SUBSCRIPTION_ID" in err.value.hint


def test_environment_variables_give_the_workspace(monkeypatch):
    set_env(
        monkeypatch,
        AZUREML_SUBSCRIPTION_ID="sub-1",
        AZUREML_RESOURCE_GROUP="rg-1",
        AZUREML_WORKSPACE_NAME="ws-1",
    )
    assert workspace.workspace_details() == DETAILS
    assert workspace.is_configured() is True


def test_incomplete_environment_variables_name_what_is_missing(monkeypatch):
    set_env(monkeypatch, AZUREML_SUBSCRIPTION_ID="sub-1")
    with pytest.raises(UserError) as err:
        workspace.workspace_details()
    assert err.value.message == (
        "Azure workspace configuration is incomplete: AZUREML_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME not set"
    )
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "where", ["cwd/config.json", "cwd/.azureml/config.json", "project/config.json", "explicit"]
)
def test_config_json_is_found_where_azure_ml_puts_it(monkeypatch, isolated, where):
    path = isolated / ("elsewhere/my-ws.json" if where == "explicit" else where)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(DETAILS | {"extra": "ignored"}))
    if where == "explicit":
        monkeypatch.setenv("AZUREML_CONFIG", str(path))
    assert workspace.config_file() == path
    assert workspace.workspace_details() == DETAILS


def test_environment_variables_win_over_config_json(monkeypatch, isolated):
    (isolated / "cwd" / "config.json").write_text(json.dumps(DETAILS))
    set_env(
        monkeypatch,
        AZUREML_SUBSCRIPTION_ID="sub-2",
        AZUREML_RESOURCE_GROUP="rg-2",
        AZUREML_WORKSPACE_NAME="ws-2",
    )
    assert workspace.workspace_details() == {
        "subscription_id": "sub-2",
        "resource_group": "rg-2",
        "workspace_name": "ws-2",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            json.dumps({"subscription_id": "sub-1", "resource_group": "rg-1"}),
            "is incomplete: workspace_name missing",
        ),
        (
            json.dumps({"subscription_id": "", "resource_group": "rg-1", "workspace_name": "w"}),
            "subscription_id missing",
        ),
        ("{not json", "is not valid JSON"),
    ],
)
def test_bad_config_json_is_a_one_line_user_error(isolated, content, message):
    (isolated / "cwd" / "config.json").write_text(content)
    with pytest.raises(UserError, match=message) as err:
        workspace.workspace_details()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("target", ["azure", "auto"])
def test_cli_publish_with_incomplete_config_exits_2_with_one_line(monkeypatch, capsys, target):
    from pipelines import train

    set_env(monkeypatch, AZUREML_SUBSCRIPTION_ID="sub-1", AZUREML_WORKSPACE_NAME="ws-1")
    assert train.main(["publish", "--target", target]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "error: Azure workspace configuration is incomplete: AZUREML_RESOURCE_GROUP not set "
        "(set all of AZUREML_SUBSCRIPTION_ID, AZUREML_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME or use a config.json)"
    ]
    assert "Traceback" not in captured.err and captured.out == ""


def test_service_principal_from_the_environment_comes_first(monkeypatch):
    tried: list[str] = []
    monkeypatch.setattr(AzureCliAuthentication, "__init__", lambda self, cloud=None: tried.append("cli"))
    set_env(
        monkeypatch, AZURE_TENANT_ID="tenant-1", AZURE_CLIENT_ID="client-1", AZURE_CLIENT_SECRET="secret-1"
    )
    auth = workspace.authentication()
    assert type(auth) is ServicePrincipalAuthentication
    assert (auth._tenant_id, auth._service_principal_id, auth._service_principal_password) == (
        "tenant-1", "client-1", "secret-1",
    )  # fmt: skip
    assert tried == []


def test_incomplete_service_principal_is_a_user_error(monkeypatch):
    set_env(monkeypatch, AZURE_TENANT_ID="tenant-1", AZURE_CLIENT_SECRET="secret-1")
    with pytest.raises(UserError, match="service principal settings incomplete: AZURE_CLIENT_ID not set"):
        workspace.authentication()


def test_azure_cli_login_is_used_when_it_yields_a_token(monkeypatch):
    tried: list[str] = []
    monkeypatch.setattr(AzureCliAuthentication, "__init__", lambda self, cloud=None: tried.append("cli"))
    monkeypatch.setattr(
        AzureCliAuthentication, "get_authentication_header",
        lambda self: tried.append("cli token") or {"Authorization": "Bearer cli"},
    )  # fmt: skip
    monkeypatch.setattr(
        InteractiveLoginAuthentication, "__init__", lambda self, **kw: tried.append("interactive")
    )
    auth = workspace.authentication()
    assert type(auth) is AzureCliAuthentication
    assert tried == ["cli", "cli token"]


@pytest.mark.parametrize("cli_failure", ["not installed", "not logged in"])
def test_interactive_login_is_the_last_resort(monkeypatch, cli_failure):
    from azureml.exceptions import AuthenticationException

    tried: list[Any] = []
    if cli_failure == "not logged in":
        monkeypatch.setattr(AzureCliAuthentication, "__init__", lambda self, cloud=None: tried.append("cli"))

        def no_token(self):
            tried.append("cli token")
            raise AuthenticationException("Please run 'az login' to setup account.")

        monkeypatch.setattr(AzureCliAuthentication, "get_authentication_header", no_token)
    else:

        def not_installed(self, cloud=None):
            raise AuthenticationException("azure-cli package is not installed.")  # as the SDK says it

        monkeypatch.setattr(AzureCliAuthentication, "__init__", not_installed)
    monkeypatch.setattr(
        InteractiveLoginAuthentication, "__init__", lambda self, **kw: tried.append(("interactive", kw))
    )
    auth = workspace.authentication()
    assert type(auth) is InteractiveLoginAuthentication
    expected_cli = ["cli", "cli token"] if cli_failure == "not logged in" else []
    assert tried == [*expected_cli, ("interactive", {})]


def test_get_workspace_builds_the_sdk_workspace_with_config_and_auth(monkeypatch, isolated):
    import azureml.core.workspace as workspace_module
    from azureml.core import Workspace

    (isolated / "cwd" / "config.json").write_text(json.dumps(DETAILS))
    set_env(
        monkeypatch, AZURE_TENANT_ID="tenant-1", AZURE_CLIENT_ID="client-1", AZURE_CLIENT_SECRET="secret-1"
    )
    looked_up: list[tuple[Any, ...]] = []
    monkeypatch.setattr(workspace_module._commands, "get_workspace", lambda *args: looked_up.append(args))

    ws = workspace.get_workspace()
    assert type(ws) is Workspace
    assert (ws.subscription_id, ws.resource_group, ws.name) == ("sub-1", "rg-1", "ws-1")
    [(auth, subscription_id, resource_group, name, *_)] = looked_up
    assert (subscription_id, resource_group, name) == ("sub-1", "rg-1", "ws-1")
    assert type(auth) is ServicePrincipalAuthentication and auth._service_principal_id == "client-1"
