"""The local AutoML's VotingEnsemble for a regression learned relative to a line over time (trend.py).

Azure AutoML ends a run with a VotingEnsemble: a weighted mean of the run's best models, the weights
chosen by ensemble selection (Caruana et al., 2004) on the run's validation scores. Here:

- The candidates are, for each learner FLAML tuned, its best configuration, once for each way the line
  may continue after the training end (``trend.DAMPINGS``).
- They are scored on the time-ordered validation the trend was chosen on (each candidate trained on the
  rows before an origin, scored on the rows just after it), because the model will predict after its
  training period; a score from shuffled folds rewards filling in a day between its neighbours.
- The members are the candidates within :data:`TOLERANCE` of the best one's score, weighted equally.
  A few time-ordered folds tell such candidates apart no better than chance, and weights fitted to them
  follow their noise: Caruana's greedy weighting with Azure's settings put most of the weight on one or
  two learners, and predicted worse after the training period than the plain mean (BENCHMARKS.md).

The members are then trained on all the rows. Candidates are tried best first (by FLAML's loss) until
the deadline; with fewer than two usable learners there is no ensemble.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.local.runtime import trend

SIZE = 10  # the most members
TOLERANCE = 0.10  # ... each within this share of the best candidate's validation RMSE


@dataclass(frozen=True)
class Candidate:
    learner: str  # FLAML's estimator name
    damping: float

    def __str__(self) -> str:
        return f"{self.learner} (slope x{self.damping:g})"


@dataclass(frozen=True)
class Selection:
    """The members (weighted equally), the ensemble's mean validation RMSE, and each candidate's own."""

    members: tuple[Candidate, ...]
    rmse: float
    single: dict[Candidate, float] = field(default_factory=dict)

    def describe(self) -> str:
        members = ", ".join(f"{c} {1 / len(self.members):.2f}" for c in self.members)
        best = min(self.single, key=self.single.get)
        return (
            f"VotingEnsemble of {members} (time-ordered validation RMSE {self.rmse:.4g}; "
            f"best single: {best} {self.single[best]:.4g})"
        )


def select(predictions: dict[Candidate, list[np.ndarray]], truth: list[np.ndarray]) -> Selection:
    """Equal weights for the candidates within :data:`TOLERANCE` of the best one's mean fold RMSE (at
    most :data:`SIZE`, best first)."""

    def loss(members: list[Candidate]) -> float:
        return float(
            np.mean(
                [_rmse(t, np.mean([predictions[c][i] for c in members], axis=0)) for i, t in enumerate(truth)]
            )
        )

    single = {c: loss([c]) for c in predictions}
    ranked = sorted(single, key=single.get)
    members = [c for c in ranked[:SIZE] if single[c] <= (1 + TOLERANCE) * single[ranked[0]]]
    return Selection(tuple(members), loss(members), single)


def candidates(automl: Any) -> list[tuple[str, Callable[[], Any]]]:
    """(learner, factory of its best configuration, untrained), best FLAML loss first."""
    found = []
    for name, config in (automl.best_config_per_estimator or {}).items():
        loss = automl.best_loss_per_estimator.get(name)
        model = automl.best_model_for_estimator(name)
        if config is None or model is None or loss is None or not math.isfinite(loss):
            continue
        config = {k: v for k, v in config.items() if k != "FLAML_sample_size"}
        found.append((loss, name, _factory(type(model), config)))
    return [(name, make) for _, name, make in sorted(found, key=lambda item: item[0])]


def _factory(cls: type, config: dict[str, Any]) -> Callable[[], Any]:
    def make() -> Any:
        return _Fitting(cls(task="regression", n_jobs=-1, **config))

    return make


class _Fitting:
    """A FLAML estimator as trend.ratio_predictions fits it: ``fit(X, y, sample_weight=)`` returns it."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> _Fitting:
        self.estimator.fit(X, y, sample_weight=sample_weight)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.estimator.predict(X))


def build(
    automl: Any,
    timeline: tuple[pd.DataFrame, np.ndarray, np.ndarray],
    fit_all: Callable[[Any], Any],
    deadline: float,
) -> tuple[Any, Selection] | None:
    """A ``raw_model.VotingEnsemble`` (members trained on all rows by ``fit_all``, which returns the
    fitted estimator) and its selection; None when fewer than two learners could be scored before
    ``deadline`` (``time.monotonic()``).

    ``timeline`` is (features, label, days) of the training rows in time order, as the trend saw them.
    """
    import raw_model

    features, target, days = timeline
    folds = trend.folds(days)
    predictions: dict[Candidate, list[np.ndarray]] = {}
    makers: dict[str, Callable[[], Any]] = {}
    for name, make in candidates(automl):
        if time.monotonic() > deadline:
            break
        found = [trend.ratio_predictions(make, features, target, days, fold) for fold in folds]
        if any(f is None for f in found):
            continue
        makers[name] = make
        for d in trend.DAMPINGS:
            predictions[Candidate(name, d)] = [f[d] for f in found]
    if len(makers) < 2:
        return None
    selection = select(predictions, [target[valid] for _, valid in folds])
    # each member trained anew, on the featurized rows as in the folds (FLAML's own best model expects the
    # columns after FLAML's data transformer, which the ensemble does not apply)
    learners = dict.fromkeys(c.learner for c in selection.members)  # in the members' order, each once
    trained = {learner: fit_all(makers[learner]().estimator) for learner in learners}
    ensemble = raw_model.VotingEnsemble(
        estimators_=[(c.learner, trained[c.learner]) for c in selection.members],
        weights=[1.0] * len(selection.members),
        dampings=[c.damping for c in selection.members],
    )
    return ensemble, selection


def _rmse(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((truth - predicted) ** 2)))
