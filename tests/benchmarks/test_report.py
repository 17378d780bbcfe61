"""BENCHMARKS.md sections are replaced in place and the others are kept."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import machine_line, model_name, update_section


def test_sections_are_replaced_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    update_section(path, "A", "first a")
    update_section(path, "B", "only b")
    update_section(path, "A", "second a\nmore")
    text = path.read_text()
    assert text.startswith("# Benchmarks")
    assert "first a" not in text and "second a\nmore" in text and "only b" in text
    assert text.index("## A") < text.index("## B") and text.count("## A") == 1


def test_machine_line_names_cores_and_date() -> None:
    line = machine_line()
    assert " cores (" in line and "GiB RAM" in line and line[:4].isdigit()


def test_model_name_says_what_the_automl_step_registered() -> None:
    assert model_name({"best_estimator": "lgbm", "voting_ensemble": None}) == "best lgbm"
    voted = {
        "members": [
            {"model": "lgbm", "damping": 1.0, "weight": 0.5},
            {"model": "xgboost", "damping": 0.0, "weight": 0.5},
        ]
    }
    assert (
        model_name({"best_estimator": "xgboost", "voting_ensemble": voted})
        == "VotingEnsemble of lgbm x1, xgboost x0"
    )
