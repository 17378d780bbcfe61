"""The amlops command: its words map onto the python -m modules; completion; --json everywhere; logs --follow."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipelines import amlops
from pipelines.local.runtime import runs

EXAMPLE = "train_score/pipeline.yml"  # an SDK v2 pipeline job the v2 tests run
VERBS_WITHOUT_SUBWORDS = 25  # at least this many verbs: train/batch-score/deploy/workspace/... leaves


def test_every_verb_takes_json() -> None:
    found = amlops.leaves(amlops.command_tree())
    assert len(found) >= VERBS_WITHOUT_SUBWORDS
    paths = {" ".join(p) for p, _ in found}
    assert {"train run", "batch-score run", "deploy invoke", "workspace logs", "endpoint call"} <= paths
    missing = [" ".join(p) for p, node in found if "--json" not in node.options]
    assert missing == []


def test_words_dispatch_to_the_module_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert amlops.main(["train", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in shown["steps"]] == ["prep", "automl", "register"]
    assert amlops.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    assert amlops.main(["endpoint", "shout"]) == 2
    assert amlops.main(["completion", "zsh"]) == 2


def test_v2_word_runs_the_sdk_v2_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parents[1] / "v2" / "examples" / EXAMPLE
    assert amlops.main(["v2", "show", str(example), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["steps"]
    with pytest.raises(SystemExit) as usage:
        amlops.main(["v2", "convert"])
    assert usage.value.code == 2
    assert "invalid choice: 'convert'" in capsys.readouterr().err


def _complete(script: Path, line: str) -> list[str]:
    words = line.split(" ")
    program = (
        f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
        '_amlops; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_follows_the_argparse_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert amlops.main(["completion", "bash"]) == 0
    script = tmp_path / "amlops.bash"
    script.write_text(capsys.readouterr().out)
    assert {"train", "batch-score", "deploy", "workspace", "endpoint"} <= set(_complete(script, "amlops "))
    assert _complete(script, "amlops tr") == ["train", "trigger"]
    assert _complete(script, "amlops train ") == ["run", "show", "publish", "export", "models", "--help"]
    assert set(_complete(script, "amlops train run --")) >= {"--set", "--json", "--data"}
    assert _complete(script, "amlops deploy invoke --request") == ["--request-file"]
    assert _complete(script, "amlops train publish --target ") == ["auto", "local", "azure", "azure-v2"]
    assert _complete(script, "amlops workspace schedules l") == ["list"]
    assert _complete(script, "amlops v2 ") == ["export", "run", "show", "--help"]
    assert _complete(script, "amlops v2 export --") == ["--help", "--out", "--json"]
    assert _complete(script, "amlops deploy keys --name x --regen ") == ["primary", "secondary"]


def _record(run_id: str, status: str) -> None:
    runs.write_record(run_id, {"run_id": run_id, "status": status, "created": runs.now(), "steps": []})


def test_logs_follow_streams_until_the_run_ends(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines import workspace

    run_id = "amlops-train_20260101000000_abcdef"
    _record(run_id, "Running")
    logs = runs.run_folder(run_id) / "logs"
    logs.mkdir(parents=True)
    (logs / "prep.log").write_text("prep: first\n")

    def later() -> None:
        time.sleep(0.8)
        with open(logs / "prep.log", "a") as fh:
            fh.write("prep: sec")
            fh.flush()
            time.sleep(0.6)
            fh.write("ond\n")
        (logs / "automl.log").write_text("automl: trial 0\nautoml: no newline at the end")
        _record(run_id, "Completed")

    writer = threading.Thread(target=later)
    writer.start()
    started = time.monotonic()
    code = workspace.main(["logs", run_id, "--follow", "--json"])
    writer.join()
    assert code == 0 and time.monotonic() - started >= 0.8  # it waited for the run to end
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    by_log: dict[str, list[str]] = {}
    for x in lines[:-1]:
        by_log.setdefault(x["log"], []).append(x["line"])
    assert by_log == {
        "prep": ["prep: first", "prep: second"],  # a half-written line is held back until it ends
        "automl": ["automl: trial 0", "automl: no newline at the end"],  # read to the end once the run ended
    }
    assert lines[-1] == {"run_id": run_id, "status": "Completed"}


def test_logs_follow_of_a_failed_run_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines import workspace

    run_id = "amlops-train_20260101000000_fa11ed"
    _record(run_id, "Failed")
    assert workspace.main(["logs", run_id, "--follow"]) == 1
    assert f"run {run_id}: Failed" in capsys.readouterr().out


def test_service_logging_has_timestamps_and_honours_the_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines import service_logging
    from pipelines.errors import UserError

    monkeypatch.setenv("AMLOPS_LOG_LEVEL", "warning")
    assert service_logging.configure() == logging.WARNING
    log = service_logging.get("run_queue")
    log.info("hidden")
    log.warning("shown %s", 1)
    err = capsys.readouterr().err
    assert "hidden" not in err
    line = next(x for x in err.splitlines() if "shown 1" in x)
    assert line.split()[2:4] == ["WARNING", "amlops.run_queue:"]
    time.strptime(" ".join(line.split()[:2]).split(",")[0], "%Y-%m-%d %H:%M:%S")
    monkeypatch.setenv("AMLOPS_LOG_LEVEL", "loud")
    with pytest.raises(UserError, match="not a log level"):
        service_logging.configure()
    logging.getLogger().handlers[:] = [
        h for h in logging.getLogger().handlers if not getattr(h, "amlops", False)
    ]


def test_the_console_script_is_amlops_main() -> None:
    import importlib
    import tomllib

    from pipelines.settings import PROJECT_ROOT

    target = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]["amlops"]
    module, _, attr = target.partition(":")
    assert getattr(importlib.import_module(module), attr) is amlops.main
