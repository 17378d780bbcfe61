"""The local registry: concurrent first use, model references, and Azure's model layout for Model.get_model_path."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import UserError
from pipelines.local.workspace import registry
from pipelines.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow  # runs pipelines, services or worker processes (not in -m "not slow")


def _experiment_id(home: str) -> str:
    os.environ["AMLOPS_HOME"] = home
    return registry.ensure_experiment("shared-experiment")


def test_concurrent_first_use_of_a_fresh_workspace_agrees(amlops_home: Path) -> None:
    with mp.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_experiment_id, [str(amlops_home)] * 4)
    assert len(set(ids)) == 1


@pytest.mark.parametrize(("ref", "expected"), [("m", ("m", None)), ("m:3", ("m", 3))])
def test_model_references(ref: str, expected: tuple) -> None:
    assert registry.parse_model_ref(ref) == expected


@pytest.mark.parametrize("ref", [":1", "m:latest"])
def test_bad_model_references(ref: str) -> None:
    with pytest.raises(UserError):
        registry.parse_model_ref(ref)


def test_sdk_model_get_model_path_finds_registered_versions(trained: tuple[Path, dict], monkeypatch) -> None:
    home, _ = trained
    monkeypatch.setenv("AMLOPS_HOME", str(home))
    env = {**os.environ, "AMLOPS_HOME": str(home)}
    code = (
        "from pipelines.local.workspace import registry; import os, sys;"
        "os.environ['AML_APP_ROOT'] = str(registry.workspace_models_root());"
        "from azureml.core.model import Model;"
        "print(Model.get_model_path('bike-demand')); print(Model.get_model_path('bike-demand', version=1))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=PROJECT_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    latest, first = done.stdout.split()
    assert Path(first).parts[-3:] == ("bike-demand", "1", "bike-demand")
    assert (Path(latest) / "MLmodel").is_file() and (Path(first) / "MLmodel").is_file()
    assert Path(latest).parts[-2] == str(registry.get_model("bike-demand").version)  # the latest version


def test_model_input_columns_come_from_the_signature(trained: tuple[Path, dict], monkeypatch) -> None:
    home, _ = trained
    monkeypatch.setenv("AMLOPS_HOME", str(home))
    columns = registry.model_input_columns("bike-demand", 1)
    assert "temp" in columns and "cnt" not in columns and "casual" not in columns


def test_keys_are_random_urlsafe_and_never_look_like_options(tmp_path: Path) -> None:
    from pipelines.local.workspace.keys import KeyStore, _new_key

    keys = {_new_key() for _ in range(300)}
    assert len(keys) == 300 and not any(k.startswith("-") for k in keys)
    store = KeyStore(tmp_path / "keys.json")
    first = store.keys()
    assert oct((tmp_path / "keys.json").stat().st_mode & 0o777) == "0o600"
    assert store.check_authorization_header(f"Bearer {first['secondary']}")
    store.regenerate("primary")
    assert not store.check(first["primary"]) and store.check(first["secondary"])


@pytest.mark.parametrize(
    "damage", [b'{"primary": "ab', b"\xff\xfe\x00", b"{}", b"[1]", b'{"primary": 1, "secondary": "x"}']
)
def test_a_damaged_key_file_is_refused_with_the_fix_and_regen_repairs_it(
    tmp_path: Path, damage: bytes
) -> None:
    from pipelines.errors import UserError
    from pipelines.local.workspace.keys import KeyStore

    store = KeyStore(tmp_path / "keys.json", "python -m tool keys --regen primary")
    store.keys()
    store.path.write_bytes(damage)
    with pytest.raises(UserError) as caught:
        store.keys()
    assert "damaged" in caught.value.message and "python -m tool keys --regen primary" in caught.value.hint
    with pytest.raises(UserError):
        store.check("anything")  # never a silent pass or a crash of another kind
    fresh = store.regenerate("secondary")
    assert store.keys() == fresh and all(fresh.values())
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


def test_numbers_out_of_range_are_argparse_errors() -> None:
    import argparse

    from pipelines.errors import PORT, int_in_range

    assert PORT("0") == 0 and PORT("65535") == 65535 and int_in_range(1)("7") == 7
    for parse, text, message in [
        (PORT, "70000", "expected a port from 0 to 65535, got 70000"),
        (PORT, "-1", "expected a port from 0 to 65535, got -1"),
        (int_in_range(0), "-5", "expected an integer of at least 0, got -5"),
        (int_in_range(1), "x", "expected an integer, got 'x'"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)


def test_store_read_without_mlflow_agrees_with_mlflow(trained: tuple[Path, dict], monkeypatch) -> None:
    home, _ = trained
    monkeypatch.setenv("AMLOPS_HOME", str(home))
    fast = registry.get_model("bike-demand")
    assert fast == registry._get_model_with_mlflow("bike-demand")
    assert registry.get_model("bike-demand", fast.version) == fast and fast.tags.get("task") == "regression"
    from mlflow.models import get_model_info

    signature = get_model_info(f"models:/bike-demand/{fast.version}").signature
    assert registry.model_input_columns("bike-demand") == signature.inputs.input_names()
    with pytest.raises(UserError, match="bike-demand:99 is not registered"):
        registry.get_model("bike-demand", 99)
    with pytest.raises(UserError, match="no model named 'nope'"):
        registry.get_model("nope")
