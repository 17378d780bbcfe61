"""Evaluation metrics with AutoML's names and normalizations, shared by the AutoML engine and the register step."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

# AutoML primary metrics: lower_is_better, and FLAML's metric to optimise for it
PRIMARY_METRICS: dict[str, tuple[bool, str]] = {
    "normalized_root_mean_squared_error": (True, "rmse"),
    "normalized_mean_absolute_error": (True, "mae"),
    "r2_score": (False, "r2"),
    "spearman_correlation": (False, "rmse"),
    "accuracy": (False, "accuracy"),
    "AUC_weighted": (False, "roc_auc_weighted"),
    "average_precision_score_weighted": (False, "ap"),
    "precision_score_weighted": (False, "accuracy"),
    "norm_macro_recall": (False, "macro_f1"),
}

TASK_METRICS = {
    "regression": (
        "normalized_root_mean_squared_error",
        "normalized_mean_absolute_error",
        "r2_score",
        "spearman_correlation",
    ),
    "forecasting": ("normalized_root_mean_squared_error", "normalized_mean_absolute_error", "r2_score"),
    "classification": (
        "accuracy",
        "AUC_weighted",
        "average_precision_score_weighted",
        "precision_score_weighted",
        "norm_macro_recall",
    ),
}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_range: float) -> dict[str, float]:
    """RMSE, MAE, R², Spearman and their AutoML normalizations (divided by the label's range)."""
    from scipy.stats import spearmanr

    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    rmse = float(np.sqrt(np.mean((y_true - y_pred) ** 2)))
    mae = float(np.mean(np.abs(y_true - y_pred)))
    scale = label_range if label_range > 0 else 1.0
    return {
        "rmse": rmse,
        "mae": mae,
        "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
        "nrmse": rmse / scale,
        "nmae": mae / scale,
        "spearman": float(spearmanr(y_true, y_pred).statistic) if len(y_true) > 1 else float("nan"),
    }


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, classes: list
) -> dict[str, float]:
    """Accuracy, weighted AUC / precision / average precision, balanced recall."""
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision_weighted": float(skm.precision_score(y_true, y_pred, average="weighted", zero_division=0)),
        "recall_macro": float(skm.recall_score(y_true, y_pred, average="macro", zero_division=0)),
        "f1_weighted": float(skm.f1_score(y_true, y_pred, average="weighted", zero_division=0)),
    }
    if proba is not None and len(set(y_true)) > 1:
        try:
            if len(classes) == 2:
                out["auc_weighted"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
                out["average_precision_weighted"] = float(
                    skm.average_precision_score(np.asarray(y_true) == classes[1], proba[:, 1])
                )
            else:
                out["auc_weighted"] = float(
                    skm.roc_auc_score(y_true, proba, multi_class="ovr", average="weighted", labels=classes)
                )
        except ValueError:
            pass
    return out


# the test metric compared between model versions, by primary metric: (metric key, lower is better)
COMPARED_TEST_METRIC = {
    "normalized_root_mean_squared_error": ("test_nrmse", True),
    "normalized_mean_absolute_error": ("test_nmae", True),
    "r2_score": ("test_r2", False),
    "spearman_correlation": ("test_spearman", False),
    "accuracy": ("test_accuracy", False),
    "AUC_weighted": ("test_auc_weighted", False),
    "average_precision_score_weighted": ("test_average_precision_weighted", False),
    "precision_score_weighted": ("test_precision_weighted", False),
    "norm_macro_recall": ("test_recall_macro", False),
}
