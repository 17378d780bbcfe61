"""Replays of the adversarial probes on model names, empty option values and deployment state races.

Model names: one rule (steps/model_names.py) checked up front by train, batch_score, deploy, the REST
submit path and the register step; registry look-ups find any name MLflow holds; a registered name the
rule refuses cannot break batch runs. Deployments: stop, start, delete, update and the workspace
service's reviver take one lock per service, and no command reports a state that is then undone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.faults import leftovers, port_free
from tests.conftest import PROJECT_ROOT, cli

sys.path.insert(0, str(PROJECT_ROOT / "steps"))
import register  # noqa: E402  (the step script, imported as Azure runs it: from its own folder)

from steps import model_names  # noqa: E402

pytestmark = pytest.mark.slow  # services, the SDK's graph builder or the package index

LONG = "m" * 300
BAD_NAMES = ["bad'name", "../x", "a/b", "a:b", LONG, "", " lead", "-dash", ".hidden", "caf\u00e9", 'dq"x']
GOOD_NAMES = ["bike-demand", "m", "My_Model.v2", "0model", "a..b", "x" * model_names.MAX_LENGTH]


# ---- the model name rule -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_rule_refuses_names_that_are_unsafe_or_too_long(name: str) -> None:
    assert model_names.problem(name) is not None


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_every_name_the_rule_takes_mlflow_takes_too(name: str) -> None:
    from mlflow.utils.validation import _validate_model_name

    assert model_names.problem(name) is None
    _validate_model_name(name)  # raises MlflowException if MLflow's own rule refuses it


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("name", ["../x", "bad'name", LONG])
def test_train_refuses_a_bad_model_name_before_any_run(name: str, amlops_home: Path) -> None:
    done = cli(
        "pipelines.train", "run", "--set", f"model_name={name}", "--set", "iterations=2", home=amlops_home
    )
    assert done.returncode == 2
    assert "model name" in _one_error_line(done.stderr)
    assert not (amlops_home / "runs").exists() or not any((amlops_home / "runs").iterdir())


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("pipelines.batch_score", ["run", "--input", "bike-no", "--model", "bad'name"]),
        ("pipelines.batch_score", ["run", "--input", "bike-no", "--model", f"{LONG}:1"]),
        ("pipelines.deploy", ["--model", "bad'name", "--name", "probe-svc"]),
        ("pipelines.deploy", ["update", "--model", "../x", "--name", "probe-svc"]),
    ],
)
def test_batch_score_and_deploy_refuse_a_bad_model_name(
    module: str, args: list[str], amlops_home: Path
) -> None:
    done = cli(module, *args, home=amlops_home)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "model name" in line and "letters, digits" in line


def test_rest_submit_with_a_bad_model_name_is_400_and_nothing_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from pipelines import train
    from pipelines.datagen import write_csv
    from pipelines.local.workspace import publishing, run_queue, service
    from pipelines.settings import Settings

    write_csv(tmp_path / "data" / "tiny.csv", 40, seed=2)
    monkeypatch.setenv("AMLOPS_DATA_DIR", str(tmp_path / "data"))
    published = publishing.publish(train.build(Settings(dataset="tiny")))
    path = f"/pipelines/v1.0/PipelineRuns/PipelineEndpointSubmit/Id/{published['endpoint_id']}"
    with TestClient(service.create_app(background=False)) as client:
        key = service.key_store().keys()["primary"]
        for name in ("../x", "bad'name", LONG):
            body = {"ExperimentName": "e", "ParameterAssignments": {"model_name": name}}
            r = client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 400, r.text
            assert "model name" in r.json()["error"]["message"]
    assert run_queue.rows() == []


def test_the_register_step_refuses_a_bad_name_before_scoring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing-here"  # reading any input would raise: the name is checked first
    argv = [
        "--model_data",
        str(missing),
        "--test_data",
        str(missing),
        "--label",
        "cnt",
        "--model_name",
        "../x",
    ]
    assert register.main(argv) == 2
    assert "model name '../x'" in capsys.readouterr().err


def _fake_model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model-src"
    folder.mkdir(exist_ok=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    return folder


def _register_raw(name: str, source: Path, tags: dict[str, str] | None = None) -> None:
    """Register ``name`` straight through MLflow, as an older workspace or another tool may have."""
    from mlflow import MlflowClient

    from pipelines.local.workspace import registry

    registry.configure_mlflow()
    client = MlflowClient()
    if not model_names.versions_of(client, name):
        client.create_registered_model(name)
    client.create_model_version(name, source=str(source), tags=tags or {})


@pytest.mark.parametrize("name", ["bad'name", 'dq"name', "both'and\"", "under_score"])
def test_the_champion_gate_finds_a_registered_name_whatever_its_quotes(name: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    source = _fake_model_folder(tmp_path)
    _register_raw("underXscore", source, {"test_nrmse": "0.5"})  # '_' is no wildcard: never matched
    _register_raw(name, source, {"test_nrmse": "0.3"})
    _register_raw(name, source, {"test_nrmse": "0.2"})
    found = register.latest_version_tags(MlflowClient(), name)
    assert found is not None
    version, tags = found
    assert str(version) == "2" and tags["test_nrmse"] == "0.2"
    should, why = register.decide({"test_nrmse": 0.25}, tags, "normalized_root_mean_squared_error")
    assert not should and "0.2000" in why  # compared with the registered version, not registered as first


def test_a_registered_name_the_rule_refuses_does_not_break_the_batch_models_layout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from pipelines.local.workspace import registry

    source = _fake_model_folder(tmp_path)
    _register_raw(LONG, source)
    _register_raw("bad'name", source)
    _register_raw("good-model", source)
    root = registry.workspace_models_root()
    laid_out = root / "azureml-models" / "good-model" / "1" / "good-model" / "MLmodel"
    assert laid_out.is_file()
    assert sorted(p.name for p in (root / "azureml-models").iterdir()) == ["good-model"]
    err = capfd.readouterr().err
    assert err.count("left out of batch runs") == 2


def test_a_batch_run_completes_with_a_300_character_model_name_registered(
    amlops_home: Path, tmp_path: Path, bike_csv: Path
) -> None:
    from benchmarks._model import register_demo_model
    from pipelines.datagen import write_csv

    register_demo_model(bike_csv, name="bike-demand", n_trees=5)
    _register_raw(LONG, _fake_model_folder(tmp_path))
    write_csv(tmp_path / "in" / "rows.csv", 30, seed=3)
    done = cli("pipelines.batch_score", "run", "--input", str(tmp_path / "in"), "--set", "process_count_per_node=1",
               "--json", home=amlops_home)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["status"] == "Completed"


# ---- explicitly empty values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "args", "flag"),
    [
        ("pipelines.train", ["run", "--data", ""], "--data"),
        ("pipelines.train", ["run", "--set", "model_name="], "model name"),
        ("pipelines.batch_score", ["run", "--input", ""], "--input"),
        ("pipelines.batch_score", ["run", "--input", "bike-no", "--model", ""], "--model"),
        ("pipelines.batch_score", ["run", "--input", "bike-no", "--output", ""], "--output"),
        ("pipelines.deploy", ["--name", ""], "--name"),
        ("pipelines.deploy", ["--model", "", "--name", "probe-svc"], "--model"),
        ("pipelines.deploy", ["stop", "--name", ""], "--name"),
        ("pipelines.deploy", ["delete", "--name", ""], "--name"),
    ],
)
def test_an_explicitly_empty_value_is_an_error(
    module: str, args: list[str], flag: str, amlops_home: Path
) -> None:
    done = cli(module, *args, home=amlops_home)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert flag in line and ("empty" in line)
    assert not (amlops_home / "deployments").exists() or not list(
        (amlops_home / "deployments").glob("*/service.json")
    )
    assert not (amlops_home / "runs").exists() or not any((amlops_home / "runs").iterdir())


# ---- the lock protocol, without processes ------------------------------------------------------------


def test_a_supervisor_whose_launch_was_revoked_writes_nothing(amlops_home: Path) -> None:
    from pipelines.local.serving import locking

    folder = amlops_home / "deployments" / "probe-svc"
    folder.mkdir(parents=True)
    locking.replace_runtime(folder, {"state": "Healthy", "launch": "old", "desired": "running"})
    assert locking.merge_runtime(folder, owner="old", restarts=1)
    locking.revoke_launch(folder, desired="stopped")
    assert not locking.merge_runtime(folder, owner="old", state="Stopped", supervisor_pid=None)
    assert locking.read_json(folder / "runtime.json") == {
        "state": "Healthy", "launch": None, "desired": "stopped", "restarts": 1
    }  # fmt: skip


def test_a_dying_supervisor_cannot_bring_back_a_deleted_service(amlops_home: Path) -> None:
    import shutil

    from pipelines.local.serving import locking

    folder = amlops_home / "deployments" / "probe-svc"
    folder.mkdir(parents=True)
    locking.replace_runtime(folder, {"state": "Healthy", "launch": "tok"})
    shutil.rmtree(folder)
    assert not locking.merge_runtime(folder, owner="tok", state="Stopped")
    assert not locking.merge_runtime(folder, state="Stopped")
    assert not folder.exists()


def test_a_command_on_a_busy_service_says_which_operation_holds_it(
    amlops_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.local.serving import deployments, locking

    monkeypatch.setattr(deployments, "LOCK_WAIT_SECONDS", 0.3)
    record = deployments.LocalService(name="probe-svc", model_name="m", model_version=2, entry_script="score.py",
                                      port=1, workers=1, app_root="", model_dir="")  # fmt: skip
    folder = deployments.service_dir("probe-svc")
    locking.write_json(folder / "service.json", dataclasses.asdict(record))
    locking.replace_runtime(
        folder, {"state": "Transitioning", "desired": "running"}
    )  # the reviver would start it
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with locking.service_lock(deployments.deployments_dir(), "probe-svc", "update --model m:2"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        for call in (deployments.stop, deployments.delete, deployments.start):
            with pytest.raises(
                locking.ServiceBusy, match=rf"busy: update --model m:2 \(pid {os.getpid()}, since"
            ):
                call("probe-svc")
        began = time.monotonic()
        assert deployments.revive_all() == []  # the reviver skips a busy service, without waiting
        assert time.monotonic() - began < 0.3
        assert capsys.readouterr().err.count("waiting for update --model m:2") == 3  # each command said why
    finally:
        release.set()
        holder.join()


# ---- races with real services ------------------------------------------------------------------------

PROBE_SCRIPT = """
import os


def init():
    pass


def run(raw_data):
    return {"model_dir": os.environ.get("AZUREML_MODEL_DIR", "")}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A workspace with two versions of a small model and a probe entry script that says which it serves."""
    from benchmarks._model import register_demo_model, using_home
    from pipelines.datasets import resolve
    from pipelines.local.serving import deployments

    home = tmp_path_factory.mktemp("races-home")
    script = tmp_path_factory.mktemp("probe") / "which_model.py"
    script.write_text(PROBE_SCRIPT)
    with using_home(home):
        csv = resolve("bike-no")
        versions = [register_demo_model(csv, name="race-model", n_trees=n) for n in (3, 4)]
        try:
            yield {"home": home, "script": script, "versions": versions}
        finally:
            for service in deployments.list_services():
                deployments.delete(service.name)


@pytest.fixture
def ws(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AMLOPS_HOME", str(served["home"]))
    return served


def _deploy(ws: dict[str, Any], name: str) -> Any:
    from pipelines.local.serving import deployments

    return deployments.deploy("race-model", ws["versions"][0], name, workers=1, entry_script=ws["script"])


@pytest.fixture
def reviver() -> Iterator[threading.Event]:
    """The workspace service's keeper, calling revive_all as fast as it can until the test ends."""
    from pipelines.local.serving import deployments

    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            deployments.revive_all()
            time.sleep(0.02)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield done
    done.set()
    thread.join(timeout=120)


def _serves(service: Any) -> str:
    """The model folder the running service answers from."""
    import requests

    from pipelines.local.serving import deployments

    key = deployments.keys(service.name)["primary"]
    resp = requests.post(service.scoring_uri, json={}, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["model_dir"]


def test_stop_racing_the_reviver_stays_stopped_and_start_works_again(
    ws: dict[str, Any], reviver: Any
) -> None:
    from pipelines.local.serving import deployments

    service = _deploy(ws, "race-stop")
    for _ in range(3):
        assert deployments.stop(service.name) is True
        deadline = time.monotonic() + 3  # the reviver runs all along: nothing comes back
        while time.monotonic() < deadline:
            assert deployments.state(service.name) == "Stopped"
            time.sleep(0.1)
        assert port_free(service.port) and not leftovers(service.folder, service.port)
        assert deployments.stop(service.name) is False  # "was not running" is now the truth
        assert deployments.start(service.name).port == service.port
        assert deployments.state(service.name) == "Healthy"


def test_delete_racing_the_reviver_leaves_nothing_behind(ws: dict[str, Any], reviver: Any) -> None:
    from pipelines.local.serving import deployments

    service = _deploy(ws, "race-delete")
    deployments.delete(service.name)
    time.sleep(3)  # the reviver and the dying supervisor have had their chance
    assert not service.folder.exists()
    assert port_free(service.port) and not leftovers(service.folder, service.port)


def test_two_concurrent_model_updates_are_serialised_and_the_last_report_holds(ws: dict[str, Any]) -> None:
    from pipelines.local.serving import deployments

    service = _deploy(ws, "race-update")
    v1, v2 = ws["versions"]
    lock_file = deployments.deployments_dir() / ".locks" / f"{service.name}.lock"
    finished: list[tuple[int, Any]] = []

    def update(version: int) -> None:
        result = deployments.update(service.name, model_name="race-model", model_version=version, timeout=300)
        finished.append((version, result))

    threads = [threading.Thread(target=update, args=(v,)) for v in (v2, v1)]
    threads[0].start()
    deadline = time.monotonic() + 60
    while not (lock_file.exists() and "update" in lock_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)
    threads[1].start()  # asks while the first update holds the service (loading its model)
    for thread in threads:
        thread.join(timeout=600)
    assert [v for v, _ in finished] == [v2, v1]  # one after the other, in the order asked
    last = finished[-1][1]
    record = deployments.load(service.name)
    assert (record.model_version, record.model_dir) == (v1, last.model_dir)
    assert all(_serves(record) == last.model_dir for _ in range(4))


@pytest.mark.parametrize("verb", ["show", "keys", "logs", "stop", "start", "delete"])
def test_a_huge_service_name_is_one_short_error_line(verb: str, amlops_home: Path) -> None:
    done = cli("pipelines.deploy", verb, "--name", "s" * 4096, home=amlops_home)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "(4096 characters)" in line and len(line) < 400


def test_the_workspace_service_answers_400_for_a_huge_deployment_name() -> None:
    """The service's path rule (api_schema.DeploymentName) refuses it before any folder is looked up."""
    from fastapi.testclient import TestClient

    from pipelines.local.workspace import service

    with TestClient(service.create_app(background=False)) as client:
        key = service.key_store().keys()["primary"]
        r = client.get("/deployments/" + "s" * 4096, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400 and "at most 32 characters" in r.json()["error"]["message"]
