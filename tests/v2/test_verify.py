"""The azure-ai-ml 1.35.2 behaviours the v2 export works around: each is shown, then its workaround checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines import batch_score, train
from pipelines.settings import Settings
from pipelines.v2 import verify
from pipelines.v2.export import export_definition

SCHEMA = "https://azuremlschemas.azureedge.net/latest/{}.schema.json"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v2verify") / "out"
    export_definition(train.build(Settings()), out)
    export_definition(batch_score.build(Settings()), out, model_lookup=True)
    return out


def test_automl_output_dumps_as_job_output_type_and_repair_makes_it_load(exported: Path) -> None:
    job = verify.load(exported / "amlops-train.pipeline.yml", "job")
    dumped = exported / ".dump-train.yml"
    job.dump(dumped)
    text = dumped.read_text()
    try:
        assert "job_output_type: mlflow_model" in text  # the 1.35.2 bug: not `type:`
        with pytest.raises(Exception, match="job_output_type|Unknown field"):
            verify.load(dumped, "job")
        dumped.write_text(verify.repair_dump(text))
        again = verify.load(dumped, "job")
        base = exported / "components"
        assert verify.rest_body(again, base) == verify.rest_body(job, base)
    finally:
        dumped.unlink(missing_ok=True)


def test_a_relative_data_path_can_dump_as_an_asset_name_and_repair_drops_it(exported: Path) -> None:
    verify.load(exported / "amlops-train.pipeline.yml", "job")  # another load first, as in one export run
    job = verify.load(exported / "amlops-batch-score.pipeline.yml", "job")
    dumped = exported / ".dump-batch.yml"
    job.dump(dumped)
    try:
        text = dumped.read_text()
        assert "azureml:./data/batch_input" in text  # would be read as a workspace asset named ./data/...
        repaired = verify.repair_dump(text)
        assert "azureml:./" not in repaired and "path: ./data/batch_input" in repaired
    finally:
        dumped.unlink(missing_ok=True)


def test_repair_keeps_asset_registry_and_datastore_references() -> None:
    """Only ``azureml:`` before a path is dropped; the register step's curated environment (a registry URI), a
    datastore URI and an asset reference are kept as written."""
    text = (
        "environment: azureml://registries/azureml/environments/AzureML-AutoML/labels/latest\n"
        "path: azureml://datastores/workspaceblobstore/paths/x.csv\n"
        "model: azureml:bike-demand@latest\n"
        "code: azureml:/abs/src\n"
    )
    assert verify.repair_dump(text) == text.replace("azureml:/abs/src", "/abs/src")


def test_a_schedule_with_an_inline_job_does_not_load_so_the_job_is_referenced(exported: Path) -> None:
    schedule = verify.load(exported / "amlops-train.schedule.yml", "schedule")
    inline = exported / ".inline-schedule.yml"
    try:
        inline.write_text(yaml.safe_dump(yaml.safe_load(yaml.safe_dump(_plain(schedule._to_dict())))))
        with pytest.raises(Exception, match="create_job|job"):
            verify.load(inline, "schedule")
    finally:
        inline.unlink(missing_ok=True)
    assert yaml.safe_load((exported / "amlops-train.schedule.yml").read_text())["create_job"].endswith(
        ".pipeline.yml"
    )
    assert schedule.create_job.jobs.keys() == {"prep", "automl", "register"}  # the referenced job is loaded


def test_model_batch_deployment_dumps_instance_count_twice_so_none_is_emitted(
    tmp_path: Path, exported: Path
) -> None:
    from azure.ai.ml.entities import ModelBatchDeployment, ModelBatchDeploymentSettings

    deployment = ModelBatchDeployment(
        name="d", endpoint_name="e", model="azureml:m:1", compute="cpu",
        settings=ModelBatchDeploymentSettings(instance_count=2, mini_batch_size=10),
    )  # fmt: skip
    deployment.dump(tmp_path / "d.yml")
    assert (tmp_path / "d.yml").read_text().count("instance_count") == 2  # the 1.35.2 bug
    # the export publishes pipeline component deployments instead (batch scoring is a pipeline there too)
    for path in exported.glob("*.batch-deployment.yml"):
        assert yaml.safe_load(path.read_text())["type"] == "pipeline"


def test_online_endpoint_dump_ignores_its_destination_so_verify_dumps_the_dict(tmp_path: Path) -> None:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    dest = tmp_path / "sub" / "ep.yml"
    dest.parent.mkdir()
    ManagedOnlineEndpoint(name="ep", auth_mode="key").dump(dest)
    assert not dest.exists()  # the 1.35.2 bug
    (tmp_path / "ep.yml").write_text(
        yaml.safe_dump({"$schema": SCHEMA.format("managedOnlineEndpoint"), "name": "ep", "auth_mode": "key"})
    )
    verify.verify_folder(tmp_path, ["ep.yml"])  # the dict round trip


def test_validate_misses_an_unknown_binding_in_program_arguments_and_verify_catches_it(
    tmp_path: Path,
) -> None:
    component = {
        "$schema": SCHEMA.format("parallelComponent"), "type": "parallel", "name": "p", "version": "1",
        "inputs": {"d": {"type": "uri_folder"}}, "outputs": {"o": {"type": "uri_folder"}},
        "input_data": "${{inputs.d}}", "mini_batch_size": "5",
        "task": {"type": "run_function", "code": ".", "entry_script": "s.py", "environment": {"image": "x/y:1"},
                 "program_arguments": "--model ${{inputs.modle}}", "append_row_to": "${{outputs.o}}"},
    }  # fmt: skip
    (tmp_path / "p.yml").write_text(yaml.safe_dump(component))
    assert verify.load(tmp_path / "p.yml", "component")._validate().passed  # azure-ai-ml lets it through
    with pytest.raises(verify.VerifyError, match=r"\$\{\{inputs.modle\}\} names no declared input"):
        verify.verify_folder(tmp_path, ["p.yml"])


def test_verify_catches_a_node_binding_an_input_its_component_lacks(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "$schema": SCHEMA.format("commandComponent"), "type": "command", "name": "c", "version": "1",
        "command": "python a.py --a ${{inputs.a}}", "inputs": {"a": {"type": "string", "default": "x"}},
        "environment": {"image": "x/y:1"}, "code": ".",
    }))  # fmt: skip
    (tmp_path / "j.yml").write_text(yaml.safe_dump({
        "$schema": SCHEMA.format("pipelineJob"), "type": "pipeline", "settings": {"default_compute": "azureml:cpu"},
        "jobs": {"n": {"type": "command", "component": "./c.yml", "inputs": {"a": "y", "b": "z"}}},
    }))  # fmt: skip
    with pytest.raises(verify.VerifyError, match="binds b, which ./c.yml does not declare"):
        verify.verify_folder(tmp_path, ["c.yml", "j.yml"])


def _plain(value: object) -> object:
    import json

    return json.loads(json.dumps(value, default=str))
