"""conda.yml and environments/*.yml repeat pyproject.toml's pins exactly."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
REQ = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)$")


def _pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        match = REQ.match(line.strip())
        if match:
            out[match.group(1).lower().replace("_", "-")] = match.group(3)
    return out


def _conda_pip_lines(path: Path) -> list[str]:
    spec = yaml.safe_load(path.read_text())
    return [line for dep in spec["dependencies"] if isinstance(dep, dict) for line in dep.get("pip", [])]


PYPROJECT = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
# pinned only in the Azure environments: what Azure's inference images expect, not used on this machine
AZURE_IMAGE_ONLY = {"azureml-defaults": "1.62.0"}
LOCK = _pins((ROOT / "requirements-lock.txt").read_text().splitlines())


def test_pyproject_pins_every_dependency_exactly() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(PYPROJECT) == len(deps), "every dependency in pyproject.toml must be pinned with =="


@pytest.mark.parametrize(
    "path", [ROOT / "conda.yml", *sorted((ROOT / "environments").glob("*.yml"))], ids=lambda p: p.name
)
def test_conda_specs_agree_with_pyproject(path: Path) -> None:
    lines = [line for line in _conda_pip_lines(path) if not line.startswith("-e")]
    pins = _pins(lines)
    assert len(pins) == len(lines), f"{path.name}: every pip line must be NAME==VERSION"
    expected = {**AZURE_IMAGE_ONLY, **PYPROJECT}
    mismatched = {name: (v, expected.get(name)) for name, v in pins.items() if expected.get(name) != v}
    assert not mismatched, f"{path.name} disagrees with pyproject.toml: {mismatched}"


def test_conda_yml_holds_all_of_pyproject() -> None:
    assert set(_pins(_conda_pip_lines(ROOT / "conda.yml"))) == set(PYPROJECT)


def test_lock_file_agrees_with_pyproject() -> None:
    mismatched = {n: (v, LOCK.get(n)) for n, v in PYPROJECT.items() if LOCK.get(n) != v}
    assert not mismatched, f"requirements-lock.txt disagrees with pyproject.toml: {mismatched}"
