"""Plans kept between runs: the same definition is read from the SDK once, anything that changes it builds again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import UserError
from pipelines.local.runtime import plan_cache
from pipelines.settings import Settings
from tests import tiny_pipeline
from tests.conftest import PROJECT_ROOT


class Counting:
    """tiny_pipeline.build, counting its calls (``__module__``/``__qualname__`` as the real one's)."""

    def __init__(self) -> None:
        self.__module__ = tiny_pipeline.build.__module__
        self.__qualname__ = tiny_pipeline.build.__qualname__
        self.calls = 0

    def __call__(self, settings: Settings, data: str | None = None):
        self.calls += 1
        return tiny_pipeline.build(settings, data)


def _read(steps):
    from pipelines.core import v1_reader

    return v1_reader.read_steps(steps)


def test_a_second_identical_build_comes_from_the_cache(amlops_home: Path) -> None:
    build = Counting()
    first = plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    again = plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    assert build.calls == 1
    assert (
        again.plan == first.plan
        and again.name == "amlops-tiny"
        and again.experiment_name == first.experiment_name
    )


def test_other_settings_data_or_environment_build_again(
    amlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = Counting()
    plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    other = plan_cache.cached_plan(
        build, Settings().with_overrides({"label": "registered"}), "bike-no", read=_read
    )
    assert build.calls == 2 and other.plan.parameters["label"] == "registered"
    plan_cache.cached_plan(build, Settings(), "other.csv", read=_read)
    assert build.calls == 3
    monkeypatch.setenv("AMLOPS_SOMETHING", "1")
    plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    assert build.calls == 4
    monkeypatch.setenv("AMLOPS_PLAN_CACHE", "0")
    plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    assert build.calls == 6


def test_a_changed_source_file_builds_again(amlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = Counting()
    plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    real = Path.read_bytes
    module_file = Path(tiny_pipeline.__file__)
    monkeypatch.setattr(Path, "read_bytes", lambda p: real(p) + (b"# changed" if p == module_file else b""))
    plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    assert build.calls == 2


def test_a_failing_build_is_not_kept(amlops_home: Path) -> None:
    calls = []

    def broken(settings: Settings, data: str | None = None):
        calls.append(1)
        raise UserError("bad settings", hint="fix them")

    for _ in range(2):
        with pytest.raises(UserError):
            plan_cache.cached_plan(broken, Settings(), "bike-no", read=_read)
    assert len(calls) == 2 and not list((amlops_home / "plan-cache").glob("*.pickle"))


def test_a_damaged_entry_is_rebuilt(amlops_home: Path) -> None:
    build = Counting()
    plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    [entry] = (amlops_home / "plan-cache").glob("*.pickle")
    entry.write_bytes(b"not a pickle")
    again = plan_cache.cached_plan(build, Settings(), "bike-no", read=_read)
    assert build.calls == 2 and again.name == "amlops-tiny"


def test_a_cached_run_does_not_import_the_sdk(amlops_home: Path) -> None:
    """A fresh process reading a stored entry gets the plan without importing azureml."""
    plan_cache.cached_plan(tiny_pipeline.build, Settings(), "bike-no", read=_read)
    code = (
        "import sys; from pipelines.local.runtime import plan_cache; from pipelines.settings import Settings;"
        "from tests import tiny_pipeline;"
        "e = plan_cache.cached_plan(tiny_pipeline.build, Settings(), 'bike-no', read=None);"
        "print(e.name, any(m.startswith('azureml') for m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}  # the same working directory: part of the key
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["amlops-tiny", "False"]
