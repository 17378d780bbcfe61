"""Options of ``deploy`` that name Azure things are refused locally before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.deploy import main as deploy
from pipelines.errors import UserError


def test_environment_is_refused_locally_but_the_setting_is_azures_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.backends import DeployRequest
    from pipelines.backends.local import LocalDeployments

    monkeypatch.setenv("AMLOPS_HOME", str(tmp_path / "home"))
    argv = [
        "--target",
        "local",
        "--name",
        "bike-svc",
        "--model",
        "bike-demand:1",
        "--environment",
        "AzureML-AutoML",
    ]
    assert deploy(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --environment names an Azure ML Environment (locally, score.py runs in this project's"
        " environment; leave --environment out)"
    )
    assert not (tmp_path / "home" / "deployments" / "bike-svc").exists()
    monkeypatch.setenv(
        "AMLOPS_DEPLOY_ENVIRONMENT", "AzureML-AutoML"
    )  # the setting: read by Azure targets only
    request = DeployRequest("bike-demand", 1, "bike-svc")
    assert request.environment is None and request.environment_name() == "AzureML-AutoML"
    with pytest.raises(UserError) as caught:  # gets past the option check to the (empty) registry
        LocalDeployments().deploy(request)
    assert "--environment" not in str(caught.value) and "bike-demand" in str(caught.value)
