"""The local AutoML's VotingEnsemble for a regression learned relative to a line: the candidates near the
best on time-ordered validation, weighted equally, each continuing the line with its own damping; and
cross-validation folds of whole weeks for the search."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.local.runtime import automl, voting
from tests.conftest import PROJECT_ROOT
from tests.local.runtime.test_trend import _growing, _rmse, _settings

sys.path.insert(0, str(PROJECT_ROOT / "steps"))
import raw_model  # noqa: E402

A, B, C = (voting.Candidate(name, 0.0) for name in ("a", "b", "c"))


def _noisy(truth: np.ndarray, scale: float, seed: int) -> np.ndarray:
    return truth + np.random.default_rng(seed).normal(scale=scale, size=truth.shape)


def test_the_members_are_the_candidates_within_10_percent_of_the_best_weighted_equally() -> None:
    truth = [np.linspace(0, 10, 400), np.linspace(5, 15, 400)]
    predictions = {
        A: [_noisy(t, 1.0, 1 + i) for i, t in enumerate(truth)],
        B: [_noisy(t, 1.05, 11 + i) for i, t in enumerate(truth)],  # nearly as good, its errors independent
        C: [_noisy(t, 1.3, 21 + i) for i, t in enumerate(truth)],  # 30% worse: left out
    }
    got = voting.select(predictions, truth)
    assert got.members == (A, B) and got.single[C] > 1.2 * got.single[A]
    assert got.rmse < 0.8 * min(got.single[A], got.single[B])  # two independent errors average out
    mean = [(predictions[A][i] + predictions[B][i]) / 2 for i in range(2)]
    assert got.rmse == pytest.approx(
        np.mean([np.sqrt(np.mean((t - m) ** 2)) for t, m in zip(truth, mean, strict=True)])
    )


def test_at_most_ten_members_best_first() -> None:
    truth = [np.zeros(100)]
    error = np.random.default_rng(0).normal(size=100)
    predictions = {voting.Candidate(f"m{i:02d}", 0.0): [(1 + i / 1000) * error] for i in range(14)}
    got = voting.select(predictions, truth)
    assert [c.learner for c in got.members] == [f"m{i:02d}" for i in range(10)]


def test_each_member_continues_the_line_with_its_own_damping() -> None:
    days = pd.date_range("2020-01-01", periods=40, freq="D")
    x_raw = pd.DataFrame({"day": days.strftime("%m/%d/%Y"), "x": np.arange(40.0)})
    featurizer = raw_model.RawFeaturizer().fit(x_raw)
    first = float(raw_model.RatioTrend.days_of(x_raw["day"], "%m/%d/%Y")[0])
    line = raw_model.RatioTrend("day", "%m/%d/%Y", 1.0 - first, 1.0, first, first + 10.0, damping=0.5)

    class Constant:
        def __init__(self, value: float) -> None:
            self.value = value

        def predict(self, features: pd.DataFrame) -> np.ndarray:
            return np.full(len(features), self.value)

    two, four = Constant(2.0), Constant(4.0)
    ensemble = raw_model.VotingEnsemble(
        [("two", two), ("four", four), ("two", two)], [1.0, 2.0, 1.0], [0.0, 1.0, 1.0]
    )
    model = raw_model.RawColumnsModel(featurizer, ensemble, "regression", "y", trend=line)
    got = model.predict(x_raw)
    at = np.arange(40.0)  # the line is 1 + days since the first; level (x0) or going on (x1) after day 10
    level, going_on = 1.0 + np.minimum(at, 10.0), 1.0 + at
    np.testing.assert_allclose(got, 0.25 * 2.0 * level + 0.5 * 4.0 * going_on + 0.25 * 2.0 * going_on)
    assert np.allclose(ensemble.predict(featurizer.transform(x_raw)), 0.25 * 2 + 0.5 * 4 + 0.25 * 2)


def model_members(voted: dict) -> list[voting.Candidate]:
    return [voting.Candidate(m["model"], m["damping"]) for m in voted["members"]]


@pytest.mark.slow  # fits models
def test_a_trend_model_is_a_voting_ensemble_searched_on_folds_of_whole_weeks(tmp_path, monkeypatch) -> None:
    import flaml
    import mlflow

    seen: dict = {}
    real_fit = flaml.AutoML.fit
    monkeypatch.setattr(flaml.AutoML, "fit", lambda self, **kw: seen.update(kw) or real_fit(self, **kw))
    frame = _growing(n=420)
    settings = _settings(allowed_models=["LightGBM", "ExtremeRandomTrees", "RandomForest"], iterations=12)
    said: list[str] = []
    model, report = automl.train(frame.iloc[:300], settings, say=said.append)

    assert seen["split_type"] == "group"
    dates = pd.to_datetime(frame["day"].iloc[:300], format="%m/%d/%Y")
    weeks = (dates - pd.Timestamp("1970-01-01")).dt.days // 7
    np.testing.assert_array_equal(seen["groups"], weeks.to_numpy())

    assert isinstance(model.estimator, raw_model.VotingEnsemble) and report["model"] == "VotingEnsemble"
    voted = report["voting_ensemble"]
    assert abs(sum(m["weight"] for m in voted["members"]) - 1.0) < 1e-3
    assert {m["model"] for m in voted["members"]} <= {"lgbm", "extra_tree", "rf"}
    best = min(voted["candidates_validation_nrmse"].values())
    assert all(
        v <= 1.1 * best for v in (voted["candidates_validation_nrmse"][str(m)] for m in model_members(voted))
    )
    assert any(s.startswith("VotingEnsemble of ") for s in said)

    future = frame.iloc[300:]
    level_held = np.sqrt(np.mean((future["y"] - frame["y"].iloc[270:300].mean()) ** 2))
    assert _rmse(model, future) < 0.6 * level_held
    raw = frame.drop(columns=["y"]).iloc[290:]
    expected = model.predict(raw)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(raw), expected)
    folder = tmp_path / "mlflow-model"
    folder.mkdir()
    automl.save_mlflow_model(model, frame.drop(columns=["y"]).head(5), folder)
    np.testing.assert_allclose(mlflow.pyfunc.load_model(str(folder)).predict(raw), expected)
    assert raw_model.limit_threads(model.estimator, 1) >= 1  # the members' thread counts are found


def test_an_xgboost_member_is_called_through_its_booster_once_that_gives_the_same_answer() -> None:
    from flaml.automl.model import XGBoostSklearnEstimator

    rng = np.random.default_rng(3)
    features = pd.DataFrame({"a": rng.normal(size=300), "b": rng.integers(0, 7, size=300).astype(float)})
    target = 3 * features["a"] + features["b"] + rng.normal(scale=0.1, size=300)
    member = XGBoostSklearnEstimator(task="regression", n_estimators=30, max_leaves=8, n_jobs=1)
    member.fit(features, target)
    ensemble = raw_model.VotingEnsemble([("xgboost", member)], [1.0], [0.0])
    expected = np.asarray(member.predict(features.iloc[:50]), dtype=float)
    np.testing.assert_array_equal(ensemble.predict(features.iloc[:50]), expected)  # compared on this call
    assert callable(ensemble._direct[id(member)])
    for rows in (slice(0, 1), slice(100, 102), slice(0, 300)):
        np.testing.assert_array_equal(
            ensemble.predict(features.iloc[rows]),
            np.asarray(member.predict(features.iloc[rows]), dtype=float),
        )
    assert "_direct" not in pickle.loads(pickle.dumps(ensemble)).__dict__

    class Other:
        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            return np.full(len(frame), 2.0)

    other = raw_model.VotingEnsemble([("other", Other())], [1.0], [0.0])
    assert (other.predict(features.iloc[:3]) == 2.0).all() and other._direct == {
        next(iter(other._direct)): False
    }
