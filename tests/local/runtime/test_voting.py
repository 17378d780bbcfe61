"""The local AutoML's VotingEnsemble for a regression learned relative to a line: Caruana's ensemble
selection with sorted initialisation on time-ordered validation, the members' own dampings of the line,
and cross-validation folds of whole weeks for the search."""

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

A, B, C, D = (voting.Candidate(name, 0.0) for name in ("a", "b", "c", "d"))


def _noisy(truth: np.ndarray, scale: float, seed: int) -> np.ndarray:
    return truth + np.random.default_rng(seed).normal(scale=scale, size=truth.shape)


def test_selection_starts_with_the_models_within_5_percent_and_adds_what_helps() -> None:
    truth = [np.linspace(0, 10, 400), np.linspace(5, 15, 400)]
    predictions = {
        A: [_noisy(t, 1.0, 1 + i) for i, t in enumerate(truth)],
        B: [_noisy(t, 1.02, 11 + i) for i, t in enumerate(truth)],  # as good as A, its errors independent
        C: [_noisy(t, 3.0, 21 + i) for i, t in enumerate(truth)],  # far worse: never starts, never helps
    }
    got = voting.select(predictions, truth)
    assert set(got.picks) <= {A, B} and got.picks[A] >= 1 and got.picks[B] >= 1
    assert got.rmse < 0.8 * min(got.single[A], got.single[B])  # two independent errors average out
    assert got.single[C] > 2.5 * got.single[A]


def test_a_model_outside_the_start_is_added_when_it_cancels_the_others_errors() -> None:
    truth = [np.zeros(300)]
    error = np.random.default_rng(0).normal(size=300)
    predictions = {A: [error], B: [1.2 * -error]}  # B is 20% worse alone, but opposite to A
    got = voting.select(predictions, truth)
    assert got.picks[A] >= 1 and got.picks.get(B, 0) >= 1 and got.rmse < 0.5 * got.single[A]


def test_no_ensemble_beats_the_best_model_alone_then_it_is_that_model() -> None:
    truth = [np.zeros(200)]
    error = np.random.default_rng(1).normal(size=200)
    predictions = {A: [error], B: [1.04 * error], D: [1.03 * error + 0.5]}  # B and D only add their own
    got = voting.select(predictions, truth)
    assert got.picks == {A: 1} and got.rmse == got.single[A]


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
    assert voted["validation_nrmse"] <= min(voted["candidates_validation_nrmse"].values())
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
