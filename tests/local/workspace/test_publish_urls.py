"""Publishing prints the running workspace service's URLs (its real port), not the default port's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def test_publish_prints_the_running_services_port(
    amlops_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import batch_score, train
    from pipelines.local.workspace import publishing

    monkeypatch.delenv("AMLOPS_SERVICE_URL", raising=False)
    assert publishing.service_url() == publishing.DEFAULT_SERVICE_URL  # no service running
    (amlops_home / "service").mkdir(exist_ok=True)
    info = {"pid": os.getpid(), "url": "http://127.0.0.1:40123", "workers": 1}
    (amlops_home / "service" / "service.json").write_text(json.dumps(info))
    assert train.main(["publish", "--target", "local", "--no-schedule", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["endpoint_url"].startswith("http://127.0.0.1:40123/pipelines/")
    assert batch_score.main(["publish", "--target", "local", "--no-schedule", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["endpoint_url"].startswith("http://127.0.0.1:40123/pipelines/")
    monkeypatch.setenv("AMLOPS_SERVICE_URL", "http://127.0.0.1:40124/")
    assert publishing.service_url() == "http://127.0.0.1:40124"
