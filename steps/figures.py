"""Pictures of a model's test results, for people who would rather look than read.

Regression: predicted vs actual (over time when the data has a time column), residuals. Classification:
confusion matrix, ROC curves. Any model: feature importance, by permutation on the raw columns (how much
the test error grows when one column's values are shuffled), so it means the same for every estimator.
Each function returns matplotlib figures by file name, all of ``SIZE`` pixels, for ``mlflow.log_figure``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SIZE = (1000, 600)  # pixels of every figure
DPI = 100


def _figure(ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """A figure of ``SIZE`` pixels drawn off-screen, and its axes (``ncols`` of them side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(SIZE[0] / DPI, SIZE[1] / DPI), dpi=DPI, **kwargs)


def predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray, times: pd.Series | None, label: str) -> Any:
    """Both series over time (or over test row order), or a scatter with the y = x line without time."""
    fig, ax = _figure()
    if times is not None:
        when = pd.to_datetime(times, format="mixed", errors="coerce")
        order = np.argsort(when.to_numpy(), kind="stable")
        x = when.to_numpy()[order]
        ax.plot(x, np.asarray(y_true)[order], label="actual", color="#1f77b4", linewidth=1.6)
        ax.plot(x, np.asarray(y_pred)[order], label="predicted", color="#ff7f0e", linewidth=1.6)
        ax.set_xlabel(str(times.name))
        ax.set_ylabel(label)
        ax.legend()
        fig.autofmt_xdate()
    else:
        ax.scatter(y_true, y_pred, s=12, alpha=0.6)
        low = float(min(np.min(y_true), np.min(y_pred)))
        high = float(max(np.max(y_true), np.max(y_pred)))
        ax.plot([low, high], [low, high], color="grey", linestyle="--", label="predicted = actual")
        ax.set_xlabel(f"actual {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.legend()
    ax.set_title(f"Predicted vs actual {label} on the test data ({len(y_true)} rows)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def residuals(y_true: np.ndarray, y_pred: np.ndarray, label: str) -> Any:
    """Residual (actual - predicted) against the prediction, with the residuals' histogram beside it."""
    fig, (ax, side) = _figure(2, sharey=True, width_ratios=(4, 1))
    resid = np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float)
    ax.scatter(y_pred, resid, s=12, alpha=0.6)
    ax.axhline(0, color="grey", linestyle="--")
    ax.set_xlabel(f"predicted {label}")
    ax.set_ylabel("actual - predicted")
    ax.set_title(f"Residuals on the test data (mean {resid.mean():.4g}, sd {resid.std():.4g})")
    ax.grid(alpha=0.3)
    side.hist(resid, bins=20, orientation="horizontal", color="#1f77b4", alpha=0.7)
    side.axhline(0, color="grey", linestyle="--")
    side.set_xlabel("rows")
    side.set_title("distribution")
    fig.tight_layout()
    return fig


def permutation_importance(
    predict: Any, features: pd.DataFrame, y_true: np.ndarray, task: str, repeats: int = 3, seed: int = 0
) -> pd.Series:
    """Mean growth of the test error (RMSE; 1 - accuracy for classification) when a column is shuffled.

    All shuffled copies go to ``predict`` as one frame (one call instead of columns × repeats + 1: a
    stacked ensemble's fixed cost per call is most of a small test set's prediction time)."""
    rng = np.random.default_rng(seed)
    copies = [features]
    for col in features.columns:
        for _ in range(repeats):
            shuffled = features.copy()
            shuffled[col] = rng.permutation(shuffled[col].to_numpy())
            copies.append(shuffled)
    pred = np.asarray(predict(pd.concat(copies, ignore_index=True))).reshape(len(copies), len(features))
    truth = np.asarray(y_true)
    if task == "classification":
        errors = np.mean(pred != truth, axis=1)
    else:
        errors = np.sqrt(np.mean((truth.astype(float) - pred.astype(float)) ** 2, axis=1))
    grown = (errors[1:] - errors[0]).reshape(len(features.columns), repeats)
    out = {col: float(np.mean(g)) for col, g in zip(features.columns, grown, strict=True)}
    return pd.Series(out).sort_values(ascending=False)


def feature_importance(importance: pd.Series, task: str) -> Any:
    fig, ax = _figure()
    shown = importance.head(20)[::-1]
    ax.barh([str(i) for i in shown.index], shown.to_numpy(), color="#2ca02c")
    what = "error rate" if task == "classification" else "RMSE"
    ax.set_xlabel(f"growth of the test {what} when the column is shuffled")
    ax.set_title("Feature importance (permutation, on the raw columns)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: list) -> Any:
    from sklearn.metrics import confusion_matrix as counts

    fig, ax = _figure()
    matrix = counts(y_true, y_pred, labels=classes)
    ax.imshow(matrix, cmap="Blues")
    names = [str(c) for c in classes]
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0)
    ax.set_yticks(range(len(names)), names)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            color = "white" if matrix[i, j] > threshold else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix on the test data ({len(y_true)} rows)")
    fig.tight_layout()
    return fig


def roc_curves(y_true: np.ndarray, proba: np.ndarray, classes: list) -> Any:
    """One ROC curve per class (one against the rest); the positive class only for two classes."""
    from sklearn.metrics import auc, roc_curve

    fig, ax = _figure()
    shown = [1] if len(classes) == 2 else range(len(classes))
    for k in shown:
        positive = np.asarray(y_true) == classes[k]
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, k])
        ax.plot(fpr, tpr, label=f"{classes[k]} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC on the test data")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def test_figures(
    model: Any, test: pd.DataFrame, label: str, task: str, time_column: str | None
) -> dict[str, Any]:
    """Every figure for this task, by file name."""
    features = test.drop(columns=[label])
    y_true = test[label].to_numpy()
    y_pred = np.asarray(model.predict(features))
    out: dict[str, Any] = {}
    if task == "classification":
        classes = list(getattr(model, "classes", None) or sorted(pd.unique(y_true)))
        out["confusion_matrix.png"] = confusion_matrix(y_true, y_pred, classes)
        if hasattr(model, "predict_proba"):
            out["roc.png"] = roc_curves(y_true, np.asarray(model.predict_proba(features)), classes)
    else:
        times = test[time_column] if time_column and time_column in test.columns else None
        out["predicted_vs_actual.png"] = predicted_vs_actual(y_true, y_pred, times, label)
        out["residuals.png"] = residuals(y_true, y_pred, label)
    importance = permutation_importance(model.predict, features, y_true, task)
    out["feature_importance.png"] = feature_importance(importance, task)
    return out
