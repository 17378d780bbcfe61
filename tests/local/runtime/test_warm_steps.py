"""Warm step hosts: a script runs in a pre-started interpreter exactly as ``python SCRIPT ARGS`` would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.local.runtime import warm

PROBE = textwrap.dedent(
    """
    import json, os, sys
    import helper

    print(json.dumps({
        "name": __name__,
        "file": __file__,
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "foo": os.environ.get("FOO"),
        "stdin": sys.stdin.read(),
        "helper": helper.VALUE,
        "project_visible": "pipelines" in sys.modules,
    }, sort_keys=True))
    code = int(sys.argv[1])
    if code < 0:
        raise RuntimeError("probe failed on purpose")
    sys.exit(code)
    """
)


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "probe.py").write_text(PROBE)
    (folder / "helper.py").write_text("import numpy\nfrom pandas import api\nVALUE = 42\n")
    return folder


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _cold(source: Path, args: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "probe.py", *args], cwd=source, env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def _warm(source: Path, args: list[str], env: dict[str, str]) -> tuple[int, str]:
    host = warm.WarmHost.for_script(source / "probe.py", {k: v for k, v in env.items() if k != "FOO"})
    assert host is not None
    proc = host.launch(["probe.py", *args], source, env)
    assert proc is not None
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


def test_preload_follows_local_modules_and_keeps_to_known_libraries(source: Path) -> None:
    assert warm.preload_modules(source / "probe.py") == ["numpy", "pandas", "pandas.api"]


def test_a_local_package_shadowing_a_library_is_not_preloaded(source: Path) -> None:
    (source / "numpy").mkdir()
    (source / "numpy" / "__init__.py").write_text("LOCAL = True\n")
    assert warm.preload_modules(source / "probe.py") == ["pandas", "pandas.api"]


@pytest.mark.parametrize(
    "line",
    [
        'os.environ["OMP_NUM_THREADS"] = "1"',
        "os.environ.update(OMP_NUM_THREADS='1')",
        "os.environ.setdefault('OMP_NUM_THREADS', '1')",
        "os.putenv('OMP_NUM_THREADS', '1')",
        "del os.environ['HOME']",
    ],
)
def test_a_script_that_changes_the_environment_runs_cold(tmp_path: Path, line: str) -> None:
    (tmp_path / "step.py").write_text("import os\nimport helper\n")
    (tmp_path / "helper.py").write_text(f"import os\n{line}\nimport numpy\n")
    assert warm.preload_modules(tmp_path / "step.py") is None
    assert warm.WarmHost.for_script(tmp_path / "step.py", _env()) is None


def test_warm_hosts_can_be_turned_off(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMLOPS_WARM_STEPS", "0")
    assert warm.WarmHost.for_script(source / "probe.py", _env()) is None


@pytest.mark.parametrize("args", [["0", "x y"], ["3"]])
def test_a_warm_run_matches_a_cold_run(source: Path, args: list[str]) -> None:
    env = _env(FOO="bar")
    cold = _cold(source, args, env)
    assert cold[0] == int(args[0])
    assert _warm(source, args, env) == cold
    assert '"foo": "bar"' in cold[1] and '"name": "__main__"' in cold[1]
    assert '"project_visible": false' in cold[1] and '"stdin": ""' in cold[1]


def test_an_uncaught_exception_exits_1_with_the_scripts_traceback(source: Path) -> None:
    code, out = _warm(source, ["-1"], _env())
    assert code == 1
    assert "RuntimeError: probe failed on purpose" in out
    assert 'probe.py", line' in out
    assert "runpy" not in out and "step_host" not in out


def test_a_host_started_with_another_pythonpath_is_not_used(source: Path) -> None:
    host = warm.WarmHost.for_script(source / "probe.py", _env())
    assert host is not None
    assert host.launch(["probe.py", "0"], source, _env(PYTHONPATH=str(source))) is None
    assert host.proc.returncode is not None  # discarded, not left waiting


def test_a_missing_script_exits_2_as_python_does(source: Path) -> None:
    host = warm.WarmHost.for_script(source / "probe.py", _env())
    assert host is not None
    proc = host.launch(["gone.py"], source, _env())
    assert proc is not None
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "can't open file" in out and "gone.py" in out


def test_a_script_using_mlflow_finds_the_sqlite_store_already_imported(tmp_path: Path) -> None:
    (tmp_path / "track.py").write_text(
        "import sys\nimport mlflow\nprint(sorted(m for m in sys.modules if m.endswith('sqlalchemy_store')))\n"
    )
    env = _env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    host = warm.WarmHost.for_script(tmp_path / "track.py", env)
    assert host is not None and host.modules[-2:] == list(warm.SQLITE_STORES)
    proc = host.launch(["track.py"], tmp_path, env)
    assert proc is not None
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip() == str(sorted(warm.SQLITE_STORES))
    without = warm.WarmHost.for_script(tmp_path / "track.py", _env(MLFLOW_TRACKING_URI="http://127.0.0.1:1"))
    assert without is not None and not set(warm.SQLITE_STORES) & set(without.modules)
    without.discard()
