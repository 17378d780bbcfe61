"""Swagger UI on a local deployment, served offline from swagger-ui-bundle, rendered by headless Chromium."""

from __future__ import annotations

import html
import http.client
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks._model import shared_model_home, using_home
from pipelines.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")

SERVICE = "swagger-ui-test"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from pipelines.datasets import resolve
    from pipelines.local.serving import deployments

    shared = PROJECT_ROOT.parent / "shared" / "data"
    if not os.environ.get("AMLOPS_DATA_DIR") and (shared / "bike-no.csv").is_file():
        os.environ["AMLOPS_DATA_DIR"] = str(shared)
    home = shared_model_home(tmp_path_factory.getbasetemp(), resolve("bike-no"))
    with using_home(home):
        try:
            yield deployments.deploy("bike-demand", None, SERVICE, workers=1).describe()
        finally:
            if (deployments.service_dir(SERVICE) / "service.json").is_file():
                deployments.delete(SERVICE)


def render(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium (no network but 127.0.0.1)."""
    proc = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--virtual-time-budget=20000", "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
def test_swagger_ui_renders_the_scoring_operation_and_its_example(
    service: dict[str, Any], tmp_path: Path
) -> None:
    spec = requests.get(service["swagger_uri"], timeout=10).json()
    example = spec["definitions"]["ServiceInput"]["example"]["data"][0]
    dom = render(service["swagger_ui_uri"] + "#/default/RunMLService", tmp_path / "profile")
    text = html.unescape(re.sub(r"<[^>]+>", "", dom))
    assert 'data-path="/score"' in dom and "RunMLService" in dom
    assert "Run web service's model and get the prediction output" in text
    assert SERVICE in text and "Authorize" in text
    for column, value in example.items():  # the expanded operation shows the request example
        assert f'"{column}": {json_literal(value)}' in text
    assert '"result"' in text


def json_literal(value: Any) -> str:
    import json

    return json.dumps(value)


def test_swagger_ui_page_loads_nothing_from_outside(service: dict[str, Any]) -> None:
    page = requests.get(service["swagger_ui_uri"], timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(not s.startswith(("http:", "https:", "//")) for s in sources)
    assert 'url: "/swagger.json"' in page.text
    for source in sources:
        asset = requests.get(service["swagger_ui_uri"] + source.removeprefix("./"), timeout=10)
        assert asset.status_code == 200, source


def test_swagger_ui_redirects_and_refuses_paths_outside_its_folder(service: dict[str, Any]) -> None:
    base = service["swagger_ui_uri"].removesuffix("/")
    moved = requests.get(base, allow_redirects=False, timeout=10)
    assert moved.status_code == 301 and moved.headers["Location"] == "/swagger-ui/"
    conn = http.client.HTTPConnection("127.0.0.1", service["port"], timeout=10)
    conn.request("GET", "/swagger-ui/../../keys.json")
    resp = conn.getresponse()
    assert resp.status == 404 and b"primary" not in resp.read()
    conn.close()
