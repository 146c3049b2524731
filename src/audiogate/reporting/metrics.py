"""Classification metrics: pure functions of label arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int) -> float:
    """Macro-averaged F1 over all ``n_classes`` labels (absent classes count as 0)."""
    if len(y_true) == 0:
        return float("nan")
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro",
                          zero_division=0))


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, *,
                          classes: Sequence[str]) -> dict[str, Any]:
    """Macro-F1, accuracy, per-class precision/recall/F1/support and the confusion matrix.

    ``confusion[i][j]`` counts clips of true class ``i`` predicted as ``j``.
    """
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "macro_f1": macro_f1(y_true, y_pred, n_classes=len(classes)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
