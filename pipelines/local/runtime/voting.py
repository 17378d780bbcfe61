"""The local AutoML's VotingEnsemble for a regression learned relative to a line over time (trend.py).

Azure AutoML ends a run with a VotingEnsemble chosen by ensemble selection (Caruana et al., 2004) with
sorted initialisation: the ensemble starts with up to five of the best models whose scores are within 5%
of the best one's, then each of ``ensemble_iterations`` (15) rounds adds, with replacement, the model
that improves the ensemble's score most, and stops when none does; a model's weight is how often it was
picked. The same procedure is used here, with two choices of this engine's own:

- The candidates are, for each learner FLAML tuned, its best configuration, once for each way the line
  may continue after the training end (``trend.DAMPINGS``).
- They are scored on the time-ordered validation the trend was chosen on (each candidate trained on the
  rows before an origin, scored on the rows just after it), because the model will predict after its
  training period; a score from shuffled folds rewards filling in a day between its neighbours.

The chosen members are then trained on all the rows. Candidates are tried best first (by FLAML's loss)
until the deadline; with fewer than two usable candidates there is no ensemble.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.local.runtime import trend

INIT_SIZE = 5  # the most models the ensemble starts with
INIT_TOLERANCE = 0.05  # ... each within this share of the best model's score
ITERATIONS = 15  # AutoML's ensemble_iterations default


@dataclass(frozen=True)
class Candidate:
    learner: str  # FLAML's estimator name
    damping: float

    def __str__(self) -> str:
        return f"{self.learner} (slope x{self.damping:g})"


@dataclass(frozen=True)
class Selection:
    """Ensemble selection's outcome: how often each candidate was picked, the ensemble's mean validation
    RMSE, and each candidate's own."""

    picks: dict[Candidate, int]
    rmse: float
    single: dict[Candidate, float] = field(default_factory=dict)

    def describe(self) -> str:
        total = sum(self.picks.values())
        members = ", ".join(
            f"{c} {n / total:.2f}" for c, n in sorted(self.picks.items(), key=lambda i: -i[1])
        )
        best = min(self.single, key=self.single.get)
        return (
            f"VotingEnsemble of {members} (time-ordered validation RMSE {self.rmse:.4g}; "
            f"best single: {best} {self.single[best]:.4g})"
        )


def select(
    predictions: dict[Candidate, list[np.ndarray]], truth: list[np.ndarray], iterations: int = ITERATIONS
) -> Selection:
    """Caruana's ensemble selection with sorted initialisation on per-fold predictions (mean fold RMSE);
    the best candidate alone when no ensemble scores better."""

    def loss(sums: list[np.ndarray], count: int) -> float:
        return float(np.mean([_rmse(t, s / count) for t, s in zip(truth, sums, strict=True)]))

    single = {c: loss(p, 1) for c, p in predictions.items()}
    ranked = sorted(single, key=single.get)
    start = [c for c in ranked[:INIT_SIZE] if single[c] <= (1 + INIT_TOLERANCE) * single[ranked[0]]]
    picks = Counter(start)
    sums = [np.sum([predictions[c][i] for c in start], axis=0) for i in range(len(truth))]
    current = loss(sums, len(start))
    for _ in range(iterations):
        count = sum(picks.values()) + 1
        tried = {c: loss([s + p for s, p in zip(sums, predictions[c], strict=True)], count) for c in ranked}
        best = min(tried, key=tried.get)
        if tried[best] >= current:
            break
        picks[best] += 1
        sums = [s + p for s, p in zip(sums, predictions[best], strict=True)]
        current = tried[best]
    if current > single[ranked[0]]:  # as on Azure, the ensemble competes with the models it is made of
        return Selection({ranked[0]: 1}, single[ranked[0]], single)
    return Selection(dict(picks), current, single)


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
    folds = trend.folds(len(target))
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
    trained = {learner: fit_all(makers[learner]().estimator) for learner in {c.learner for c in selection.picks}}
    chosen = list(selection.picks.items())
    ensemble = raw_model.VotingEnsemble(
        estimators_=[(c.learner, trained[c.learner]) for c, _ in chosen],
        weights=[float(n) for _, n in chosen],
        dampings=[c.damping for c, _ in chosen],
    )
    return ensemble, selection


def _rmse(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((truth - predicted) ** 2)))
