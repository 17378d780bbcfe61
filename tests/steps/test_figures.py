"""The register step's figures: the right pictures per task, of the right size, and importance that means it."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "steps"))
import figures  # noqa: E402


def png_size(fig) -> tuple[int, int]:  # noqa: ANN001
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


class OnlyA:
    """Predicts 2a: column b plays no part."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return 2 * frame["a"].to_numpy()


def _regression_test_data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    a = rng.normal(size=60)
    days = pd.date_range("2021-01-01", periods=60, freq="D").strftime("%Y-%m-%d")
    return pd.DataFrame(
        {"day": days[::-1], "a": a, "b": rng.normal(size=60), "y": 2 * a + rng.normal(0.1, size=60)}
    )


def test_regression_figures_are_pngs_of_the_right_size() -> None:
    drawn = figures.test_figures(OnlyA(), _regression_test_data(), "y", "regression", "day")
    assert set(drawn) == {"predicted_vs_actual.png", "residuals.png", "feature_importance.png"}
    assert all(png_size(f) == figures.SIZE for f in drawn.values())
    over_time = drawn["predicted_vs_actual.png"].axes[0]
    assert over_time.get_xlabel() == "day"  # time on the x axis when there is a time column
    xs = over_time.lines[0].get_xdata()
    assert list(xs) == sorted(xs)  # the rows came newest first; the plot runs in time order
    no_time = figures.test_figures(
        OnlyA(), _regression_test_data().drop(columns=["day"]), "y", "regression", None
    )
    assert no_time["predicted_vs_actual.png"].axes[0].get_xlabel() == "actual y"


def test_permutation_importance_finds_the_column_the_model_uses() -> None:
    data = _regression_test_data().drop(columns=["day"])
    importance = figures.permutation_importance(
        OnlyA().predict, data[["a", "b"]], data["y"].to_numpy(), "regression"
    )
    assert importance.index[0] == "a" and importance["a"] > 1.0
    assert importance["b"] == pytest.approx(0.0)


def test_permutation_importance_predicts_once_and_matches_one_call_per_shuffle() -> None:
    iris = load_iris(as_frame=True)
    x, y = iris.data, iris.target_names[iris.target]
    clf = LogisticRegression(max_iter=500).fit(x, y)
    calls: list[int] = []

    def predict(frame: pd.DataFrame) -> np.ndarray:
        calls.append(len(frame))
        return clf.predict(frame)

    importance = figures.permutation_importance(predict, x, y, "classification", repeats=2, seed=7)
    assert calls == [len(x) * (1 + 2 * x.shape[1])]
    rng = np.random.default_rng(7)  # the same shuffles, one predict call each
    base = np.mean(clf.predict(x) != y)
    for col in x.columns:
        grown = []
        for _ in range(2):
            shuffled = x.copy()
            shuffled[col] = rng.permutation(shuffled[col].to_numpy())
            grown.append(np.mean(clf.predict(shuffled) != y) - base)
        assert importance[col] == pytest.approx(np.mean(grown))
    assert importance.iloc[0] > 0.1  # the petal columns matter


def test_classification_gets_a_confusion_matrix_and_roc_on_iris() -> None:
    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns={"target": "label"})
    frame["label"] = iris.target_names[frame["label"]]
    test = frame.sample(60, random_state=0)
    clf = LogisticRegression(max_iter=500).fit(frame.drop(columns=["label"]), frame["label"])

    class Model:
        classes = list(clf.classes_)

        def predict(self, x: pd.DataFrame) -> np.ndarray:
            return clf.predict(x)

        def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
            return clf.predict_proba(x)

    drawn = figures.test_figures(Model(), test, "label", "classification", None)
    assert set(drawn) == {"confusion_matrix.png", "roc.png", "feature_importance.png"}
    assert all(png_size(f) == figures.SIZE for f in drawn.values())
    cells = [int(t.get_text()) for t in drawn["confusion_matrix.png"].axes[0].texts]
    assert len(cells) == 9 and sum(cells) == 60
    assert len(drawn["roc.png"].axes[0].lines) == 4  # a curve per class and the chance line
