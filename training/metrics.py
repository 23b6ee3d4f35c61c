"""Classification metrics for the model card and `training.evaluate`: accuracy, per-class
precision/recall/F1, ROC AUC, confusion matrix, Brier score and expected calibration error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

ECE_BINS = 15


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy − confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray, n_classes: int) -> float | None:
    """ROC AUC: for two classes, of p(class 0) (equal to that of class 1); macro one-vs-rest otherwise.

    None when the labels hold a single class (AUC is undefined then).
    """
    present = np.unique(y_true)
    if present.size < 2:
        return None
    if n_classes == 2:
        return float(roc_auc_score(y_true == 0, probabilities[:, 0]))
    if present.size < n_classes:
        return float(
            roc_auc_score(
                y_true,
                probabilities[:, present] / probabilities[:, present].sum(1, keepdims=True),
                multi_class="ovr",
                labels=present,
            )
        )
    return float(roc_auc_score(y_true, probabilities, multi_class="ovr"))


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> dict:
    """All card metrics for one classifier on one set of images."""
    n = len(classes)
    labels = np.arange(n)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    onehot = np.eye(n)[y_true]
    return {
        "n": len(y_true),
        "accuracy": float((y_true == y_pred).mean()),
        "roc_auc": roc_auc(y_true, probabilities, n),
        "brier": float(((probabilities - onehot) ** 2).sum(axis=1).mean()),
        "ece": expected_calibration_error(y_true, probabilities),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def roc_points(y_true: np.ndarray, scores: np.ndarray, positive: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds) for one class against the rest."""
    return roc_curve(y_true == positive, scores)


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, positive: int, min_sensitivity: float) -> float:
    """The operating threshold on p(positive) chosen on validation data.

    Rule: among thresholds whose sensitivity is at least `min_sensitivity`, take the one with the
    highest specificity; ties go to the threshold nearest 0.5 (the least extreme).
    """
    fpr, tpr, thresholds = roc_points(y_true, scores, positive)
    thresholds = np.clip(thresholds, 0.0, 1.0)
    ok = tpr >= min_sensitivity
    best_specificity = (1 - fpr[ok]).max()
    candidates = thresholds[ok][(1 - fpr[ok]) >= best_specificity - 1e-12]
    return float(candidates[np.argmin(np.abs(candidates - 0.5))])
