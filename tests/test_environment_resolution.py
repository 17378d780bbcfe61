"""Every environments/*.yml installs: pip's resolver on each file's pip section (dry run, nothing installed).

Needs the package index (marker ``network``); the three files resolve at once, each within a timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # services, the SDK's graph builder or the package index

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted((ROOT / "environments").glob("*.yml"))
TIMEOUT_SECONDS = 240  # each; about 15 s on a quiet machine, several times that on a busy one

# what each environment must end up with besides its own pins: the modules its jobs import on Azure
NEEDED = {
    "batch.yml": {"azureml-dataprep-rslex", "fusepy", "pandas", "pyarrow"},  # tabular dataset input
    "train.yml": {"azureml-dataprep-rslex", "fusepy"},  # dataset download/mount in the steps
    "inference.yml": {"azureml-defaults", "azureml-inference-server-http"},
}


def pip_section(path: Path) -> tuple[str, list[str]]:
    spec = yaml.safe_load(path.read_text())
    python = next(d for d in spec["dependencies"] if isinstance(d, str) and d.startswith("python="))
    pins = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    return python.removeprefix("python="), pins


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, dict[str, str]]]:
    """Each file's (exit status, pip's last output lines, {name: version} it would install)."""
    folder = tmp_path_factory.mktemp("resolve")
    running = {}
    for path in FILES:
        _, pins = pip_section(path)
        requirements = folder / f"{path.stem}.txt"
        requirements.write_text("\n".join(pins) + "\n")
        report = folder / f"{path.stem}.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--disable-pip-version-check", "--report", str(report), "-r", str(requirements)]  # fmt: skip
        running[path.name] = (
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            report,
        )
    out = {}
    for name, (process, report) in running.items():
        try:
            text, _ = process.communicate(timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            text = f"pip did not finish within {TIMEOUT_SECONDS} s"
        installs = {}
        if process.returncode == 0 and report.is_file():
            data = json.loads(report.read_text())
            installs = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in data["install"]}
        lines = [line for line in text.splitlines() if not line.startswith("WARNING: Location")]
        out[name] = (process.returncode, "\n".join(lines[-8:]), installs)
    return out


@pytest.mark.network
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_environment_resolves_with_its_pins(resolved, path: Path) -> None:
    python, pins = pip_section(path)
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}", "resolved for this interpreter"
    status, tail, installs = resolved[path.name]
    assert status == 0, f"{path.name} does not resolve:\n{tail}"
    for pin in pins:
        name, version = pin.split("==")
        assert installs[name.split("[")[0].lower()] == version, pin
    missing = NEEDED[path.name] - set(installs)
    assert not missing, f"{path.name} lacks {missing}"
